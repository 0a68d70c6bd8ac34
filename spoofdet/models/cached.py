"""The identity front-end of cached-feature training (``model.frontend: cached``).

Features were computed once by ``data_prep.features`` (a frozen SSL front-end's layer, e.g.
XLS-R layer 5 as Codecfake); the detector then is ``head(feats)`` and only the head trains. The
registered model is rebuilt by ``ray_jobs/train.py`` with the recorded front-end in front, so it
still takes waveforms (:func:`waveform_detector`). The rebuild needs no download for random-init
names (``tiny``, ...), local model directories and ``xlsr_300m`` (built as its random-init twin,
then filled from ``frontend.pt``); other hub names are built from the HF cache of the machine
that runs the train driver (the feature job's driver already downloaded them there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn


class CachedFeatures(nn.Module):
    """``feats[B, T, out_dim] -> feats`` unchanged (shape checked); no parameters."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        if not isinstance(out_dim, int) or isinstance(out_dim, bool) or out_dim <= 0:
            raise ValueError(
                f"frontend_kwargs.out_dim: a positive int (features.json 'dim'), got {out_dim!r}"
            )
        self.out_dim = out_dim

    def forward(self, feats: Tensor) -> Tensor:
        if feats.dim() != 3 or feats.shape[2] != self.out_dim:
            raise ValueError(
                f"cached front-end takes feats (batch, frames, {self.out_dim}), got {tuple(feats.shape)}; "
                "a waveform batch reached a model built with frontend='cached'"
            )
        return feats.float()


#: Hub front-ends rebuilt offline with the same shape (their weights come from ``frontend.pt``).
RANDOM_SHAPE = {"xlsr_300m": "xlsr_300m_random"}


def waveform_detector(
    feature_dir: str,
    head_state: dict[str, Any],
    *,
    head: str,
    n_logits: int = 2,
    head_kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The full detector of a cached-feature run: the recorded front-end (frozen) + the trained head.

    The front-end is built with the shape recorded in ``features.json`` (hub XLS-R 300M as its
    random-init twin, so nothing is downloaded) and filled with ``frontend.pt``, the weights the
    features came from; the head takes ``head_state`` (the ``head.*`` entries of a
    ``frontend="cached"`` detector's state dict).

    Returns:
        ``(detector, build_model kwargs that rebuild it, its full state dict)``.

    Raises:
        ValueError: when the folder lacks ``frontend.pt`` or the weights do not fit.
    """
    import torch

    from spoofdet.data import features as feature_cache
    from spoofdet.models import build_model
    from spoofdet.models.checkpoints import load_state_dict_strict

    info = feature_cache.read_info(feature_dir)
    weights = Path(feature_dir) / feature_cache.FRONTEND_WEIGHTS
    if not weights.is_file():
        raise ValueError(
            f"{feature_dir}: no {feature_cache.FRONTEND_WEIGHTS}; re-run data_prep.features to record "
            "the front-end weights the features came from"
        )
    kwargs = {
        "frontend": RANDOM_SHAPE.get(info["frontend"], info["frontend"]),
        "head": head,
        "frontend_layer": info["layer"],
        "freeze": "all",
        "gradient_checkpointing": False,
        "n_logits": n_logits,
        "head_kwargs": dict(head_kwargs or {}),
    }
    model = build_model(**kwargs).eval()
    state = {
        f"frontend.{k}": v
        for k, v in torch.load(weights, map_location="cpu", weights_only=True).items()
    }
    state.update({k: v for k, v in head_state.items() if k.startswith("head.")})
    load_state_dict_strict(model, state)
    return model, kwargs, state
