"""``model.init_from``: the state dict that starts a recipe's detector from a spoofdet model or
a seed system's published checkpoint (converted as ``spoofdet import`` converts it)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from torch import Tensor, nn

from spoofdet.models import HEADS
from spoofdet.models.checkpoints import (
    SEEDS,
    SeedCheckpointError,
    convert_seed_state_dict,
    read_seed_checkpoint,
)
from spoofdet.serve.importer import SeedImportError, fit_frontend

__all__ = ["init_state_dict", "seeds_for_head"]


def init_state_dict(
    init_from: str,
    model: nn.Module,
    *,
    head: str,
    seed: str | None = None,
    tracking_uri: str | None = None,
) -> OrderedDict[str, Tensor]:
    """The state dict that initialises ``model`` (a recipe's detector) from ``init_from``.

    ``init_from`` is a spoofdet model (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``runs:/...``, a ``final/`` or imported folder) or a checkpoint file: a spoofdet state dict,
    or a seed's published checkpoint, converted (``seed`` names it; without it every seed whose
    head is ``head`` is tried and exactly one must fit). A seed file that holds no front-end
    keeps ``model``'s own front-end weights (the recipe's pre-trained one).

    Raises:
        SeedImportError: The source does not fit the model; the message lists what was tried.
    """
    from spoofdet.serve.registry import load_detector

    path = Path(init_from)
    if not path.is_file():
        loaded = load_detector(init_from, tracking_uri=tracking_uri)
        return OrderedDict(loaded.model.state_dict())
    state = read_seed_checkpoint(path)
    tried = []
    own = model.state_dict()
    if set(state) == set(own) or {k.removeprefix("module.") for k in state} == set(own):
        return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())
    candidates = [seed] if seed else [name for name, spec in SEEDS.items() if spec.head == head]
    if not candidates:
        raise SeedImportError(
            f"{path}: not a spoofdet state dict of this model, and no seed system uses head "
            f"{head!r}; seeds: {', '.join(f'{n} ({s.head})' for n, s in sorted(SEEDS.items()))}"
        )
    fits = []
    for name in candidates:
        merged, why_not = _seed_into(name, state, model, own)
        if merged is None:
            tried.append(f"{name}: {why_not}")
        else:
            fits.append((name, merged))
    if len(fits) == 1:
        return fits[0][1]
    if len(fits) > 1:
        raise SeedImportError(
            f"{path} fits several seeds ({', '.join(n for n, _ in fits)}); name one with "
            "model.init_seed"
        )
    raise SeedImportError(
        f"{path}: neither a state dict of this model nor a checkpoint of a seed it fits; tried:\n  "
        + "\n  ".join(tried)
    )


def _seed_into(
    name: str, state: dict[str, Tensor], model: nn.Module, own: dict[str, Tensor]
) -> tuple[OrderedDict[str, Tensor] | None, str]:
    """``model``'s state dict with seed ``name``'s converted tensors in place, or None and why
    they do not fit."""
    try:
        head_sd, fe_sd = convert_seed_state_dict(state, seed=name)
    except SeedCheckpointError as exc:
        return None, str(exc).splitlines()[0]
    merged = OrderedDict(own)
    merged.update((f"head.{k}", v) for k, v in head_sd.items())
    if fe_sd is not None:
        fe_model = model.frontend.model
        fe_sd, _ = fit_frontend(fe_model, fe_sd)
        merged.update((f"frontend.model.{k}", v) for k, v in fe_sd.items())
    if set(merged) == set(own) and all(merged[k].shape == own[k].shape for k in own):
        return merged, ""
    return None, (
        "converted, but the recipe's model has another shape (model.head_kwargs, "
        "n_logits or front-end differ from the seed's)"
    )


def seeds_for_head(head: str) -> list[str]:
    """Seed systems whose checkpoints load into ``head``."""
    if head not in HEADS:
        return []
    return sorted(name for name, spec in SEEDS.items() if spec.head == head)
