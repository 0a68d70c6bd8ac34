"""Figures for evaluation reports: DET curves (pooled, per group, per model) and score histograms.

matplotlib is imported lazily with the non-interactive Agg backend (no display needed, safe in
Ray workers and CI). Each ``plot_*`` function writes a PNG and returns its path; the matching
``*_figure`` function returns the matplotlib figure instead (for tests and notebooks).

* :func:`plot_det`: the DET curve of one model (normal-deviate axes, EER point), titled and
  labelled with the model's name; optionally one curve per group of a breakdown (attack, codec,
  ...) over the pooled curve, and the operating point of a decision threshold.
* :func:`plot_det_models`: one DET curve per model (score file), plus their fusion if given.
* :func:`plot_histogram`: per-class score histograms as thick step outlines over light fills
  (chosen over two stacked panels: one shared axis keeps where the classes overlap, and where
  the threshold cuts them, visible at a glance), log-scaled counts when one class outnumbers the
  other more than :data:`LOG_RATIO` times.
* :func:`evaluation_plots`: what ``spoofdet evaluate --plots DIR`` writes.

Same conventions as :mod:`spoofdet.evaluation.metrics`: label 1 = bona fide, 0 = spoof, higher
score = more bona fide; a trial is accepted as bona fide when ``score >= t``, so at a threshold
``t`` the miss rate is the share of bona fide below ``t`` and the false-alarm rate the share of
spoof at or above it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spoofdet.evaluation.metrics import BONAFIDE, SPOOF, compute_det_curve, compute_eer
from spoofdet.evaluation.report import (  # noqa: F401 - breakdown_column: plots' public name too
    SPOOF_ONLY_DIMS,
    _column,
    breakdown_column,
    group_masks,
)

#: DET axis ticks (percent), as in the NIST/ASVspoof DET plots.
_TICKS = (0.1, 0.5, 2, 5, 10, 20, 40, 60, 80, 95, 99.5)
#: Error rates are clipped to [_LO, 1 - _LO] before the normal-deviate transform (0 and 1 have none).
_LO = 5e-4
#: Group curves: ten distinguishable colours, then the next ten dashed, and so on (20+ groups).
_LINESTYLES = ("-", "--", "-.", ":")
#: Legend entries above which the legend moves outside the axes, right of the plot.
_LEGEND_INSIDE = 6
#: Class-size ratio above which histogram counts are drawn on a log scale.
LOG_RATIO = 10.0


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG (creating the folder; an outside legend included) and free it."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(i: int) -> dict[str, Any]:
    """Colour and line style of the ``i``-th group curve (tab10 colours, a new style every 10)."""
    return {"color": f"C{i % 10}", "ls": _LINESTYLES[(i // 10) % len(_LINESTYLES)], "lw": 1.2}


def _nd(p: Any) -> np.ndarray:
    """Normal deviate of error rates, clipped to the plotted range."""
    from scipy.stats import norm

    return norm.ppf(np.clip(p, _LO, 1 - _LO))


def operating_point(
    bonafide: Sequence[float] | np.ndarray, spoof: Sequence[float] | np.ndarray, threshold: float
) -> tuple[float, float]:
    """``(Pfa, Pmiss)`` of the decision ``score >= threshold`` (accepted as bona fide).

    Pfa is the share of spoof scores at or above ``threshold``, Pmiss the share of bona fide
    scores below it (as :func:`spoofdet.evaluation.metrics.act_dcf` counts them).
    """
    bona = np.asarray(bonafide, dtype=np.float64)
    sp = np.asarray(spoof, dtype=np.float64)
    return float(np.mean(sp >= threshold)), float(np.mean(bona < threshold))


def _det_axes(ax: Any) -> None:
    """Normal-deviate axes in percent with the ASVspoof ticks, a grid and the diagonal."""
    lo, hi = _nd(0.0), _nd(1.0)
    ax.plot([lo, hi], [lo, hi], ":", color="grey", lw=0.8, label="_diagonal")
    ticks = [t for t in _TICKS if _LO <= t / 100 <= 1 - _LO]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(_nd(np.asarray(ticks) / 100))
        axis.set_ticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("false alarm rate: spoof accepted (%)")
    ax.set_ylabel("miss rate: bona fide rejected (%)")
    ax.grid(True, lw=0.3)


def _det_curve(ax: Any, bona: np.ndarray, spoof: np.ndarray, label: str, **style: Any) -> float:
    """Draw one DET curve labelled ``"<label>  EER x.xx %"``; returns its EER (a fraction)."""
    frr, far, _ = compute_det_curve(bona, spoof)
    eer, _ = compute_eer(bona, spoof)
    ax.plot(_nd(far), _nd(frr), label=f"{label}  EER {100 * eer:.2f} %", **style)
    return eer


def _legend(fig: Any, ax: Any) -> None:
    """Inside the axes when short; right of them, small, when there are many entries."""
    n = len(ax.get_legend_handles_labels()[1])
    if n <= _LEGEND_INSIDE:
        ax.legend(loc="upper right", fontsize=7.5)
        return
    fig.set_size_inches(5.0 + 2.4 * (1 + (n > 24)), 5.0)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        fontsize=7,
        ncol=1 + (n > 24),
        borderaxespad=0.0,
        frameon=False,
    )


def det_figure(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    *,
    name: str,
    groups: Mapping[str, tuple[Any, Any]] | None = None,
    group_label: str = "",
    threshold: tuple[str, float] | None = None,
    title: str = "",
) -> Any:
    """The figure of :func:`plot_det` (not saved; close it with ``matplotlib.pyplot.close``)."""
    plt = _pyplot()
    bona = np.asarray(bonafide, dtype=np.float64)
    sp = np.asarray(spoof, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(5, 5))
    _det_axes(ax)
    for i, (g, (gb, gs)) in enumerate((groups or {}).items()):
        gb, gs = np.asarray(gb, dtype=np.float64), np.asarray(gs, dtype=np.float64)
        if gb.size == 0 or gs.size == 0:  # counted in the legend, never dropped silently
            ax.plot([], [], " ", label=f"{g}: not drawn ({gb.size} bona fide, {gs.size} spoof)")
            continue
        _det_curve(ax, gb, gs, str(g), **_style(i))
    pooled = f"{name} (pooled)" if groups else name
    eer = _det_curve(ax, bona, sp, pooled, color="k", lw=2.2, zorder=3)
    eer_label = "EER point (pooled)" if groups else "EER point"
    ax.plot(_nd(eer), _nd(eer), "o", color="C3", ms=6, zorder=4, label=eer_label)
    if threshold is not None:
        t_name, t = threshold
        pfa, pmiss = operating_point(bona, sp, t)
        ax.plot(
            _nd(pfa),
            _nd(pmiss),
            "D",
            color="k",
            mfc="gold",
            ms=7,
            zorder=5,
            label=f"{t_name} {t:.3g} (Pfa {100 * pfa:.2f} %, Pmiss {100 * pmiss:.2f} %)",
        )
    by = f" by {group_label}" if groups and group_label else ""
    ax.set_title(title or f"{name}{by}", fontsize=9)
    _legend(fig, ax)
    return fig


def plot_det(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    name: str,
    groups: Mapping[str, tuple[Any, Any]] | None = None,
    group_label: str = "",
    threshold: tuple[str, float] | None = None,
    title: str = "",
) -> Path:
    """DET curve (miss rate of bona fide vs false-alarm rate of spoof, normal-deviate axes) with
    the EER point, written to ``path``.

    Args:
        bonafide, spoof: the pooled scores (higher = more bona fide), drawn thick and black.
        path: the PNG to write.
        name: the model's name (``NAME v3``, a score file's stem): the title and the pooled
            curve's legend entry; every curve's entry carries its EER.
        groups: group name -> ``(bona fide scores, spoof scores)``: one thinner curve per group
            (see :func:`det_groups`). A group without bona fide or without spoof scores is not
            drawn, and the legend says so with its counts.
        group_label: what the groups are (``attack``, ``codec``), for the title.
        threshold: ``(name, t)`` of a decision threshold, e.g. ``("Bayes LLR threshold",
            -0.642)`` for calibrated scores: a marker at the (Pfa, Pmiss) of ``score >= t`` on the
            pooled scores (:func:`operating_point`). None (uncalibrated models) draws none.
        title: overrides the default title (``name``, plus ``by <group_label>``).

    Raises:
        ValueError: empty or non-finite pooled scores, or a drawn group's (see
            :func:`spoofdet.evaluation.metrics.compute_det_curve`).
    """
    return _save(
        det_figure(
            bonafide,
            spoof,
            name=name,
            groups=groups,
            group_label=group_label,
            threshold=threshold,
            title=title,
        ),
        path,
    )


def det_models_figure(
    models: Mapping[str, tuple[Any, Any]],
    *,
    fusion: tuple[str, tuple[Any, Any]] | None = None,
    title: str = "",
) -> Any:
    """The figure of :func:`plot_det_models` (not saved)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    _det_axes(ax)
    for i, (m, (b, s)) in enumerate(models.items()):
        _det_curve(ax, np.asarray(b, np.float64), np.asarray(s, np.float64), m, **_style(i))
    if fusion is not None:
        f_name, (b, s) = fusion
        _det_curve(
            ax, np.asarray(b, np.float64), np.asarray(s, np.float64), f_name, color="k", lw=2.2
        )
    ax.set_title(title or f"{len(models)} models", fontsize=9)
    _legend(fig, ax)
    return fig


