"""Detectors: an SSL front-end and a back-end head, ``wave[B, N] -> logits[B, n_logits]``.

Build one with :func:`build_model`; its keyword arguments are a recipe's ``model:`` section as it
stands, so a config is flattened into the call and never enters a model class::

    model:                       # ray_jobs/configs/<recipe>.yaml
      head: aasist               # a key of HEADS
      frontend: xlsr_300m        # see spoofdet.models.frontend (names, hub ids, local dirs)
      frontend_layer: null       # null | int | weighted
      freeze: none               # none | all | feature_encoder
      gradient_checkpointing: false
      n_logits: 2
      head_kwargs: {}

    detector = build_model(**cfg.model)

Conventions: with 2 logits, index 1 is bona fide; with 1 logit it is a bona fide score. The
detector's score (:func:`score_from_logits`) is higher = more bona fide (``spoofdet.data.schema``).

Heads (each ``feats[B, T, D] -> logits[B, n_logits]``, any T):

=============  ============================================  ====================================
name           module                                        size on 1024-d features
=============  ============================================  ====================================
``aasist``     :mod:`spoofdet.models.aasist`                 447,242 (2 logits)
``xlsr_mamba`` :mod:`spoofdet.models.mamba` ``XLSRMamba``    see that module (~1.94M in the seed)
``fake_mamba`` :mod:`spoofdet.models.mamba` ``FakeMamba``    see that module (~2.34M in the seed)
``nes2net_x``  :mod:`spoofdet.models.nes2net`                511,014 (1 logit), 512,039 (2)
``sls``        :mod:`spoofdet.models.sls` (reads all layers)  23,399,429
``aasist_raw`` :mod:`spoofdet.models.aasist_raw` (waveform)   297,866 (AASIST), 85,306 (AASIST-L)
``lcnn``       :mod:`spoofdet.models.lcnn`                    see that module (Codecfake)
``amsdf``      :mod:`spoofdet.models.amsdf` (+ the waveform)  8,011,164 (7,335,751 in its ACRNN)
=============  ============================================  ====================================

Importing this package needs torch only; ``transformers`` is imported when a front-end is built.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

__all__ = [
    "Detector",
    "HEADS",
    "PARAMETER_FREE_FRONTENDS",
    "SCORE_RULES",
    "build_head",
    "build_model",
    "score_from_logits",
]


#: How a detector turns logits into a score (``build_model(score=...)``): ``logodds`` (spoofdet's
#: default) or ``bonafide_logit`` (``logits[:, 1]`` alone: what the SSL seeds and clovaai's AASIST
#: write to their score files, so imported checkpoints rank clips exactly as published) or
#: ``neg_spoof_logit`` (``-logits[:, 0]``: AMSDF writes its fake logit, negated here).
SCORE_RULES: tuple[str, ...] = ("logodds", "bonafide_logit", "neg_spoof_logit")


def score_from_logits(logits: Tensor, rule: str = "logodds") -> Tensor:
    """Detector score per utterance, higher = more bona fide.

    Args:
        logits: (B, 2) with the bona fide logit at index 1, or (B, 1).
        rule: ``logodds`` or ``bonafide_logit`` (:data:`SCORE_RULES`); one logit is its own score.

    Returns:
        (B,) ``logits[:, 1] - logits[:, 0]`` (the log-odds of a softmax, bona fide vs spoof) for
        two logits, or ``logits[:, 1]`` with ``rule="bonafide_logit"``, or ``-logits[:, 0]`` with
        ``rule="neg_spoof_logit"``; ``logits[:, 0]`` for one.

    Raises:
        ValueError: For any other shape or rule.
    """
    if rule not in SCORE_RULES:
        raise ValueError(f"score rule must be one of {SCORE_RULES}, got {rule!r}")
    if logits.dim() == 2 and logits.shape[1] == 2:
        if rule == "neg_spoof_logit":
            return -logits[:, 0]
        return logits[:, 1] if rule == "bonafide_logit" else logits[:, 1] - logits[:, 0]
    if logits.dim() == 2 and logits.shape[1] == 1:
        return logits[:, 0]
    raise ValueError(f"logits must be (batch, 1) or (batch, 2), got {tuple(logits.shape)}")


class Detector(nn.Module):
    """``wave[B, N] float32 (16 kHz) -> logits[B, n_logits]`` = ``head(frontend(wave))``.

    Attributes:
        frontend: Maps ``wave[B, N]`` to ``feats[B, T, D]`` and has an ``out_dim`` attribute.
        head: Maps ``feats[B, T, D]`` to ``logits[B, n_logits]``.
    """

    def __init__(self, frontend: nn.Module, head: nn.Module, score_rule: str = "logodds") -> None:
        super().__init__()
        if score_rule not in SCORE_RULES:
            raise ValueError(f"score must be one of {SCORE_RULES}, got {score_rule!r}")
        self.frontend = frontend
        self.head = head
        self.score_rule = score_rule

    def forward(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``lengths`` (B,): real samples per row of a zero-padded batch (duration batches). A
        front-end that can use them (``takes_lengths``: the SSL front-ends, as an attention mask)
        gets them; the others and the heads see the padding as silence. A head that reads the
        clip too (``takes_wave``: AMSDF) gets ``head(feats, wave)``."""
        if lengths is not None and getattr(self.frontend, "takes_lengths", False):
            feats = self.frontend(wave, lengths)
        else:
            feats = self.frontend(wave)
        if getattr(self.head, "takes_wave", False):
            return self.head(feats, wave)
        return self.head(feats)

    def score(self, wave: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B,) scores, higher = more bona fide (no ``no_grad`` here: wrap the call for inference)."""
        return score_from_logits(self(wave, lengths), self.score_rule)


def _aasist() -> type[nn.Module]:
    from spoofdet.models.aasist import AASIST

    return AASIST


def _xlsr_mamba() -> type[nn.Module]:
    from spoofdet.models.mamba import XLSRMamba  # lazy: written separately, may need mamba-ssm

    return XLSRMamba


def _fake_mamba() -> type[nn.Module]:
    from spoofdet.models.mamba import FakeMamba

    return FakeMamba


def _nes2net_x() -> type[nn.Module]:
    from spoofdet.models.nes2net import Nes2NetX

    return Nes2NetX


def _sls() -> type[nn.Module]:
    from spoofdet.models.sls import SLS

    return SLS


def _aasist_raw() -> type[nn.Module]:
    from spoofdet.models.aasist_raw import RawAASIST

    return RawAASIST


def _lcnn() -> type[nn.Module]:
    from spoofdet.models.lcnn import LCNN

    return LCNN


def _amsdf() -> type[nn.Module]:
    from spoofdet.models.amsdf import AMSDF

    return AMSDF


#: Head name -> a function returning the head class (imported when called, never at import time).
HEADS: dict[str, Callable[[], type[nn.Module]]] = {
    "aasist": _aasist,
    "xlsr_mamba": _xlsr_mamba,
    "fake_mamba": _fake_mamba,
    "nes2net_x": _nes2net_x,
    "sls": _sls,
    "aasist_raw": _aasist_raw,
    "lcnn": _lcnn,
    "amsdf": _amsdf,
}


#: Front-ends without weights: name -> class name in spoofdet.models.frontend_spec.
PARAMETER_FREE_FRONTENDS: dict[str, str] = {
    "logspec": "LogSpectrogram",
    "waveform": "Waveform",
    "codecfake_mel": "CodecfakeMel",
}


def _parameter_free_frontend(name: str) -> nn.Module:
    from spoofdet.models import frontend_spec

    return getattr(frontend_spec, PARAMETER_FREE_FRONTENDS[name])()


def build_head(name: str, in_dim: int, n_logits: int = 2, **kwargs: Any) -> nn.Module:
    """Build a back-end head by name.

    Args:
        name: A key of :data:`HEADS`.
        in_dim: Feature size D of the front-end.
        n_logits: 2 (bona fide at index 1) or 1.
        **kwargs: Further constructor arguments of the head class (``head_kwargs`` in a config).

    Raises:
        ValueError: For an unknown head name (listing the valid ones), for keyword arguments
            the head does not take (listing those it does), or for ``n_logits`` not in (1, 2).
    """
    if name not in HEADS:
        raise ValueError(f"head {name!r} is unknown; valid heads: {', '.join(sorted(HEADS))}")
    if n_logits not in (1, 2):
        raise ValueError(f"n_logits must be 1 or 2, got {n_logits!r}")
    cls = HEADS[name]()
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("in_dim", "n_logits")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"head_kwargs {unknown} are not arguments of head {name!r}; it takes: {', '.join(accepted)}"
        )
    return cls(in_dim=in_dim, n_logits=n_logits, **kwargs)


def _build_frontend(
    frontend: str | os.PathLike | nn.Module | Mapping[str, Any],
    frontend_layer: int | str | None,
    freeze: str,
    gradient_checkpointing: bool,
    frontend_kwargs: Mapping[str, Any] | None,
) -> nn.Module:
    """The front-end of :func:`build_model` (its arguments are documented there)."""
    if isinstance(frontend, nn.Module):
        if (
            frontend_layer is not None
            or freeze != "none"
            or gradient_checkpointing
            or frontend_kwargs
        ):
            raise ValueError(
                "frontend is a built module: set frontend_layer, freeze, gradient_checkpointing and "
                "frontend_kwargs when building it, not here"
            )
        if not isinstance(getattr(frontend, "out_dim", None), int):
            raise ValueError("frontend module needs an int attribute out_dim (its feature size)")
        return frontend
    else:
        from spoofdet.models.frontend import load_frontend

        if frontend == "cached":  # features computed once by data_prep.features (cached.py)
            if frontend_layer is not None or freeze != "none" or gradient_checkpointing:
                raise ValueError(
                    "frontend 'cached' reads features computed beforehand: leave frontend_layer, freeze "
                    "and gradient_checkpointing at their defaults (the layer is in features.json)"
                )
            if set(frontend_kwargs or {}) != {"out_dim"}:
                raise ValueError(
                    "frontend 'cached' needs frontend_kwargs={'out_dim': D} (features.json 'dim')"
                )
            from spoofdet.models.cached import CachedFeatures

            return CachedFeatures(frontend_kwargs["out_dim"])
        if isinstance(frontend, str) and frontend in PARAMETER_FREE_FRONTENDS:  # frontend_spec.py
            if (
                frontend_layer is not None
                or freeze != "none"
                or gradient_checkpointing
                or frontend_kwargs
            ):
                raise ValueError(
                    f"frontend {frontend!r} has no layers or weights: leave frontend_layer, freeze, "
                    "gradient_checkpointing and frontend_kwargs at their defaults"
                )
            return _parameter_free_frontend(frontend)
        return load_frontend(
            frontend,
            layer=frontend_layer,
            freeze=freeze,
            gradient_checkpointing=gradient_checkpointing,
            **dict(frontend_kwargs or {}),
        )


def build_model(
    frontend: str | os.PathLike | nn.Module | Mapping[str, Any] = "xlsr_300m",
    head: str = "aasist",
    *,
    frontend_layer: int | str | None = None,
    freeze: str = "none",
    gradient_checkpointing: bool = False,
    n_logits: int = 2,
    head_kwargs: Mapping[str, Any] | None = None,
    frontend_kwargs: Mapping[str, Any] | None = None,
    score: str = "logodds",
) -> Detector:
    """Build a :class:`Detector` from flat keyword arguments (a config's ``model:`` section).

    Args:
        frontend: A front-end name (``"tiny"``, ``"xlsr_300m"``, ``"xlsr_300m_random"``, ...), a
            local ``save_pretrained`` directory (see :func:`spoofdet.models.frontend.load_frontend`),
            an already built module with an ``out_dim`` attribute (then the other front-end
            options must stay at their defaults), ``"cached"``: an identity front-end over
            cached features ``feats[B, T, D]`` (``frontend_kwargs={"out_dim": D}``), a
            parameter-free front-end (:data:`PARAMETER_FREE_FRONTENDS`: ``logspec``,
            ``waveform`` for heads that read raw audio, ``codecfake_mel``), or a transformers
            config dict (random init of that shape; ``spoofdet import`` writes these).
        head: A key of :data:`HEADS`.
        frontend_layer: ``None`` (last hidden state), an int k (output of layer k, e.g. 5 as in
            Codecfake), ``"all"`` (every layer's output, ``[B, L, T, D]``, for SLS) or
            ``"weighted"`` (learnable softmax-weighted sum of all layers).
        freeze: ``"none"`` (full fine-tuning, as the seeds), ``"all"`` or ``"feature_encoder"``.
        gradient_checkpointing: Recompute front-end layer activations in backward.
        n_logits: 2 or 1.
        head_kwargs: Extra arguments of the head class.
        frontend_kwargs: Extra arguments of ``load_frontend`` (``spec_augment``, ``layerdrop``,
            ``config_overrides``, ``normalize``).
        score: How :meth:`Detector.score` reads the logits (:data:`SCORE_RULES`).

    Returns:
        The detector, in train mode.

    Raises:
        ValueError: For an unknown head or front-end, or inconsistent options; the message names
            the offending field.
    """
    if not isinstance(frontend, nn.Module) and head not in HEADS:  # fail before a slow load
        raise ValueError(f"head {head!r} is unknown; valid heads: {', '.join(sorted(HEADS))}")
    fe = _build_frontend(frontend, frontend_layer, freeze, gradient_checkpointing, frontend_kwargs)
    return Detector(
        fe, build_head(head, fe.out_dim, n_logits=n_logits, **dict(head_kwargs or {})), score
    )
