"""Published seed checkpoints -> spoofdet heads: read the file safely, map its keys, check them.

:func:`read_seed_checkpoint` reads a state dict (``torch.load(weights_only=True)``), a
``.safetensors`` file, or a whole pickled module through :mod:`spoofdet.models.safe_unpickle`:
never by running code from the file. :func:`convert_seed_state_dict` maps its keys onto a spoofdet
head by the seed's :class:`SeedSpec` in :data:`SEEDS` (one table per seed, in
:mod:`spoofdet.models.seeds_finetuned` and :mod:`spoofdet.models.seeds_head_only`), converts a
fine-tuned fairseq front-end, puts the bona fide logit at index 1, and refuses a file that does
not fill the head exactly, listing both sides. :func:`build_seed_head` builds the head it loads
into. How the tables were read and what is verified: docs/design/seed_checkpoints.md.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from spoofdet.errors import SpoofdetError
from spoofdet.models.checkpoints import _listing, convert_fairseq_wav2vec2
from spoofdet.models.seed_spec import SEED_FRONTEND_KINDS, SeedSpec
from spoofdet.models.seeds_finetuned import FINETUNED_SEEDS
from spoofdet.models.seeds_head_only import HEAD_ONLY_SEEDS

__all__ = [
    "FAIRSEQ_PREFIX",
    "SEEDS",
    "SEED_FRONTEND_KINDS",
    "SeedCheckpointError",
    "SeedSpec",
    "build_seed_head",
    "convert_seed_state_dict",
    "read_seed_checkpoint",
    "seed_n_logits",
]

#: Where a fine-tuned SSL seed saves its fairseq XLS-R front-end.
FAIRSEQ_PREFIX = "ssl_model.model."

#: Every seed system by name, one table each (the fine-tuned SSL seeds first, as before).
SEEDS: dict[str, SeedSpec] = {**FINETUNED_SEEDS, **HEAD_ONLY_SEEDS}


class SeedCheckpointError(SpoofdetError):
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


def _strip_module(sd: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Without a DataParallel ``module.`` prefix on every key, if there is one."""
    if sd and all(k.startswith("module.") for k in sd):
        sd = OrderedDict((k[len("module.") :], v) for k, v in sd.items())
    return sd


def _split_frontend(
    sd: OrderedDict[str, Tensor], spec: SeedSpec, seed: str
) -> tuple[OrderedDict[str, Tensor], OrderedDict[str, Tensor] | None]:
    """``(back-end keys, converted front-end or None)``: fairseq seeds' ``ssl_model.model.*``
    (the spec's ``fairseq_prefix``)."""
    if spec.frontend != "fairseq":
        return sd, None
    prefix = spec.fairseq_prefix  # FAIRSEQ_PREFIX but for AMSDF
    fe = OrderedDict((k, v) for k, v in sd.items() if k.startswith(prefix))
    if not fe:
        raise SeedCheckpointError(
            f"seed {seed}: the file holds no '{prefix}*' tensors, "
            f"so not the fine-tuned XLS-R that every {spec.title} "
            "checkpoint saves; is this the right file and seed?"
        )
    try:
        frontend = convert_fairseq_wav2vec2(fe, prefix=prefix)
    except ValueError as exc:
        raise SeedCheckpointError(f"seed {seed}: front-end: {exc}") from None
    sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(prefix))
    return sd, frontend


def _rename_head(
    sd: Mapping[str, Tensor], spec: SeedSpec, seed: str
) -> tuple[OrderedDict[str, Tensor], dict[str, str], list[str]]:
    """``(head, source, unmapped)``: the keys renamed by the seed's rules (first match wins), the
    seed key each came from, and the keys no rule matches."""
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
    return head, source, unmapped


def _check_head(
    head: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    source: Mapping[str, str],
    unmapped: list[str],
    spec: SeedSpec,
    seed: str,
) -> None:
    """Raise unless ``head`` fills ``expected`` exactly, listing both sides and the shapes."""
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
            + "\n  (is it a checkpoint of this seed? see `spoofdet import --help` for the seed "
            "names)"
        )


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
    sd, frontend = _split_frontend(_strip_module(OrderedDict(state_dict)), spec, seed)
    head, source, unmapped = _rename_head(sd, spec, seed)
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
    _check_head(head, expected, source, unmapped, spec, seed)
    return OrderedDict((k, head[k]) for k in expected), frontend
