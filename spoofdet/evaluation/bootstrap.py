"""Bootstrap confidence intervals of EER, minDCF, actDCF, Cllr and AUC (numpy only).

Resampling is **within class**: bona fide and spoof trials are resampled separately, so each
replicate keeps both classes. The unit is the trial (each class keeps its size) or, when every
trial has a speaker, the speaker (a cluster bootstrap: each class' speakers are drawn with
replacement, as many as that class has, and a drawn speaker brings all of its trials of that
class, so trials of one speaker move together). Intervals are percentile intervals
(``numpy.percentile``, linear interpolation) of the replicate values.

Speed: the scores are sorted once. A replicate is a vector of integer counts (how many times
each trial, or each speaker's trials, was drawn), and its DET curve is read off weighted
cumulative sums over the sorted trials. This is *exactly* the curve of sorting the resampled
array (ties included, with the official rule: bona fide first, stable sort), because copies of
one trial are adjacent in that sort and tied trials of the two classes keep bona fide first; the
EER's point inside a block of copies is found exactly (``|FRR - FAR|`` is monotone on either side
of its sign change), and the minDCF of a block is at one of its ends (the cost is monotone along
it). EER, minDCF, actDCF and AUC therefore equal the plain resample-and-recompute values bit for
bit; Cllr agrees up to the order of a floating-point sum. 2021 LA eval (148k trials), 1000
replicates: a few seconds on one core.

Same conventions as :mod:`spoofdet.evaluation.metrics`: label 1 = bona fide, higher score = more
bona fide, actDCF and Cllr assume LLR scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spoofdet.evaluation.metrics import ASVSPOOF5_COSTS, DCFCosts, _scores

#: The metrics each replicate yields (EER as a fraction here; ``evaluate_table`` reports percent).
METRICS = ("eer", "min_dcf", "act_dcf", "cllr", "auc")
#: Upper bound on replicate x trial cells held at once (int64 arrays: 32 MiB each).
_CELLS = 4_000_000


@dataclass(frozen=True)
class BootstrapSpec:
    """How to bootstrap: ``n`` replicates, generator ``seed``, two-sided ``ci`` level.

    Raises:
        ValueError: ``n`` below 1, ``ci`` not in (0, 1), or a negative ``seed``.
    """

    n: int
    seed: int = 0
    ci: float = 0.95

    def __post_init__(self) -> None:
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"bootstrap: n must be a positive integer, got {self.n!r}")
        if not 0.0 < self.ci < 1.0:
            raise ValueError(f"bootstrap: ci must be in (0, 1), e.g. 0.95, got {self.ci!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"bootstrap: seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True)
class SortedTrials:
    """Bona fide and spoof scores sorted once (see :func:`sort_trials`)."""

    bona: np.ndarray  # bona fide scores, ascending (stable)
    spoof: np.ndarray  # spoof scores, ascending (stable)
    bona_order: np.ndarray  # bona[k] = original_bona[bona_order[k]]
    spoof_order: np.ndarray
    is_target: np.ndarray  # class of each position of the joint sort (bona fide first on ties)
    bona_upto: np.ndarray  # bona fide trials among joint positions 0..k (inclusive)
    spoof_upto: np.ndarray
    dcf_points: np.ndarray  # joint positions ending a run of spoof trials, and the last one
    auc_left: np.ndarray  # per sorted bona fide trial: spoof trials scoring strictly below
    auc_right: np.ndarray  # ... at or below
    cllr_bona: np.ndarray  # per sorted trial: log(1 + exp(-llr)) resp. log(1 + exp(llr))
    cllr_spoof: np.ndarray
    act_cut: int  # joint positions below it score below the Bayes threshold


def sort_trials(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    costs: DCFCosts = ASVSPOOF5_COSTS,
) -> SortedTrials:
    """Sort the trials once for :func:`replicate_metrics`.

    Raises:
        ValueError: an empty or non-finite score array.
    """
    tar = _scores(bonafide, "bona fide scores")
    non = _scores(spoof, "spoof scores")
    joint = np.concatenate([tar, non])
    order = np.argsort(joint, kind="mergesort")
    is_target = order < tar.size
    bona_order = order[is_target]
    spoof_order = order[~is_target] - tar.size
    b, s = tar[bona_order], non[spoof_order]
    return SortedTrials(
        bona=b,
        spoof=s,
        bona_order=bona_order,
        spoof_order=spoof_order,
        is_target=is_target,
        bona_upto=np.cumsum(is_target),
        spoof_upto=np.cumsum(~is_target),
        dcf_points=np.flatnonzero(~is_target & np.append(is_target[1:], True) | _last(joint.size)),
        auc_left=np.searchsorted(s, b, side="left"),
        auc_right=np.searchsorted(s, b, side="right"),
        cllr_bona=np.logaddexp(0.0, -b),
        cllr_spoof=np.logaddexp(0.0, s),
        act_cut=int(np.searchsorted(joint[order], costs.llr_threshold, side="left")),
    )


def _last(n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[-1] = True
    return out


def replicate_metrics(
    trials: SortedTrials,
    bona_counts: np.ndarray,
    spoof_counts: np.ndarray,
    costs: DCFCosts = ASVSPOOF5_COSTS,
) -> dict[str, np.ndarray]:
    """Metrics of resampled trial sets given as integer counts.

    Args:
        trials: :func:`sort_trials` of the original scores.
        bona_counts, spoof_counts: ``(R, n_bonafide)`` and ``(R, n_spoof)`` non-negative integer
            counts in the **original** trial order (row r: how often each trial is in replicate
            r); every row needs a positive total in both classes.

    Returns:
        ``{metric: array of R values}`` for :data:`METRICS` (EER a fraction), equal to
        :func:`spoofdet.evaluation.metrics.compute_eer` etc. on ``np.repeat(scores, counts)``.

    Raises:
        ValueError: wrong shapes, negative counts, or a row without a trial of some class.
    """
    wb = np.asarray(bona_counts)
    ws = np.asarray(spoof_counts)
    if wb.ndim != 2 or ws.ndim != 2 or wb.shape[0] != ws.shape[0]:
        raise ValueError(
            f"counts must be (R, n) arrays with the same R, got {wb.shape} and {ws.shape}"
        )
    if wb.shape[1] != trials.bona.size or ws.shape[1] != trials.spoof.size:
        raise ValueError(
            f"counts have {wb.shape[1]} bona fide and {ws.shape[1]} spoof columns for "
            f"{trials.bona.size} bona fide and {trials.spoof.size} spoof trials"
        )
    if (wb < 0).any() or (ws < 0).any():
        raise ValueError("counts must be non-negative")
    wb = wb[:, trials.bona_order].astype(np.int64)
    ws = ws[:, trials.spoof_order].astype(np.int64)
    n_rep = wb.shape[0]
    zero = np.zeros((n_rep, 1), np.int64)
    cb = np.concatenate([zero, np.cumsum(wb, axis=1)], axis=1)  # bona weight of the k lowest
    cs = np.concatenate([zero, np.cumsum(ws, axis=1)], axis=1)
    w_b, w_s = cb[:, -1], cs[:, -1]
    if (w_b == 0).any() or (w_s == 0).any():
        raise ValueError("every replicate needs at least one bona fide and one spoof trial")
    # minDCF: the cost rises along bona fide trials and falls along spoof ones, so its minimum
    # is at point 0, the end of a run of spoof trials, or the last point
    pts = trials.dcf_points
    frr = cb[:, trials.bona_upto[pts]] / w_b[:, None]
    far = (w_s[:, None] - cs[:, trials.spoof_upto[pts]]) / w_s[:, None]
    a = costs.c_miss * (1 - costs.p_spoof)
    b = costs.c_fa * costs.p_spoof
    c_def = min(a, b)
    c_det = a * frr + b * far
    min_dcf = np.minimum(c_det.min(axis=1), a * 0.0 + b * 1.0) / c_def
    eer = _eer_rows(trials, cb, cs, wb, ws, w_b, w_s)
    # actDCF at the Bayes threshold: joint positions below act_cut score below it
    k = trials.act_cut
    miss = cb[:, trials.bona_upto[k - 1]] if k else np.zeros(n_rep, np.int64)
    fa = w_s - (cs[:, trials.spoof_upto[k - 1]] if k else 0)
    act = (a * (miss / w_b) + b * (fa / w_s)) / c_def
    cllr = 0.5 * (wb @ trials.cllr_bona / w_b + ws @ trials.cllr_spoof / w_s) / math.log(2.0)
    below = cs[:, trials.auc_left]
    below_eq = cs[:, trials.auc_right]
    twice_u = (wb * (below + below_eq)).sum(axis=1)
    auc = twice_u / (2.0 * w_b * w_s)
    return {"eer": eer, "min_dcf": min_dcf, "act_dcf": act, "cllr": cllr, "auc": auc}


def _eer_rows(
    trials: SortedTrials,
    cb: np.ndarray,
    cs: np.ndarray,
    wb: np.ndarray,
    ws: np.ndarray,
    w_b: np.ndarray,
    w_s: np.ndarray,
) -> np.ndarray:
    """EER of each replicate, exactly as ``compute_eer`` on the expanded (resampled) array.

    ``FRR - FAR`` rises strictly along the expanded curve, so the first minimum of its absolute
    value is the last point below zero or the first at or above it (the earlier one on a tie).
    The first block end at or above zero is found by a binary search over the joint positions
    (vectorised over replicates); its block is then expanded point by point.
    """
    rows = np.arange(cb.shape[0])

    def gap(k: np.ndarray) -> np.ndarray:  # FRR - FAR after joint position k, per replicate
        frr = cb[rows, trials.bona_upto[k]] / w_b
        far = (w_s - cs[rows, trials.spoof_upto[k]]) / w_s
        return frr - far

    lo = np.zeros(rows.size, np.int64)
    hi = np.full(rows.size, trials.is_target.size - 1, np.int64)  # the last point: FRR 1, FAR 0
    while (lo < hi).any():
        mid = (lo + hi) // 2
        above = gap(mid) >= 0
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid + 1)
    out = np.empty(rows.size)
    for r, j in enumerate(lo):
        r0 = int(cb[r, trials.bona_upto[j - 1]]) if j else 0
        n0 = int(cs[r, trials.spoof_upto[j - 1]]) if j else 0
        if trials.is_target[j]:
            c = int(wb[r, trials.bona_upto[j] - 1])
            rt, rn = r0 + np.arange(c + 1), np.full(c + 1, n0)
        else:
            c = int(ws[r, trials.spoof_upto[j] - 1])
            rt, rn = np.full(c + 1, r0), n0 + np.arange(c + 1)
        f_r = rt / int(w_b[r])
        f_a = (int(w_s[r]) - rn) / int(w_s[r])
        d = f_r - f_a
        q = int(np.argmax(d >= 0))  # >= 1: the block's start is below zero
        i = q - 1 if abs(d[q - 1]) <= abs(d[q]) else q
        out[r] = float(np.mean((f_r[i], f_a[i])))
    return out


def _clusters(speakers: Sequence[Any] | np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    """Cluster index of each trial (None: every trial its own unit)."""
    if speakers is None:
        return None
    spk = np.asarray(speakers, dtype=object)
    if spk.size != n:
        raise ValueError(f"{what}: {spk.size} speakers for {n} trials")
    _, inverse = np.unique(spk.astype(str), return_inverse=True)
    return inverse.ravel()


def _draw_counts(
    rng: np.random.Generator, n_rep: int, n_units: int, clusters: np.ndarray | None
) -> np.ndarray:
    """``(n_rep, n_trials)`` counts: ``n_units`` units drawn with replacement per replicate."""
    draws = rng.integers(0, n_units, size=(n_rep, n_units))
    offsets = (np.arange(n_rep) * n_units)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_rep * n_units)
    counts = counts.reshape(n_rep, n_units)
    return counts if clusters is None else counts[:, clusters]


def bootstrap_intervals(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    spec: BootstrapSpec,
    *,
    bona_speakers: Sequence[Any] | np.ndarray | None = None,
    spoof_speakers: Sequence[Any] | np.ndarray | None = None,
    costs: DCFCosts = ASVSPOOF5_COSTS,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of :data:`METRICS`, resampling within class.

    Args:
        bonafide, spoof: the scores of each class.
        spec: replicates, seed and level; the same data and spec give the same interval.
        bona_speakers, spoof_speakers: the speaker of each trial (both or neither): resample
            speakers instead of trials (cluster bootstrap).

    Returns:
        ``{"unit": "trial"|"speaker", "n_units_bonafide", "n_units_spoof", "eer": [lo, hi] (percent),
        "min_dcf", "act_dcf", "cllr", "auc": [lo, hi]}``.

    Raises:
        ValueError: empty or non-finite scores, one speaker list without the other, or a speaker
            list of the wrong length.
    """
    if (bona_speakers is None) != (spoof_speakers is None):
        raise ValueError("give the speakers of both classes or of neither")
    trials = sort_trials(bonafide, spoof, costs)
    nb, ns = trials.bona.size, trials.spoof.size
    cb = _clusters(bona_speakers, nb, "bona fide speakers")
    cs = _clusters(spoof_speakers, ns, "spoof speakers")
    units_b = nb if cb is None else int(cb.max()) + 1
    units_s = ns if cs is None else int(cs.max()) + 1
    rng = np.random.default_rng(spec.seed)
    chunk = max(1, min(spec.n, _CELLS // (nb + ns + 1)))
    values: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, spec.n, chunk):
        r = min(chunk, spec.n - start)
        wb = _draw_counts(rng, r, units_b, cb)
        ws = _draw_counts(rng, r, units_s, cs)
        for m, v in replicate_metrics(trials, wb, ws, costs).items():
            values[m].append(v)
    lo, hi = 50.0 * (1.0 - spec.ci), 50.0 * (1.0 + spec.ci)
    out: dict[str, Any] = {
        "unit": "trial" if cb is None else "speaker",
        "n_units_bonafide": units_b,
        "n_units_spoof": units_s,
    }
    for m in METRICS:
        v = np.concatenate(values[m]) * (100.0 if m == "eer" else 1.0)
        p = np.percentile(v, [lo, hi])
        out[m] = [float(p[0]), float(p[1])]
    return out