def plot_det_models(
    models: Mapping[str, tuple[Any, Any]],
    path: str | Path,
    *,
    fusion: tuple[str, tuple[Any, Any]] | None = None,
    title: str = "",
) -> Path:
    """One DET curve per model on the same trials, each labelled with its name and EER.

    Args:
        models: model name -> ``(bona fide scores, spoof scores)``.
        path: the PNG to write.
        fusion: ``(name, (bona fide, spoof))`` of fused scores, drawn thick and black.
        title: default ``"<n> models"``.

    Raises:
        ValueError: empty or non-finite scores.
    """
    return _save(det_models_figure(models, fusion=fusion, title=title), path)


def det_groups(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    *,
    spoof_only: bool,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group, the ``(bona fide, spoof)`` scores of its DET curve: the ``groups`` form of
    :func:`plot_det` from aligned per-trial arrays, grouped as every breakdown groups them
    (:func:`spoofdet.evaluation.report.group_masks`).

    Args:
        scores, labels, groups: one entry per trial (labels 1 = bona fide, 0 = spoof, others
            ignored; group None = no group).
        spoof_only: True for factors of spoof trials only (attack, vocoder group): each group's
            spoof scores against **all** bona fide scores. False for conditions both classes
            pass (codec, subset, corpus): the group's own bona fide and spoof scores; groups that
            occur only on bona fide trials are kept (and drawn as "not drawn").

    Raises:
        ValueError: the three arrays differ in length.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    g = np.empty(len(groups), dtype=object)
    g[:] = list(groups)
    if not (s.size == y.size == g.size):
        raise ValueError(
            f"det_groups: {s.size} scores, {y.size} labels and {g.size} groups; "
            "align them row by row first"
        )
    masks = group_masks(y, g, spoof_only=spoof_only)
    return {v: (s[bona], s[spoof]) for v, (bona, spoof) in masks.items()}


def histogram_figure(
    scores: Sequence[float] | np.ndarray,
    *,
    labels: Sequence[int] | None = None,
    thresholds: dict[str, float] | None = None,
    xlabel: str = "score (higher = more bona fide)",
    title: str = "",
    log: bool | None = None,
) -> Any:
    """The figure of :func:`plot_histogram` (not saved)."""
    plt = _pyplot()
    s = np.asarray(scores, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    bins = np.histogram_bin_edges(s, bins=min(60, max(10, s.size // 4)))
    y = (
        None
        if labels is None
        else np.asarray([-1 if v is None else v for v in labels], dtype=np.int64)
    )
    if y is not None and ((y == BONAFIDE).any() or (y == SPOOF).any()):
        classes = [
            (s[y == BONAFIDE], "C0", "bona fide"),
            (s[y == SPOOF], "C1", "spoof"),
        ]
        n_other = int(((y != BONAFIDE) & (y != SPOOF)).sum())
    else:
        classes = [(s, "C2", "all clips")]
        n_other = 0
    sizes = [c[0].size for c in classes if c[0].size]
    if log is None:
        log = len(sizes) == 2 and max(sizes) > LOG_RATIO * min(sizes)
    for values, color, name in classes:
        if values.size == 0:
            ax.plot([], [], " ", label=f"{name} (0)")
            continue
        ax.hist(values, bins=bins, histtype="stepfilled", color=color, alpha=0.18, log=log)
        ax.hist(
            values,
            bins=bins,
            histtype="step",
            color=color,
            lw=2.0,
            log=log,
            label=f"{name} ({values.size:,})",
        )
    if n_other:  # unlabelled clips are counted, not drawn
        ax.plot([], [], " ", label=f"unlabelled ({n_other:,}, not drawn)")
    for i, (t_name, value) in enumerate((thresholds or {}).items()):
        ax.axvline(
            value,
            color=("k", "C2", "C4")[i % 3],
            ls=("-", "--", ":")[i % 3],
            lw=1.4,
            label=f"{t_name} = {value:.3g}",
        )
    bottom, top = ax.get_ylim()  # headroom above the tallest bin for the legend
    ax.set_ylim(bottom, top * 4.0 if log else top * 1.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clips (log scale)" if log else "clips")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7.5, framealpha=0.85)
    return fig


def plot_histogram(
    scores: Sequence[float] | np.ndarray,
    path: str | Path,
    *,
    labels: Sequence[int] | None = None,
    thresholds: dict[str, float] | None = None,
    xlabel: str = "score (higher = more bona fide)",
    title: str = "",
    log: bool | None = None,
) -> Path:
    """Score histogram, per class when ``labels`` (1 = bona fide, 0 = spoof) are given, with threshold lines.

    Each class is a thick step outline over a light fill of its colour, so both stay readable
    where they overlap; the legend gives each class's count (rows with another label are
    counted there too, not drawn).

    Args:
        scores: one score per clip.
        path: the PNG to write.
        labels: per-clip labels; None (or all missing) draws one histogram of every score.
        thresholds: name -> value, each drawn as a vertical line (e.g. the LLR decision threshold).
        xlabel, title: axis label and title.
        log: log-scaled counts; None (default) chooses it when one class has more than
            :data:`LOG_RATIO` times the clips of the other.
    """
    return _save(
        histogram_figure(
            scores, labels=labels, thresholds=thresholds, xlabel=xlabel, title=title, log=log
        ),
        path,
    )


def plot_breakdown_dets(
    scores: Sequence[float] | np.ndarray,
    key_table: Any,
    dims: Sequence[str],
    out_dir: str | Path,
    *,
    name: str,
    threshold: tuple[str, float] | None = None,
    suffix: str = "",
    context: str = "",
) -> dict[str, Path]:
    """``det_by_<dim><suffix>.png`` in ``out_dir`` for each breakdown dimension of ``dims`` the
    key table has: the pooled curve of every labelled row plus one curve per group.

    Args:
        scores: one score per key-table row (rows with a null label are ignored).
        key_table: pyarrow table (or mapping of columns) with ``label`` and the dimensions.
        dims: dimensions to draw, e.g. the keys of ``evaluate_table(...)["breakdown"]``.
        name, threshold: as in :func:`plot_det`.
        suffix: appended to the file names (one set of plots per model).
        context: what was scored (``"tones, 4s"``), for the titles: ``"<name>: <context>, by
            <dim>"``; default ``"<name> by <dim>"``.

    Returns:
        ``det_by_<dim>`` -> path, for the dimensions drawn.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray([-1 if v is None else v for v in _column(key_table, "label")], dtype=np.int64)
    out: dict[str, Path] = {}
    for dim in dims:
        col = breakdown_column(key_table, dim)
        if col is None:
            continue
        groups = det_groups(s, y, col, spoof_only=dim in SPOOF_ONLY_DIMS)
        if not groups:
            continue
        out[f"det_by_{dim}"] = plot_det(
            s[y == BONAFIDE],
            s[y == SPOOF],
            Path(out_dir) / f"det_by_{dim}{suffix}.png",
            name=name,
            groups=groups,
            group_label=dim,
            threshold=threshold,
            title=f"{name}: {context}, by {dim}" if context else "",
        )
    return out


def safe_stem(name: str) -> str:
    """``name`` reduced to a file-name stem (letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scores"


def evaluation_plots(
    aligned: Sequence[np.ndarray],
    key_table: Any,
    result: Mapping[str, Any],
    out_dir: str | Path,
    *,
    names: Sequence[str],
) -> dict[str, str]:
    """The plots of ``spoofdet evaluate --plots DIR`` for scores aligned with a key table.

    One score file: ``det.png``, ``hist.png`` and ``det_by_<dim>.png`` per breakdown dimension of
    ``result``. Several: ``det.png`` with one curve per file (plus the fusion when ``result``
    has one: the per-utterance mean, as :func:`spoofdet.evaluation.keys.evaluate_files` fuses),
    and per file ``hist_<name>.png`` and ``det_by_<dim>_<name>.png``.

    Args:
        aligned: per score file, one score per row of ``key_table`` (the selected key rows).
        key_table: the selected key rows (``label`` plus breakdown columns).
        result: what :func:`spoofdet.evaluation.keys.evaluate_files` returned for them.
        out_dir: the folder to write (created).
        names: one display name per score file (legends and titles), distinct.

    Returns:
        plot name (the file's stem) -> path.

    Raises:
        ValueError: not one name per score file, or names that are not distinct.
    """
    if len(names) != len(aligned):
        raise ValueError(
            f"plot names: {len(names)} name(s) for {len(aligned)} score file(s); give one per file"
        )
    stems = [safe_stem(n) for n in names]
    if len(set(stems)) != len(stems):
        raise ValueError(
            f"plot names {list(names)} give the same file name twice; give distinct names"
        )
    out_dir = Path(out_dir)
    y = np.asarray([-1 if v is None else v for v in _column(key_table, "label")], dtype=np.int64)
    single = len(aligned) == 1
    per_model = [result] if single else list(result["models"])
    paths: dict[str, Path] = {}
    if single:
        s = np.asarray(aligned[0], dtype=np.float64)
        paths["det"] = plot_det(s[y == BONAFIDE], s[y == SPOOF], out_dir / "det.png", name=names[0])
    else:
        fusion = None
        if result.get("fusion") is not None and result["fusion"]["method"] == "mean":
            fused = np.mean(np.stack([np.asarray(a, np.float64) for a in aligned]), axis=0)
            fusion = (
                f"{result['fusion']['method']} fusion",
                (fused[y == BONAFIDE], fused[y == SPOOF]),
            )
        paths["det"] = plot_det_models(
            {
                n: (np.asarray(a, np.float64)[y == BONAFIDE], np.asarray(a, np.float64)[y == SPOOF])
                for n, a in zip(names, aligned)
            },
            out_dir / "det.png",
            fusion=fusion,
        )
    for n, stem, a, r in zip(names, stems, aligned, per_model):
        suffix = "" if single else f"_{stem}"
        hist = "hist" + suffix
        paths[hist] = plot_histogram(
            a,
            out_dir / f"{hist}.png",
            labels=y,
            thresholds={"EER threshold": r["threshold"]},
            title=f"{n}: EER {r['eer']:.2f} %",
        )
        for k, p in plot_breakdown_dets(
            a, key_table, list(r["breakdown"]), out_dir, name=n, suffix=suffix
        ).items():
            paths[k + suffix] = p
    return {k: str(p) for k, p in paths.items()}
