"""State-dict utilities: strict loading, checkpoint averaging, fairseq -> transformers conversion.

Needs torch only (no transformers import).

* :func:`load_state_dict_strict`: strips a DataParallel ``module.`` prefix and refuses to load
  anything that does not fill the module exactly (the seed inference notebooks load with
  ``strict=False``, which silently drops weights such as a 1- vs 2-logit head).
* :func:`average_state_dicts`: the "average the K best epochs" of XLSR-Mamba, Fake-Mamba and
  Nes2Net: a plain mean of every tensor, BatchNorm running statistics included.
* :func:`convert_fairseq_wav2vec2`: renames a fairseq wav2vec 2.0 / XLS-R state dict (the
  ``xlsr2_300m.pt`` the seeds fine-tune, or the front-end part of a seed checkpoint) into a
  ``transformers.Wav2Vec2Model`` state dict, so the seeds' weights run without fairseq.
  :func:`to_fairseq_wav2vec2` is the inverse.

What is verified and what is not (conversion): the fairseq key names below were written from
fairseq's wav2vec2 module tree (``Wav2Vec2Model`` -> ``ConvFeatureExtractionModel`` blocks
``Sequential(conv, dropout, norm, GELU)``, ``TransformerEncoder`` with ``pos_conv =
Sequential(weight-normed conv, SamePad, GELU)``, ``TransformerSentenceEncoderLayer``). The tests
build a tiny fairseq-named state dict from those names independently of this mapping, convert it,
load it strictly into a tiny ``Wav2Vec2Model`` and compare that model's output with a functional
re-implementation of fairseq's pre-LN forward pass written from the same module tree: they agree
to float precision. No real fairseq checkpoint (nor fairseq itself) is available here, so the
mapping has NOT been checked against ``xlsr2_300m.pt`` or a seed checkpoint; do that once (load,
convert, compare features with fairseq's ``extract_features`` on one clip) before trusting
converted seed results.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "load_state_dict_strict",
    "average_state_dicts",
    "convert_fairseq_wav2vec2",
    "to_fairseq_wav2vec2",
    "FAIRSEQ_PRETRAINING_ONLY",
    "SEEDS",
    "SeedSpec",
    "SeedCheckpointError",
    "read_seed_checkpoint",
    "convert_seed_state_dict",
]

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


# ---- published seed checkpoints -> spoofdet -------------------------------------------------
#
# One SeedSpec per seed system. ``rules`` rename the seed's back-end keys (after a DataParallel
# ``module.`` prefix and, for fine-tuned SSL seeds, the ``ssl_model.model.`` front-end are split
# off) into the spoofdet head's keys: regular expressions matched against the whole key, the first
# that matches wins, its replacement may use groups (``\1``). ``fix`` then reshapes tensors where
# the two layouts differ in shape. A key that no rule matches, or a tensor the head expects that
# the file lacks, stops the import with both lists (:func:`convert_seed_state_dict`).

#: Where the front-end of a seed comes from.
#:   ``fairseq``: the file holds the fine-tuned fairseq XLS-R under ``ssl_model.model.``;
#:   ``pretrained``: the file holds only the head, which runs on a public pre-trained SSL model
#:   (``spoofdet import --frontend``); any other value is a parameter-free front-end name of
#:   :func:`spoofdet.models.build_model` (``waveform``, ``codecfake_mel``).
SEED_FRONTEND_KINDS = ("fairseq", "pretrained")
FAIRSEQ_PREFIX = "ssl_model.model."


@dataclass(frozen=True)
class SeedSpec:
    """How a seed's published checkpoint becomes a spoofdet detector.

    Attributes:
        title: The system as its authors name it.
        repository: Where the seed's code and checkpoints are published.
        head: A key of :data:`spoofdet.models.HEADS`.
        in_dim: Feature size the head reads.
        frontend: ``fairseq``, ``pretrained`` or a parameter-free front-end name (see above).
        model: Further :func:`spoofdet.models.build_model` keyword arguments (``head_kwargs``,
            ``frontend_layer``, ``frontend_kwargs``) that make the detector compute what the
            seed computes.
        rules: ``(seed key regex, spoofdet key)`` pairs, first match wins.
        n_logits: 1 or 2; None: read off the file (``out_key``'s first dimension).
        out_key: spoofdet key of the output layer's weight (its bias is ``out_key`` with ``bias``).
        bonafide_index: The seed's output index of the bona fide class (0 for Codecfake): with 0,
            the two output rows are swapped at import so that index 1 is bona fide in spoofdet.
        fix: Optional function applied to the renamed head state dict (reshapes).
        convention: The seed's own label and score convention, in words.
        score_rule: How the imported detector scores (``spoofdet.models.SCORE_RULES``): the
            seed's own score where it is a bona fide logit (``bonafide_logit``), else
            ``logodds``, which ranks clips as a softmax probability of bona fide does.
        published: Published results of the seed's checkpoints (seeds.md section 7), by file.
        num_samples: The seed's evaluation input length in samples.
    """

    title: str
    repository: str
    head: str
    in_dim: int
    frontend: str
    rules: tuple[tuple[str, str], ...]
    out_key: str
    model: Mapping[str, Any] = field(default_factory=dict)
    n_logits: int | None = 2
    bonafide_index: int = 1
    fix: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None
    convention: str = "1 = bona fide; score = logit[:, 1]"
    score_rule: str = "bonafide_logit"
    published: Mapping[str, str] = field(default_factory=dict)
    num_samples: int = 64_600


# Filled per seed below (each block names the seed file it was read off).
SEEDS: dict[str, SeedSpec] = {}


class SeedCheckpointError(ValueError):
    """A seed checkpoint cannot be read or does not match its seed's layout; the message says why."""


def _state_dict_of(obj: Any, where: str) -> OrderedDict[str, Tensor]:
    """The tensors of a loaded checkpoint: a state dict, or one under a usual container key."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return OrderedDict((str(k), v) for k, v in obj.items())
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, Tensor) for v in inner.values())
            ):
                return OrderedDict((str(k), v) for k, v in inner.items())
    raise SeedCheckpointError(
        f"{where}: holds a {type(obj).__name__}, not a state dict (a mapping "
        "of names to tensors), "
        "nor a 'state_dict'/'model' entry holding one"
    )


def read_seed_checkpoint(path: str | Any) -> OrderedDict[str, Tensor]:
    """The tensors of a published checkpoint file, read without running any code from it.

    A ``torch.save(model.state_dict())`` file (or a dict holding one under ``state_dict`` /
    ``model``) is read with ``torch.load(weights_only=True)``, a ``.safetensors`` file (the
    Hugging Face uploads of XLSR-Mamba) with ``safetensors``. A whole pickled module
    (``torch.save(model)``, Codecfake's ``anti-spoofing_feat_model.pt``) is read by a restricted
    unpickler (:mod:`spoofdet.models.safe_unpickle`) that rebuilds only tensors and the module
    tree's parameters and buffers; no class or function named in the file is imported or called.

    Raises:
        SeedCheckpointError: the file is missing, unreadable, or holds no state dict.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise SeedCheckpointError(f"{p}: no such file; pass the published .pth/.pt checkpoint")
    if p.suffix == ".safetensors":  # e.g. XLSR-Mamba's Hugging Face model.safetensors: tensors only
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise SeedCheckpointError(
                f"{p}: reading .safetensors needs the safetensors package (pip install -e '.[ssl]')"
            ) from None

        try:
            return OrderedDict(load_file(str(p), device="cpu"))
        except (SafetensorError, OSError) as exc:
            raise SeedCheckpointError(f"{p}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - weights_only refuses pickled modules: restricted reader
        from spoofdet.models.safe_unpickle import PickleRefused, read_pickled_module

        try:
            return read_pickled_module(p)
        except PickleRefused as exc:
            raise SeedCheckpointError(f"{p}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - name both failures: the file is neither kind
            raise SeedCheckpointError(
                f"{p}: not a readable PyTorch checkpoint (as a state dict: "
                f"{first}; as a pickled module: {type(exc).__name__}: "
                f"{exc})"
            ) from None
    return _state_dict_of(obj, str(p))


def _seed(seed: str) -> SeedSpec:
    if seed not in SEEDS:
        raise SeedCheckpointError(
            f"seed {seed!r} is unknown; known seeds: {', '.join(sorted(SEEDS))}"
        )
    return SEEDS[seed]


def seed_n_logits(head_state: Mapping[str, Tensor], seed: str) -> int:
    """Output size of the converted head: the spec's, else read off the output layer."""
    spec = _seed(seed)
    if spec.n_logits is not None:
        return spec.n_logits
    if spec.out_key not in head_state:
        raise SeedCheckpointError(
            f"seed {seed}: the file has no output layer {spec.out_key!r} to read n_logits from"
        )
    return int(head_state[spec.out_key].shape[0])


def build_seed_head(seed: str, n_logits: int) -> nn.Module:
    """The spoofdet head a converted ``seed`` state dict loads into (random init)."""
    from spoofdet.models import build_head

    spec = _seed(seed)
    kwargs = dict(spec.model.get("head_kwargs", {}))
    return build_head(spec.head, spec.in_dim, n_logits=n_logits, **kwargs)


def convert_seed_state_dict(
    state_dict: Mapping[str, Tensor], *, seed: str
) -> tuple[OrderedDict[str, Tensor], OrderedDict[str, Tensor] | None]:
    """Map a seed checkpoint's keys onto spoofdet's: ``(head_state_dict, frontend_state_dict |
    None)``.

    Steps: strip a DataParallel ``module.`` prefix; for fine-tuned SSL seeds convert the
    ``ssl_model.model.*`` fairseq front-end into ``transformers.Wav2Vec2Model`` keys
    (:func:`convert_fairseq_wav2vec2`); rename the back-end keys by the seed's rules; apply its
    reshapes; put the bona fide logit at index 1 (seeds with ``bonafide_index`` 0); check the
    result against the spoofdet head exactly.

    Args:
        state_dict: The checkpoint (:func:`read_seed_checkpoint`).
        seed: A key of :data:`SEEDS`.

    Returns:
        The head state dict (loads strictly into ``build_seed_head(seed, n_logits)``) and the
        front-end state dict (None unless the seed's file holds its front-end).

    Raises:
        SeedCheckpointError: Listing both the file's keys that map to nothing and the tensors the
            spoofdet head expects that the file lacks (and any shape mismatch).
    """
    spec = _seed(seed)
    sd = OrderedDict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module.") :], v) for k, v in sd.items())
    frontend = None
    if spec.frontend == "fairseq":
        fe = OrderedDict((k, v) for k, v in sd.items() if k.startswith(FAIRSEQ_PREFIX))
        if not fe:
            raise SeedCheckpointError(
                f"seed {seed}: the file holds no '{FAIRSEQ_PREFIX}*' tensors, "
                f"so not the fine-tuned XLS-R that every {spec.title} "
                "checkpoint saves; is this the right file and seed?"
            )
        try:
            frontend = convert_fairseq_wav2vec2(fe, prefix=FAIRSEQ_PREFIX)
        except ValueError as exc:
            raise SeedCheckpointError(f"seed {seed}: front-end: {exc}") from None
        sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(FAIRSEQ_PREFIX))
    rules = [(re.compile(pattern), target) for pattern, target in spec.rules]
    head: OrderedDict[str, Tensor] = OrderedDict()
    source: dict[str, str] = {}
    unmapped = []
    for key, value in sd.items():
        for pattern, target in rules:
            m = pattern.fullmatch(key)
            if m:
                new = m.expand(target)
                if new in head:
                    raise SeedCheckpointError(
                        f"seed {seed}: {source[new]!r} and {key!r} both map to {new!r}"
                    )
                head[new], source[new] = value, key
                break
        else:
            unmapped.append(key)
    if spec.fix is not None:
        head = OrderedDict(spec.fix(head))
    n_logits = seed_n_logits(head, seed)
    if spec.bonafide_index == 0 and n_logits == 2:
        bias = spec.out_key.rsplit(".", 1)[0] + ".bias"
        for k in (spec.out_key, bias):
            if k in head:
                # the seed's (bona fide, spoof) rows -> spoofdet's (spoof, bona fide)
                head[k] = head[k].flip(0).contiguous()
    expected = build_seed_head(seed, n_logits).state_dict()
    missing = [k for k in expected if k not in head]
    extra = unmapped + [f"{source[k]} (as {k})" for k in head if k not in expected]
    shapes = [
        f"{source[k]} {tuple(head[k].shape)} vs spoofdet {k} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in head and tuple(head[k].shape) != tuple(v.shape)
    ]
    if missing or extra or shapes:
        raise SeedCheckpointError(
            f"the file does not match the {spec.title} layout (seed {seed!r}):"
            + _listing("keys in the file that map to nothing", extra)
            + _listing("tensors the model needs that the file lacks", missing)
            + _listing("shape mismatches", shapes)
            + "\n  (is it a checkpoint of this seed? see `spoofdet import --help` for the seed names)"
        )
    return OrderedDict((k, head[k]) for k in expected), frontend


# ---- seed: sls (read off QiShanZhang/SLSforASVspoof-2021-DF model.py) ----
# Model = ssl_model (fairseq XLS-R, under ssl_model.model.*) + first_bn BatchNorm2d(1), fc0
# Linear(1024, 1), fc1 Linear(22847, 1024), fc3 Linear(1024, 2); main.py wraps it in DataParallel,
# so saved keys start with 'module.'. spoofdet.models.sls.SLS uses the same submodule names, so
# the rule keeps every back-end key as it is. Layout: tests/data/seed_layouts/sls.tsv.
SEEDS["sls"] = SeedSpec(
    title="XLS-R + SLS (Zhang et al., ACM MM 2024)",
    repository="https://github.com/QiShanZhang/SLSforASVspoof-2021-DF",
    head="sls",
    in_dim=1024,
    frontend="fairseq",
    model={"frontend_layer": "all"},  # all 24 layer outputs, before the final LayerNorm
    rules=((r"((?:first_bn|fc0|fc1|fc3)\.[A-Za-z_]+)", r"\1"),),
    out_key="fc3.weight",
    n_logits=2,
    convention="1 = bona fide; score = log-prob[:, 1] (SELU then LogSoftmax on the logits)",
    # log p1 - log p0 of the log-probabilities = the bona fide vs spoof log-odds, a monotone
    # function of the seed's log-prob[:, 1] (same ranking and EER)
    score_rule="logodds",
    published={
        "pre-trained model (Google Drive folder linked in the README)": "EER 2021 LA 2.87 % (mean 3.88), 2021 DF 1.92 % (mean 2.09), In-the-Wild 7.46 % "
        "(mean 8.87); best from the README, means from the Nes2Net table; first 4 s"
    },
    num_samples=64_600,
)


# ---- seeds: ssl_aasist, nes2net_x (read off TakHemlata/SSL_Anti-spoofing, Liu-Tianchi/Nes2Net_ASVspoof_ITW) ----
# SSL_Anti-spoofing model.py `Model`: ssl_model (fairseq XLS-R 300M, saved under ssl_model.model.*)
# + the AASIST back-end. LA checkpoints were saved from the bare model, DF ones from
# nn.DataParallel (every key starts with 'module.'; convert_seed_state_dict strips it). Same
# shapes in both layouts; only names differ: LL -> proj, first_bn1 -> encoder_bn, encoder.<i>.0.*
# -> encoder.<i>.* (conv_downsample -> downsample), GAT_layer_S/T -> gat_s/t, HtrgGAT_layer_ST<ij>
# -> hs_gal<ij> (the master-node tensors' trailing 'M' becomes '_master'), pool_S/T/hS<k>/hT<k>
# in lower case, out_layer -> out. Layout: ../shared/reference/seed-checkpoints/aasist.tsv.
_SSL_AASIST_RULES: tuple[tuple[str, str], ...] = (
    (r"pos_S", "pos_s"),
    (r"(master[12])", r"\1"),
    (r"LL\.(weight|bias)", r"proj.\1"),
    (r"first_bn\.(\w+)", r"first_bn.\1"),  # BatchNorm2d(1) after the 3x3 max-pool
    (r"first_bn1\.(\w+)", r"encoder_bn.\1"),  # BatchNorm2d(64) after the residual encoder
    (r"encoder\.(\d)\.0\.conv_downsample\.(weight|bias)", r"encoder.\1.downsample.\2"),
    (r"encoder\.(\d)\.0\.((?:bn1|conv1|bn2|conv2)\.\w+)", r"encoder.\1.\2"),
    (r"attention\.([023]\.\w+)", r"attention.\1"),  # conv, SELU (no tensors), BN, conv
    (r"GAT_layer_S\.(\w+(?:\.\w+)?)", r"gat_s.\1"),
    (r"GAT_layer_T\.(\w+(?:\.\w+)?)", r"gat_t.\1"),
    (r"HtrgGAT_layer_ST(\d\d)\.att_weightM", r"hs_gal\1.att_weight_master"),
    (
        r"HtrgGAT_layer_ST(\d\d)\.(att_proj|proj_with_att|proj_without_att)M\.(weight|bias)",
        r"hs_gal\1.\2_master.\3",
    ),
    (r"HtrgGAT_layer_ST(\d\d)\.(\w+(?:\.\w+)?)", r"hs_gal\1.\2"),
    (r"pool_S\.(proj\.\w+)", r"pool_s.\1"),
    (r"pool_T\.(proj\.\w+)", r"pool_t.\1"),
    (r"pool_hS([12])\.(proj\.\w+)", r"pool_hs\1.\2"),
    (r"pool_hT([12])\.(proj\.\w+)", r"pool_ht\1.\2"),
    (r"out_layer\.(weight|bias)", r"out.\1"),
)

SEEDS["ssl_aasist"] = SeedSpec(
    title="XLS-R + AASIST (SSL-AASIST, Tak et al., Odyssey 2022)",
    repository="https://github.com/TakHemlata/SSL_Anti-spoofing",
    head="aasist",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    rules=_SSL_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    convention="1 = bona fide (CE weights [0.1, 0.9]); score = logit[:, 1]",
    published={
        "best_SSL_model_LA.pth (README, Google Drive folder)": "EER 2021 LA 0.82 %, min t-DCF 0.2066 (mean over runs 1.00 %, Nes2Net table)",
        "best_SSL_model_DF.pth (README, Google Drive folder)": "EER 2021 DF 2.85 % (mean over runs 3.69 %, Nes2Net table)",
        "In-the-Wild (Nes2Net table; the checkpoint is not named)": "EER 10.46 %",
    },
    num_samples=64_600,
)

# Nes2Net_ASVspoof_ITW model_scripts/wav2vec2_Nes2Net_X.py `wav2vec2_Nes2Net_no_Res_w_allT`:
# ssl_model (fairseq XLS-R, ssl_model.model.*) + Nested_Res2Net_TDNN with the README settings
# (Nes_ratio 8 8, SE_ratio 1, dilation 2, pool_func 'mean'; an 'ASTP' checkpoint has 'pooling.*'
# keys and is refused). Names -> spoofdet Nes2NetX: Build_in_Res2Nets.<i> -> blocks.<i> (SE
# 'se.se.1'/'se.se.3' -> 'se.down'/'se.up', weighted_sum.<j> -> mix.<j>), bns.<i> -> block_bns.<i>,
# fc -> out. The released DF checkpoint has 1 logit, main.py trains 2: n_logits is read off 'fc'.
# Layouts: ../shared/reference/seed-checkpoints/nes2net_x.tsv (2), nes2net_x_1logit.tsv (1).
_NES = r"Nested_Res2Net_TDNN\."
_NES2NET_X_RULES: tuple[tuple[str, str], ...] = (
    (_NES + r"Build_in_Res2Nets\.(\d+)\.weighted_sum\.(\d+)", r"blocks.\1.mix.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.se\.se\.1\.(weight|bias)", r"blocks.\1.se.down.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.se\.se\.3\.(weight|bias)", r"blocks.\1.se.up.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.((?:conv1|bn1|conv3|bn3)\.\w+)", r"blocks.\1.\2"),
    (_NES + r"Build_in_Res2Nets\.(\d+)\.((?:convs|bns)\.\d+\.\w+)", r"blocks.\1.\2"),
    (_NES + r"bns\.(\d+\.\w+)", r"block_bns.\1"),
    (_NES + r"bn\.(\w+)", r"bn.\1"),
    (_NES + r"fc\.(weight|bias)", r"out.\1"),
)
_NES2NET_X_MIX = re.compile(r"blocks\.\d+\.mix\.\d+")


def _nes2net_x_mix_vectors(head: dict[str, Tensor]) -> dict[str, Tensor]:
    """The seed keeps each weighted sum as (1, 1, 1, depth), broadcast over the (B, w, T, depth)
    stack; spoofdet keeps a (depth,) vector. Only that exact shape is flattened: any other is left
    as it is, so that the layout check names the key."""
    out: dict[str, Tensor] = OrderedDict()
    for key, value in head.items():
        seed_shaped = value.dim() == 4 and tuple(value.shape[:3]) == (1, 1, 1)
        if _NES2NET_X_MIX.fullmatch(key) and seed_shaped:
            value = value.reshape(value.shape[3])
        out[key] = value
    return out


SEEDS["nes2net_x"] = SeedSpec(
    title="XLS-R + Nes2Net-X (Liu et al., 2025)",
    repository="https://github.com/Liu-Tianchi/Nes2Net_ASVspoof_ITW",
    head="nes2net_x",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    rules=_NES2NET_X_RULES,
    out_key="out.weight",
    n_logits=None,  # 1 in the released DF checkpoint (issue #4), 2 from main.py's default
    fix=_nes2net_x_mix_vectors,
    convention="1 = bona fide (2 logits, CE weights [0.1, 0.9]); score = logit[:, 1]. The released "
    "1-logit checkpoint: its one logit is the score (the repo does not say how it was "
    "trained, so its direction is unverified)",
    published={
        "DF single checkpoint (README Google Drive link, 1 logit)": "EER 2021 DF 1.65 % (mean 1.91 %); 2021 LA 1.73 % (mean 1.95 %) for single models",
        "DF average of 5 checkpoints (README Google Drive link)": "EER 2021 DF 1.49 % (mean 1.78 %)",
        "In-the-Wild checkpoint w/o validation augmentation (README link)": "EER 5.52 % (mean 6.60 %), full-length clips",
        "In-the-Wild checkpoint w/ validation augmentation (README link)": "EER 5.15 % (mean 6.31 %), full-length clips",
    },
    num_samples=64_600,
)


# ---- seeds: xlsr_mamba, fake_mamba (read off swagshaw/XLSR-Mamba, xxuan-acoustics/Fake-Mamba) ----
# XLSR-Mamba model.py `Model`: ssl_model (fairseq XLS-R, ssl_model.model.*) + LL Linear(1024, 144),
# first_bn BatchNorm2d(1), and mamba_blocks.py `MixerModel` under 'conformer.': forward_layers /
# backward_layers (6 mamba-ssm 1.1.4 Blocks each: mixer.*, norm.weight), norm_f, f/b_attention_pool,
# LL Linear(288, 144), classifier. XLSRMamba keeps the block and norm_f names; it computes the
# seed's final norm by default (final_norm="seed", spoofdet.models.mamba docstring).
# Layout: ../shared/reference/seed-checkpoints/xlsr_mamba.tsv.
_XLSR_MAMBA_RULES: tuple[tuple[str, str], ...] = (
    (r"LL\.(weight|bias)", r"proj.\1"),
    (r"first_bn\.(\w+)", r"bn.\1"),
    # blocks keep their names: (forward|backward)_layers.<i>.mixer.* and .norm.weight
    (
        r"conformer\.((?:forward|backward)_layers\.\d+\.(?:mixer\.\w+(?:\.\w+)?|norm\.weight))",
        r"\1",
    ),
    (r"conformer\.norm_f\.weight", "norm_f.weight"),
    (r"conformer\.f_attention_pool\.(weight|bias)", r"forward_pool.\1"),
    (r"conformer\.b_attention_pool\.(weight|bias)", r"backward_pool.\1"),
    (r"conformer\.LL\.(weight|bias)", r"fc.\1"),
    (r"conformer\.classifier\.(weight|bias)", r"classifier.\1"),
)

SEEDS["xlsr_mamba"] = SeedSpec(
    title="XLSR-Mamba (DuaBiMamba, Xiao & Das, IEEE SPL 2025)",
    repository="https://github.com/swagshaw/XLSR-Mamba",
    head="xlsr_mamba",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    model={"head_kwargs": {"final_norm": "seed"}},  # the default, named so the import says so
    rules=_XLSR_MAMBA_RULES,
    out_key="classifier.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={
        "XLSR-Mamba-LA (README, HuggingFace AustinXiao/XLSR-Mamba-LA), average of 5 checkpoints": "EER 2021 LA 0.93 %, min t-DCF 0.208; In-the-Wild 6.71 %",
        "XLSR-Mamba-DF (README, HuggingFace AustinXiao/XLSR-Mamba-DF), trained with RawBoost 3": "EER 2021 DF 1.88 %",
    },
    num_samples=66_800,
)

# Fake-Mamba model.py `Fake_Mamba`: ssl_model (fairseq XLS-R, ssl_model.model.*) + LL
# Linear(1024, 144), first_bn BatchNorm2d(1), encoder = conformer00.py `PN_BiMambas(dim=144,
# depth=7)` (layers.<i>: mamba = mamba-ssm Mamba(144, 16) shared by both directions, norm1,
# norm2, feed_forward Sequential(Linear, GELU, Linear)), attention_pool Linear(144, 1), fc5.
# Names -> spoofdet FakeMamba: LL -> proj, first_bn -> bn, encoder.layers -> blocks (mamba ->
# mixer, feed_forward -> ffn), attention_pool -> pool, fc5 -> classifier.
# Layout: ../shared/reference/seed-checkpoints/fake_mamba.tsv.
_FAKE_MAMBA_RULES: tuple[tuple[str, str], ...] = (
    (r"LL\.(weight|bias)", r"proj.\1"),
    (r"first_bn\.(\w+)", r"bn.\1"),
    (r"encoder\.layers\.(\d+)\.mamba\.(\w+(?:\.\w+)?)", r"blocks.\1.mixer.\2"),
    (r"encoder\.layers\.(\d+)\.(norm[12]\.(?:weight|bias))", r"blocks.\1.\2"),
    (r"encoder\.layers\.(\d+)\.feed_forward\.([02]\.(?:weight|bias))", r"blocks.\1.ffn.\2"),
    (r"attention_pool\.(weight|bias)", r"pool.\1"),
    (r"fc5\.(weight|bias)", r"classifier.\1"),
)

SEEDS["fake_mamba"] = SeedSpec(
    title="Fake-Mamba (PN-BiMamba, Xuan et al., 2025)",
    repository="https://github.com/xxuan-acoustics/Fake-Mamba",
    head="fake_mamba",
    in_dim=1024,
    frontend="fairseq",  # the head reads fairseq's features_only ['x'] = last_hidden_state
    rules=_FAKE_MAMBA_RULES,
    out_key="classifier.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={
        "pre-trained model (README, Google Drive / Baidu links)": "EER 2021 LA 0.97 %, 2021 DF 1.74 %, In-the-Wild 5.85 % (ITW input length not stated)",
    },
    num_samples=66_800,
)


# ---- seeds: aasist, aasist_l (read off clovaai/aasist models/AASIST.py) ----
# models/AASIST.py `Model(d_args)`: conv_time (the sinc CONV; its filters are rebuilt from the
# config, not saved) + first_bn BatchNorm2d(1), encoder = six nn.Sequential(Residual_block), pos_S,
# master1/2, GAT_layer_S/T, HtrgGAT_layer_ST11/12/21/22, pool_S/T/hS1/hT1/hS2/hT2, out_layer;
# config/AASIST.conf and config/AASIST-L.conf set filts, gat_dims, pool_ratios, temperatures.
# main.py saves the bare model's state_dict: 229 tensors, no 'module.' prefix. RawAASIST keeps
# encoder.<i>.0.* (each block is followed by its (1, 3) max-pool in the same Sequential, so only
# conv_downsample -> downsample); the graph part is renamed as for ssl_aasist (GAT_layer_S ->
# gat_s, HtrgGAT_layer_ST<ij> -> hs_gal<ij> with a trailing 'M' -> '_master', pool_hS1 ->
# pool_hs1, out_layer -> out). Layouts: tests/data/seed_layouts/aasist.tsv, aasist_l.tsv.
from spoofdet.models.aasist_raw import AASIST_L as _AASIST_L  # noqa: E402 - one copy of the config

_RAW_AASIST_RULES: tuple[tuple[str, str], ...] = (
    (r"pos_S", "pos_s"),
    (r"(master[12])", r"\1"),
    (r"first_bn\.(\w+)", r"first_bn.\1"),
    (r"encoder\.(\d)\.0\.conv_downsample\.(weight|bias)", r"encoder.\1.0.downsample.\2"),
    (r"encoder\.(\d)\.0\.((?:bn1|conv1|bn2|conv2)\.\w+)", r"encoder.\1.0.\2"),
    (r"GAT_layer_S\.(\w+(?:\.\w+)?)", r"gat_s.\1"),
    (r"GAT_layer_T\.(\w+(?:\.\w+)?)", r"gat_t.\1"),
    (r"HtrgGAT_layer_ST(\d\d)\.att_weightM", r"hs_gal\1.att_weight_master"),
    (
        r"HtrgGAT_layer_ST(\d\d)\.(att_proj|proj_with_att|proj_without_att)M\.(weight|bias)",
        r"hs_gal\1.\2_master.\3",
    ),
    (r"HtrgGAT_layer_ST(\d\d)\.(\w+(?:\.\w+)?)", r"hs_gal\1.\2"),
    (r"pool_S\.(proj\.\w+)", r"pool_s.\1"),
    (r"pool_T\.(proj\.\w+)", r"pool_t.\1"),
    (r"pool_hS([12])\.(proj\.\w+)", r"pool_hs\1.\2"),
    (r"pool_hT([12])\.(proj\.\w+)", r"pool_ht\1.\2"),
    (r"out_layer\.(weight|bias)", r"out.\1"),
)

SEEDS["aasist"] = SeedSpec(
    title="AASIST (raw waveform, Jung et al., ICASSP 2022)",
    repository="https://github.com/clovaai/aasist",
    head="aasist_raw",
    in_dim=1,
    frontend="waveform",  # the head reads the waveform itself (sinc-conv front-end inside)
    rules=_RAW_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={"AASIST.pth (models/weights, README)": "2019 LA eval EER 0.83 %, min t-DCF 0.0275"},
    num_samples=64_600,  # the first 64,600 samples, repeat-padded when shorter, not normalised
)

SEEDS["aasist_l"] = SeedSpec(
    title="AASIST-L (raw waveform, light, Jung et al., ICASSP 2022)",
    repository="https://github.com/clovaai/aasist",
    head="aasist_raw",
    in_dim=1,
    frontend="waveform",
    model={"head_kwargs": dict(_AASIST_L)},  # config/AASIST-L.conf's model_config
    rules=_RAW_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    convention="1 = bona fide; score = logit[:, 1]",
    published={
        "AASIST-L.pth (models/weights, README)": "2019 LA eval EER 0.99 %, min t-DCF 0.0309"
    },
    num_samples=64_600,
)


# ---- seeds: codecfake_* (read off xieyuankun/Codecfake model.py) ----
# Codecfake publishes whole pickled modules (torch.save(model), 'anti-spoofing_feat_model.pt'),
# read by spoofdet.models.safe_unpickle without running them; 0 = real (CE weight [10, 1]), scored
# by softmax[:, 0], so bonafide_index=0 swaps the two output rows at import and the imported
# score, the log-odds, ranks clips as the seed's P(real) does.
# W2VAASIST: the SSL-AASIST back-end with the same key names as SSL_Anti-spoofing's (LL,
# first_bn1, encoder.<i>.0.*, GAT_layer_S/T, HtrgGAT_layer_ST<ij>, pool_*, out_layer) and the
# same computation (graph-pool ratio 0.5 everywhere, temperatures 2, 2, 100), read on frozen
# XLS-R 300M layer-5 features (HF Wav2Vec2FeatureExtractor: zero mean, unit variance per clip).
# The vocoder-trained file was saved from nn.DataParallel ('module.' keys, stripped by the
# converter). Layout: tests/data/seed_layouts/codecfake_w2v2_aasist.tsv.
_CODECFAKE_EER = "EER %, recomputed from the repository's score files (seeds.md section 7): "

SEEDS["codecfake_w2v2_aasist"] = SeedSpec(
    title="Codecfake W2V2-AASIST (Xie et al., 2024)",
    repository="https://github.com/xieyuankun/Codecfake",
    head="aasist",
    in_dim=1024,
    frontend="pretrained",  # facebook/wav2vec2-xls-r-300m, frozen, hidden_states[5]
    model={"frontend_layer": 5, "frontend_kwargs": {"normalize": True}},
    rules=_SSL_AASIST_RULES,
    out_key="out.weight",
    n_logits=2,
    bonafide_index=0,
    convention="0 = real; score = softmax[:, 0] = P(real)",
    score_rule="logodds",
    published={
        "codec_w2v2aasist (pretrained_model/codec_w2v2aasist, codec-trained)": _CODECFAKE_EER
        + "C1 0.008, C2 0.023, C3 0.015, C4 0.015, C5 0.038, C6 0.106, A1 0.23, "
        "A2 0.14, A3 33.8, ITW 9.61",
        "vocoder_w2v2aasist (pretrained_model/vocoder_w2v2aasist, trained on 2019 LA)": _CODECFAKE_EER
        + "C1 40.1, C2 42.9 (57.1 before a sign flip), C3 44.6, C4 33.6, "
        "C5 39.2, C6 44.9, A1 0.23, A2 0.83, A3 45.7, ITW 23.7",
        "cotrain_w2v2aasist_CSAM (pretrained_model/cotrain_w2v2aasist_CSAM)": _CODECFAKE_EER
        + "C1 0.008, C2 0.023, C3 0.008, C4 0.008, C5 0.030, C6 0.030, A1 0.16, "
        "A2 0.00, A3 32.4, ITW 4.69, 19LA eval 0.31",
    },
    num_samples=64_600,  # first 64,600 samples, repeat-padded when shorter
)

# LCNN (model.py `LCNN`, added after the pretrained files' commit): conv1..conv9 as Sequential
# (conv, MaxFeatureMap2D, [MaxPool2d], [BatchNorm2d(affine=False)]), out = Sequential(Dropout,
# Linear(flat, 160), MaxFeatureMap2D, Linear(80, enc_dim)), fc_mu. spoofdet's LCNN keeps every
# name and index, so the rules keep the keys. enc_dim 256 (the published mel files; model.py
# leaves it to the caller). W2V2-LCNN: Linear(24576, 160) on the (1, 1024, 201) layer-5 features,
# as written in model.py; its checkpoints are not published (only score files).
# Layouts: tests/data/seed_layouts/codecfake_w2v2_lcnn.tsv, codecfake_mel_lcnn.tsv.
_CODECFAKE_LCNN_RULES: tuple[tuple[str, str], ...] = (
    (r"(conv[1-9]\.\d\.(?:weight|bias|running_mean|running_var|num_batches_tracked))", r"\1"),
    (r"(out\.[13]\.(?:weight|bias))", r"\1"),  # Linear(flat, 160), Linear(80, enc_dim)
    (r"(fc_mu\.(?:weight|bias))", r"\1"),
)

SEEDS["codecfake_w2v2_lcnn"] = SeedSpec(
    title="Codecfake W2V2-LCNN (Xie et al., 2024)",
    repository="https://github.com/xieyuankun/Codecfake",
    head="lcnn",
    in_dim=1024,
    frontend="pretrained",  # as codecfake_w2v2_aasist
    model={
        "frontend_layer": 5,
        "frontend_kwargs": {"normalize": True},
        # the seed's (1, 1024, 201) image: features along the height, time along the width
        "head_kwargs": {"frames": 201, "enc_dim": 256, "time_axis": "width"},
    },
    rules=_CODECFAKE_LCNN_RULES,
    out_key="fc_mu.weight",
    n_logits=2,
    bonafide_index=0,
    convention="0 = real; score = softmax[:, 0] = P(real)",
    score_rule="logodds",
    published={
        "codec_w2v2lcnn (score files only, pretrained_model/codec_w2v2lcnn/result; no checkpoint)": _CODECFAKE_EER
        + "C1 0.03, C2 0.15, C3 0.14, C4 0.11, C5 0.64, C6 2.19, A1 0.45, "
        "A2 1.08, A3 37.1, ITW 4.98, 19LA eval 4.43",
    },
    num_samples=64_600,
)

# mel-LCNN: the published files hold Linear(4960, 160) = 32 x 31 x 5 for a (505 frames x 80
# bands) image (Codecfake stores the mel (1, 80, 505) and its training loop transposes the last
# two axes); the mel itself (torchaudio MelSpectrogram, 80 HTK bands, n_fft 512, hop 128, power,
# no log) is computed outside the module: spoofdet's parameter-free front-end 'codecfake_mel'.
SEEDS["codecfake_mel_lcnn"] = SeedSpec(
    title="Codecfake mel-LCNN (Xie et al., 2024)",
    repository="https://github.com/xieyuankun/Codecfake",
    head="lcnn",
    in_dim=80,
    frontend="codecfake_mel",
    # the seed's (1, 505, 80) image: time along the height, mel bands along the width
    model={"head_kwargs": {"frames": 505, "enc_dim": 256, "time_axis": "height"}},
    rules=_CODECFAKE_LCNN_RULES,
    out_key="fc_mu.weight",
    n_logits=2,
    bonafide_index=0,
    convention="0 = real; score = softmax[:, 0] = P(real)",
    score_rule="logodds",
    published={
        "codec_mellcnn (pretrained_model/codec_mellcnn, codec-trained)": "score files in the repository (result/*_result.txt); EERs not recomputed in seeds.md",
        "vocoder_mellcnn (pretrained_model/vocoder_mellcnn, trained on 2019 LA)": "score files in the repository (result/*_result.txt); EERs not recomputed in seeds.md",
    },
    num_samples=64_600,
)
