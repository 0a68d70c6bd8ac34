"""State-dict utilities: strict loading, checkpoint averaging, fairseq <-> transformers.

Needs torch only (no transformers import).

* :func:`load_state_dict_strict`: strips a DataParallel ``module.`` prefix and refuses to load
  anything that does not fill the module exactly, listing what differs.
* :func:`average_state_dicts`: the "average the K best epochs" of XLSR-Mamba, Fake-Mamba and
  Nes2Net: a plain mean of every tensor, BatchNorm running statistics included.
* :func:`convert_fairseq_wav2vec2`: renames a fairseq wav2vec 2.0 / XLS-R state dict into a
  ``transformers.Wav2Vec2Model`` one, so the seeds' weights run without fairseq;
  :func:`to_fairseq_wav2vec2` is the inverse. Not yet checked against a real fairseq checkpoint:
  docs/design/seed_checkpoints.md says what is verified and what is not.

Published seed checkpoints (``SEEDS``, ``read_seed_checkpoint``, ...) are
:mod:`spoofdet.models.seeds`.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "load_state_dict_strict",
    "average_state_dicts",
    "convert_fairseq_wav2vec2",
    "to_fairseq_wav2vec2",
    "FAIRSEQ_PRETRAINING_ONLY",
]  # SEEDS, read_seed_checkpoint, ... moved to spoofdet.models.seeds (see __getattr__ below)

log = logging.getLogger(__name__)

_SHOW = 20  # keys listed per category in error messages


def _listing(title: str, keys: Sequence[str]) -> str:
    if not keys:
        return ""
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return f"\n  {title} ({len(keys)}): {', '.join(keys[:_SHOW])}{more}"


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Load ``state_dict`` into ``module``, requiring an exact match of keys and shapes.

    A ``module.`` prefix on every key (DataParallel / DDP checkpoints) is stripped first.

    Args:
        module: The model to fill (modified in place).
        state_dict: Parameters and buffers by name.

    Returns:
        ``module``.

    Raises:
        ValueError: Listing the missing keys, the unexpected keys and the shape mismatches, if any;
            convert or rename the checkpoint rather than loading it partially.
    """
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = OrderedDict((k[len("module.") :], v) for k, v in state_dict.items())
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    # Strict on purpose: the seeds' notebooks load with strict=False, which silently drops weights.
    if missing or unexpected or shapes:
        raise ValueError(
            f"state dict does not match {type(module).__name__}:"
            + _listing("missing keys", missing)
            + _listing("unexpected keys", unexpected)
            + _listing("shape mismatches", shapes)
            + "\n  (loading is strict on purpose; rename or convert the checkpoint)"
        )
    module.load_state_dict(state_dict, strict=True)
    return module


def average_state_dicts(state_dicts: Sequence[Mapping[str, Tensor]]) -> OrderedDict[str, Tensor]:
    """Element-wise mean of K state dicts with identical keys, shapes and dtypes.

    Floating tensors (weights and BatchNorm running mean/var alike) are summed in float64 and
    divided by K, then cast back to their dtype (the correctly rounded mean). Integer tensors
    (BatchNorm ``num_batches_tracked``) are summed and floor-divided by K, so the result stays an
    integer: the mean rounded down. Boolean tensors must be equal in all K and are copied.

    Args:
        state_dicts: K >= 1 state dicts (tensors on any device; the result is on the first's).

    Returns:
        A new state dict in the key order of the first one; the inputs are not modified.

    Raises:
        ValueError: If the list is empty or the dicts differ in keys, shapes or dtypes, naming
            the first offending key; or if a boolean tensor differs.
    """
    if not state_dicts:
        raise ValueError("state_dicts is empty: pass at least one state dict to average")
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], start=1):
        if set(sd) != set(first):
            diff = sorted(set(sd) ^ set(first))
            raise ValueError(
                f"state_dicts[{i}] has different keys than state_dicts[0]: {diff[:_SHOW]}"
            )
        for k, v in first.items():
            if sd[k].shape != v.shape or sd[k].dtype != v.dtype:
                raise ValueError(
                    f"state_dicts[{i}][{k!r}] is {tuple(sd[k].shape)} {sd[k].dtype}, "
                    f"state_dicts[0] has {tuple(v.shape)} {v.dtype}"
                )
    n = len(state_dicts)
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, v in first.items():
        values = [sd[k].to(v.device) for sd in state_dicts]
        if v.dtype == torch.bool:
            if any(not torch.equal(x, v) for x in values):
                raise ValueError(
                    f"boolean tensor {k!r} differs between state dicts; it cannot be averaged"
                )
            out[k] = v.clone()
        elif v.is_floating_point() or v.is_complex():
            acc = torch.stack(values).to(torch.complex128 if v.is_complex() else torch.float64)
            out[k] = (acc.sum(dim=0) / n).to(v.dtype)
        else:
            out[k] = torch.div(torch.stack(values).sum(dim=0), n, rounding_mode="floor").to(v.dtype)
    return out


