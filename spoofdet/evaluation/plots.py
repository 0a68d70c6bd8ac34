"""Figures for evaluation reports: a DET curve and a score histogram with the decision threshold.

matplotlib is imported lazily with the non-interactive Agg backend (no display needed, safe in
Ray workers and CI). Both functions write a PNG and return its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spoofdet.evaluation.metrics import compute_det_curve, compute_eer

#: DET axis ticks (percent), as in the NIST/ASVspoof DET plots.
_TICKS = (0.1, 0.5, 2, 5, 10, 20, 40, 60, 80, 95, 99.5)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG (creating the folder) and free it."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_det(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """DET curve (miss rate of bona fide vs false-alarm rate of spoof, normal-deviate axes) with
    the EER point."""
    from scipy.stats import norm

    plt = _pyplot()
    frr, far, _ = compute_det_curve(bonafide, spoof)
    eer, _ = compute_eer(bonafide, spoof)
    lo, hi = 5e-4, 1 - 5e-4
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(norm.ppf(np.clip(far, lo, hi)), norm.ppf(np.clip(frr, lo, hi)), lw=1.5, label="DET")
    ax.plot(
        norm.ppf(np.clip(eer, lo, hi)),
        norm.ppf(np.clip(eer, lo, hi)),
        "o",
        color="C3",
        label=f"EER {100 * eer:.2f} %",
    )
    ax.plot([norm.ppf(lo), norm.ppf(hi)], [norm.ppf(lo), norm.ppf(hi)], ":", color="grey", lw=0.8)
    ticks = [t for t in _TICKS if lo <= t / 100 <= hi]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(norm.ppf(np.asarray(ticks) / 100))
        axis.set_ticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(norm.ppf(lo), norm.ppf(hi))
    ax.set_ylim(norm.ppf(lo), norm.ppf(hi))
    ax.set_xlabel("false alarm rate: spoof accepted (%)")
    ax.set_ylabel("miss rate: bona fide rejected (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, lw=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_histogram(
    scores: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    labels: Sequence[int] | None = None,
    thresholds: dict[str, float] | None = None,
    xlabel: str = "score (higher = more bona fide)",
    title: str = "",
) -> Path:
    """Score histogram, per class when ``labels`` (1 = bona fide, 0 = spoof) are given, with threshold lines.

    Args:
        scores: one score per clip.
        path: the PNG to write.
        labels: per-clip labels; None (or all missing) draws one histogram of every score.
        thresholds: name -> value, each drawn as a vertical line (e.g. the LLR decision threshold).
        xlabel, title: axis label and title.
    """
    plt = _pyplot()
    s = np.asarray(scores, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.histogram_bin_edges(s, bins=min(60, max(10, s.size // 4)))
    y = (
        None
        if labels is None
        else np.asarray([-1 if v is None else v for v in labels], dtype=np.int64)
    )
    if y is not None and ((y == 1).any() or (y == 0).any()):
        ax.hist(
            s[y == 1], bins=bins, alpha=0.6, color="C0", label=f"bona fide ({int((y == 1).sum())})"
        )
        ax.hist(s[y == 0], bins=bins, alpha=0.6, color="C1", label=f"spoof ({int((y == 0).sum())})")
    else:
        ax.hist(s, bins=bins, alpha=0.8, color="C2", label=f"all clips ({s.size})")
    for i, (name, value) in enumerate((thresholds or {}).items()):
        ax.axvline(
            value,
            color=("k", "C3", "C4")[i % 3],
            ls=("-", "--", ":")[i % 3],
            lw=1.2,
            label=f"{name} = {value:.3g}",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clips")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