# ---- fairseq wav2vec 2.0 -> transformers Wav2Vec2Model ----------------------------------------

#: fairseq keys that belong to the pretraining objective, not to the encoder; dropped (and logged).
FAIRSEQ_PRETRAINING_ONLY: tuple[str, ...] = (
    "quantizer.",
    "project_q.",
    "final_proj.",
    "project_inp.",
    "target_glu.",
)

# (fairseq template, transformers template); {i} = layer index, {p} = weight|bias. The first rule
# for a transformers name is the one the inverse uses (layer-norm conv mode, old-style weight norm).
_RULES: tuple[tuple[str, str], ...] = (
    ("mask_emb", "masked_spec_embed"),
    ("feature_extractor.conv_layers.{i}.0.{p}", "feature_extractor.conv_layers.{i}.conv.{p}"),
    (
        "feature_extractor.conv_layers.{i}.2.1.{p}",
        "feature_extractor.conv_layers.{i}.layer_norm.{p}",
    ),  # layer_norm mode
    (
        "feature_extractor.conv_layers.{i}.2.{p}",
        "feature_extractor.conv_layers.{i}.layer_norm.{p}",
    ),  # group-norm (layer 0)
    ("layer_norm.{p}", "feature_projection.layer_norm.{p}"),
    ("post_extract_proj.{p}", "feature_projection.projection.{p}"),
    ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
    (
        "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
        "encoder.pos_conv.0.weight_v",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
    (
        "encoder.pos_conv.0.parametrizations.weight.original0",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
        "encoder.pos_conv.0.parametrizations.weight.original1",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
    ("encoder.layer_norm.{p}", "encoder.layer_norm.{p}"),
    ("encoder.layers.{i}.self_attn.q_proj.{p}", "encoder.layers.{i}.attention.q_proj.{p}"),
    ("encoder.layers.{i}.self_attn.k_proj.{p}", "encoder.layers.{i}.attention.k_proj.{p}"),
    ("encoder.layers.{i}.self_attn.v_proj.{p}", "encoder.layers.{i}.attention.v_proj.{p}"),
    ("encoder.layers.{i}.self_attn.out_proj.{p}", "encoder.layers.{i}.attention.out_proj.{p}"),
    ("encoder.layers.{i}.self_attn_layer_norm.{p}", "encoder.layers.{i}.layer_norm.{p}"),
    ("encoder.layers.{i}.fc1.{p}", "encoder.layers.{i}.feed_forward.intermediate_dense.{p}"),
    ("encoder.layers.{i}.fc2.{p}", "encoder.layers.{i}.feed_forward.output_dense.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", "encoder.layers.{i}.final_layer_norm.{p}"),
)


def _compile(template: str) -> re.Pattern[str]:
    pattern = (
        re.escape(template)
        .replace(r"\{i\}", r"(?P<i>\d+)")
        .replace(r"\{p\}", r"(?P<p>weight|bias)")
    )
    return re.compile(pattern + r"\Z")


_FORWARD = tuple((_compile(src), dst) for src, dst in _RULES)
_BACKWARD = tuple((_compile(dst), src) for src, dst in _RULES)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, target in rules:
        m = pattern.match(key)
        if m:
            return target.format(**m.groupdict())
    return None


def convert_fairseq_wav2vec2(
    state_dict: Mapping[str, Tensor], prefix: str = ""
) -> OrderedDict[str, Tensor]:
    """Rename a fairseq wav2vec 2.0 / XLS-R state dict into ``transformers.Wav2Vec2Model`` names.

    Handles the layer-norm (XLS-R, ``.2.1.``) and group-norm (``.2.``, layer 0) conv encoders
    and both weight-norm spellings of the positional convolution (``weight_g/weight_v`` and
    ``parametrizations.weight.original0/1``). Pretraining-only tensors
    (:data:`FAIRSEQ_PRETRAINING_ONLY`: quantizer, project_q, final_proj, ...) are dropped and
    listed in a log message. Tensors are shared, not copied.

    Args:
        state_dict: fairseq names -> tensors; for a ``torch.load``-ed fairseq checkpoint pass
            ``ckpt["model"]``.
        prefix: Only keys starting with it are converted, with it removed; e.g.
            ``"ssl_model.model."`` for the front-end of a SSL_Anti-spoofing-style checkpoint
            (a leading DataParallel ``module.`` is stripped first). Other keys are ignored.

    Returns:
        transformers names -> tensors; load it with :func:`load_state_dict_strict` into a
        ``Wav2Vec2Model`` built from the matching config (e.g. ``xlsr_300m_config()``).

    Raises:
        ValueError: If a key is neither a known fairseq wav2vec2 key nor pretraining-only (listing
            them), or if no key carries ``prefix``.
    """
    out: OrderedDict[str, Tensor] = OrderedDict()
    dropped, unknown = [], []
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        if key.startswith(FAIRSEQ_PRETRAINING_ONLY):
            dropped.append(key)
            continue
        new = _rename(key, _FORWARD)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(
            "not fairseq wav2vec2 keys (is this a wav2vec2 / XLS-R state dict, and is prefix right?):"
            + _listing("unknown keys", unknown)
        )
    if not out:
        raise ValueError(f"no wav2vec2 keys found under prefix {prefix!r}; check the prefix")
    if dropped:
        log.warning(
            "convert_fairseq_wav2vec2: dropped %d pretraining-only tensors: %s",
            len(dropped),
            ", ".join(dropped),
        )
    return out


def to_fairseq_wav2vec2(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Inverse of :func:`convert_fairseq_wav2vec2` (layer-norm conv encoder, ``weight_g/weight_v``).

    Raises:
        ValueError: Listing the keys that are not ``Wav2Vec2Model`` keys of a pre-LN model.
    """
    out: OrderedDict[str, Tensor] = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        new = _rename(key, _BACKWARD)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError("not transformers Wav2Vec2Model keys:" + _listing("unknown keys", unknown))
    return out


# For this release only: the seed-checkpoint names that moved to spoofdet.models.seeds (issue 13
# named spoofdet.models.checkpoints.SEEDS, read_seed_checkpoint, convert_seed_state_dict) still
# resolve here. Lazily, because seeds imports this module: an eager import would be a cycle.
_MOVED_TO_SEEDS = frozenset(
    {
        "FAIRSEQ_PREFIX",
        "SEEDS",
        "SEED_FRONTEND_KINDS",
        "SeedCheckpointError",
        "SeedSpec",
        "build_seed_head",
        "convert_seed_state_dict",
        "read_seed_checkpoint",
        "seed_n_logits",
    }
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_SEEDS:
        from spoofdet.models import seeds

        return getattr(seeds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
