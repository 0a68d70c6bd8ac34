"""Countermeasure metrics as the ASVspoof evaluation packages define them (numpy only).

Conventions (those of :mod:`spoofdet.data.schema`, not imported: this module needs numpy alone):
label 1 = bona fide, 0 = spoof; a score is higher for "more bona fide"; calibrated scores are
log-likelihood ratios ``log p(x | bona fide) / p(x | spoof)``. Bona fide trials are the
*targets* of the DET curve, spoof trials the *non-targets*.

* :func:`compute_det_curve` / :func:`compute_eer`: the official ASVspoof 2019/2021/5 definition.
  Scores are concatenated bona fide first and stably sorted (mergesort), so on tied scores bona
  fide trials count as rejected before spoof trials do; the curve starts at FRR 0 / FAR 1 with
  threshold ``min - 0.001``; the EER is the mean of FRR and FAR at the first point where
  ``|FRR - FAR|`` is smallest.
* :func:`min_dcf` / :func:`act_dcf` / :func:`cllr`: ASVspoof 5 track 1 (Pspoof 0.05, Cmiss 1,
  Cfa 10, normalised by the cost of the best fixed decision). ``act_dcf`` assumes LLR scores.
* :func:`auc`: area under the ROC (Mann-Whitney U, ties count one half);
  :func:`threshold_metrics`: accuracy, precision, recall and F1 at a stated threshold.
* :func:`min_tdcf_2019` (legacy form used for 2019 LA) and :func:`min_tdcf_2021` (revised form,
  2021 LA): the tandem DCF with an ASV system whose operating point is its own EER threshold.

Decision rule used wherever a fixed threshold ``t`` is applied (actDCF, the ASV operating
point): a trial is accepted as bona fide (ASV: as target) when ``score >= t``. Tables of these
metrics with breakdowns (``evaluate_table``) are in :mod:`spoofdet.evaluation.report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BONAFIDE = 1  # == spoofdet.data.schema.BONAFIDE (kept literal: this module imports numpy only)
SPOOF = 0


@dataclass(frozen=True)
class DCFCosts:
    """ASVspoof 5 track 1 cost model: prior of spoof trials and the two error costs."""

    p_spoof: float = 0.05
    c_miss: float = 1.0
    c_fa: float = 10.0

    @property
    def beta(self) -> float:
        """``Cmiss (1 - Pspoof) / (Cfa Pspoof)``; the Bayes LLR threshold is ``-ln(beta)``."""
        return self.c_miss * (1.0 - self.p_spoof) / (self.c_fa * self.p_spoof)

    @property
    def llr_threshold(self) -> float:
        return -math.log(self.beta)

    @property
    def effective_prior(self) -> float:
        """Effective prior of bona fide: the prior at which unit costs give the same Bayes threshold."""
        return self.beta / (1.0 + self.beta)


@dataclass(frozen=True)
class TDCFCosts:
    """t-DCF cost model shared by the 2019 and 2021 ASVspoof LA evaluations.

    ``c_miss`` and ``c_fa`` are the ASV (and, in the legacy form, CM miss) costs; ``c_fa_spoof``
    is the cost of accepting a spoof (the CM false-accept cost of the legacy form).
    """

    p_spoof: float = 0.05
    p_tar: float = 0.95 * 0.99
    p_non: float = 0.95 * 0.01
    c_miss: float = 1.0
    c_fa: float = 10.0
    c_fa_spoof: float = 10.0


ASVSPOOF5_COSTS = DCFCosts()
TDCF_COSTS = TDCFCosts()


def _scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name}: no scores (need at least one)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: {int(np.sum(~np.isfinite(a)))} score(s) are NaN or infinite")
    return a


# ----------------------------------------------------------------------------- EER / DCF


def compute_det_curve(
    target: Sequence[float] | np.ndarray,
    nontarget: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET curve of bona fide (``target``) vs spoof (``nontarget``) scores, ASVspoof definition.

    Returns:
        ``(frr, far, thresholds)``, each of length ``len(target) + len(nontarget) + 1``. Point
        ``k > 0`` rejects the ``k`` lowest trials in the stable order (targets before non-targets
        on ties); point 0 rejects nothing (FRR 0, FAR 1, threshold ``min - 0.001``).

    Raises:
        ValueError: an empty or non-finite score array.
    """
    tar = _scores(target, "target (bona fide) scores")
    non = _scores(nontarget, "nontarget (spoof) scores")
    allscores = np.concatenate([tar, non])
    is_target = np.concatenate([np.ones(tar.size), np.zeros(non.size)])
    order = np.argsort(allscores, kind="mergesort")
    is_target = is_target[order]
    rejected_targets = np.cumsum(is_target)
    rejected = np.arange(1, allscores.size + 1)
    accepted_nontargets = non.size - (rejected - rejected_targets)
    frr = np.concatenate([[0.0], rejected_targets / tar.size])
    far = np.concatenate([[1.0], accepted_nontargets / non.size])
    sorted_scores = allscores[order]
    thresholds = np.concatenate([[sorted_scores[0] - 0.001], sorted_scores])
    return frr, far, thresholds


def compute_eer(
    bonafide: Sequence[float] | np.ndarray, spoof: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Equal error rate (a fraction, not percent) and its threshold, ASVspoof definition.

    Raises:
        ValueError: an empty or non-finite score array.
    """
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    i = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[i], far[i]))), float(thresholds[i])


def min_dcf(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    costs: DCFCosts = ASVSPOOF5_COSTS,
) -> tuple[float, float]:
    """Normalised minimum detection cost over the DET curve (ASVspoof 5 track 1 primary metric).

    ``c(t) = Cmiss (1 - Pspoof) Pmiss(t) + Cfa Pspoof Pfa(t)``, divided by
    ``min(Cmiss (1 - Pspoof), Cfa Pspoof)`` (the cost of always accepting or always rejecting).

    Returns:
        ``(min_dcf, threshold)``.
    """
    frr, far, thresholds = compute_det_curve(bonafide, spoof)
    c_det = costs.c_miss * (1 - costs.p_spoof) * frr + costs.c_fa * costs.p_spoof * far
    c_def = min(costs.c_miss * (1 - costs.p_spoof), costs.c_fa * costs.p_spoof)
    i = int(np.argmin(c_det))
    return float(c_det[i] / c_def), float(thresholds[i])


def act_dcf(
    bonafide_llr: Sequence[float] | np.ndarray,
    spoof_llr: Sequence[float] | np.ndarray,
    costs: DCFCosts = ASVSPOOF5_COSTS,
) -> float:
    """Normalised actual DCF: LLR scores thresholded at the Bayes threshold ``-ln(beta)``.

    Meaningful only when the scores are calibrated LLRs; for raw scores it is just the cost of
    an arbitrary threshold near ``-0.64``. A miss is a bona fide LLR below the threshold, a
    false alarm a spoof LLR at or above it.
    """
    tar = _scores(bonafide_llr, "bona fide LLRs")
    non = _scores(spoof_llr, "spoof LLRs")
    t = costs.llr_threshold
    p_miss = float(np.mean(tar < t))
    p_fa = float(np.mean(non >= t))
    c_def = min(costs.c_miss * (1 - costs.p_spoof), costs.c_fa * costs.p_spoof)
    return (costs.c_miss * (1 - costs.p_spoof) * p_miss + costs.c_fa * costs.p_spoof * p_fa) / c_def


def cllr(
    bonafide_llr: Sequence[float] | np.ndarray, spoof_llr: Sequence[float] | np.ndarray
) -> float:
    """Log-likelihood-ratio cost in bits (prior 0.5): 0 is perfect, 1 is an uninformative LLR of 0."""
    tar = _scores(bonafide_llr, "bona fide LLRs")
    non = _scores(spoof_llr, "spoof LLRs")
    c_tar = np.mean(np.logaddexp(0.0, -tar))
    c_non = np.mean(np.logaddexp(0.0, non))
    return float(0.5 * (c_tar + c_non) / math.log(2.0))


def auc(bonafide: Sequence[float] | np.ndarray, spoof: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC of bona fide vs spoof: the probability that a random bona fide trial
    scores above a random spoof trial, ties counting one half.

    Equals the Mann-Whitney ``U`` of the bona fide scores divided by ``n_bonafide * n_spoof``;
    computed exactly from integer counts (``sum(below + 0.5 * equal)``). 1 is perfect, 0.5 chance,
    below 0.5 inverted scores.

    Raises:
        ValueError: an empty or non-finite score array.
    """
    tar = _scores(bonafide, "bona fide scores")
    non = np.sort(_scores(spoof, "spoof scores"))
    below = np.searchsorted(non, tar, side="left")
    below_or_equal = np.searchsorted(non, tar, side="right")
    twice_u = int(below.sum()) + int(below_or_equal.sum())
    return twice_u / (2.0 * tar.size * non.size)


#: The classes ``threshold_metrics`` may call positive.
POSITIVE_CLASSES = ("bonafide", "spoof")


def threshold_metrics(
    bonafide: Sequence[float] | np.ndarray,
    spoof: Sequence[float] | np.ndarray,
    threshold: float,
    positive: str = "bonafide",
) -> dict[str, Any]:
    """Confusion counts, accuracy, precision, recall and F1 at a fixed threshold.

    A trial is decided bona fide when ``score >= threshold`` (the rule of :func:`act_dcf`), spoof
    otherwise. ``positive`` names the class counted as positive (``tp`` = positive trials decided
    positive): ``"bonafide"`` as the Speech-DF-Arena leaderboard does (sklearn's ``f1_score``
    with bona fide = 1), or ``"spoof"`` (detection of fakes). Accuracy does not depend on it.

    Returns:
        ``{threshold, positive, accuracy, precision, recall, f1, tp, fp, tn, fn}``; ``precision``
        is None when nothing is decided positive (0 / 0). ``f1 = 2 tp / (2 tp + fp + fn)``.

    Raises:
        ValueError: an unknown ``positive``, a non-finite threshold, empty or non-finite scores.
    """
    if positive not in POSITIVE_CLASSES:
        raise ValueError(f"positive must be one of {list(POSITIVE_CLASSES)}, got {positive!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    tar = _scores(bonafide, "bona fide scores")
    non = _scores(spoof, "spoof scores")
    bona_accepted = int(np.sum(tar >= threshold))
    spoof_accepted = int(np.sum(non >= threshold))
    if positive == "bonafide":
        tp, fn = bona_accepted, tar.size - bona_accepted
        fp, tn = spoof_accepted, non.size - spoof_accepted
    else:
        tp, fn = non.size - spoof_accepted, spoof_accepted
        fp, tn = tar.size - bona_accepted, bona_accepted
    return {
        "threshold": float(threshold),
        "positive": positive,
        "accuracy": (tp + tn) / (tp + tn + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn),
        "f1": 2 * tp / (2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


# ----------------------------------------------------------------------------- t-DCF


@dataclass(frozen=True)
class AsvScores:
    """Scores of an ASV system on target, non-target and spoof trials (for the t-DCF).

    ``spoof_attack`` optionally names the attack of each spoof trial (same length as ``spoof``),
    which allows a per-attack t-DCF. ``*_condition`` optionally name the codec condition of each
    trial of the three classes (e.g. ``C2``, the names of the CM key's ``extra['condition']``),
    which allows a per-condition t-DCF (all three or none).
    """

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray
    spoof_attack: np.ndarray | None = None
    target_condition: np.ndarray | None = None
    nontarget_condition: np.ndarray | None = None
    spoof_condition: np.ndarray | None = None

    @property
    def has_conditions(self) -> bool:
        return (
            self.target_condition is not None
            and self.nontarget_condition is not None
            and self.spoof_condition is not None
        )

    def for_attack(self, attack: str) -> AsvScores:
        """Target and non-target trials unchanged, spoof trials of ``attack`` only (the official
        decomposition of a spoof-only factor); condition labels are kept.

        Raises:
            ValueError: the scores carry no attack labels.
        """
        if self.spoof_attack is None:
            raise ValueError("these ASV scores carry no attack labels")
        keep = self.spoof_attack == attack
        return AsvScores(
            self.target,
            self.nontarget,
            self.spoof[keep],
            self.spoof_attack[keep],
            self.target_condition,
            self.nontarget_condition,
            None if self.spoof_condition is None else self.spoof_condition[keep],
        )

    def for_condition(self, condition: str) -> AsvScores:
        """Target, non-target **and** spoof trials of one codec condition only, as the official
        2021 eval package filters the ASV scores for a factor both classes pass through.

        Raises:
            ValueError: the scores carry no condition labels.
        """
        if not self.has_conditions:
            raise ValueError(
                "these ASV scores carry no codec condition labels (read the 2021 LA ASV key "
                "with read_asv_scores_2021)"
            )
        t, n, s = (
            self.target_condition == condition,
            self.nontarget_condition == condition,
            self.spoof_condition == condition,
        )
        return AsvScores(
            self.target[t],
            self.nontarget[n],
            self.spoof[s],
            None if self.spoof_attack is None else self.spoof_attack[s],
            self.target_condition[t],
            self.nontarget_condition[n],
            self.spoof_condition[s],
        )

    @property
    def complete(self) -> bool:
        """Whether every class has at least one trial (else no t-DCF is defined)."""
        return bool(len(self.target) and len(self.nontarget) and len(self.spoof))


@dataclass(frozen=True)
class AsvOperatingPoint:
    """The ASV system at its EER threshold (on target vs non-target scores)."""

    threshold: float
    pmiss_asv: float
    pfa_asv: float
    pmiss_spoof_asv: float
    pfa_spoof_asv: float


def asv_operating_point(asv: AsvScores) -> AsvOperatingPoint:
    """Error rates of the ASV system at its EER threshold.

    The threshold is :func:`compute_eer`'s on ASV target vs non-target scores. At it, a target
    below the threshold is a miss, a non-target at or above it a false alarm, and a spoof trial
    at or above it a spoof false alarm (``pfa_spoof_asv = 1 - pmiss_spoof_asv``). As in the
    official code, the EER threshold is itself a score (the last one the DET point rejects), so
    a non-target scoring exactly the threshold counts as a false alarm here: even a perfectly
    separating ASV system gets ``pfa_asv = 1 / n_nontarget``.
    """
    _, thr = compute_eer(asv.target, asv.nontarget)
    spoof = _scores(asv.spoof, "ASV spoof scores")
    return AsvOperatingPoint(
        threshold=thr,
        pmiss_asv=float(np.mean(np.asarray(asv.target) < thr)),
        pfa_asv=float(np.mean(np.asarray(asv.nontarget) >= thr)),
        pmiss_spoof_asv=float(np.mean(spoof < thr)),
        pfa_spoof_asv=float(np.mean(spoof >= thr)),
    )


@dataclass(frozen=True)
class TDCFResult:
    """Minimum normalised t-DCF, the CM threshold reaching it, its weights and the ASV point.

    ``c0`` is 0 in the legacy (2019) form, which has no constant term.
    """

    form: str
    min_tdcf: float
    threshold: float
    c0: float
    c1: float
    c2: float
    asv: AsvOperatingPoint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def min_tdcf_2019(
    bonafide_cm: Sequence[float] | np.ndarray,
    spoof_cm: Sequence[float] | np.ndarray,
    asv: AsvScores,
    costs: TDCFCosts = TDCF_COSTS,
) -> TDCFResult:
    """Minimum normalised t-DCF, legacy form (ASVspoof 2019 LA).

    ``C1 = Ptar (Cmiss - Cmiss Pmiss_asv) - Pnon Cfa Pfa_asv``, ``C2 = Cfa_spoof Pspoof
    (1 - Pmiss_spoof_asv)``; ``t-DCF(t) = C1 Pmiss_cm(t) + C2 Pfa_cm(t)`` divided by
    ``min(C1, C2)``, minimised over the CM DET curve.

    Raises:
        ValueError: a weight is not positive (the ASV system is worse than chance, or no spoof
            trial passes it, so the normalisation is undefined).
    """
    op = asv_operating_point(asv)
    c1 = (
        costs.p_tar * (costs.c_miss - costs.c_miss * op.pmiss_asv)
        - costs.p_non * costs.c_fa * op.pfa_asv
    )
    c2 = costs.c_fa_spoof * costs.p_spoof * (1.0 - op.pmiss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        raise ValueError(
            f"t-DCF weights must be positive, got C1={c1:.6g}, C2={c2:.6g} "
            f"(ASV Pmiss={op.pmiss_asv:.4f}, Pfa={op.pfa_asv:.4f}, Pfa_spoof={op.pfa_spoof_asv:.4f}); "
            "check the ASV scores (target/nontarget swapped, or no spoof trial accepted)"
        )
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bonafide_cm, spoof_cm)
    tdcf = (c1 * pmiss_cm + c2 * pfa_cm) / min(c1, c2)
    i = int(np.argmin(tdcf))
    return TDCFResult(
        "2019-legacy", float(tdcf[i]), float(thresholds[i]), 0.0, float(c1), float(c2), op
    )


def min_tdcf_2021(
    bonafide_cm: Sequence[float] | np.ndarray,
    spoof_cm: Sequence[float] | np.ndarray,
    asv: AsvScores,
    costs: TDCFCosts = TDCF_COSTS,
) -> TDCFResult:
    """Minimum normalised t-DCF, revised form (ASVspoof 2021 LA).

    ``C0 = Ptar Cmiss Pmiss_asv + Pnon Cfa Pfa_asv``, ``C1 = Ptar Cmiss - C0``,
    ``C2 = Pspoof Cfa_spoof Pfa_spoof_asv``; ``t-DCF(t) = C0 + C1 Pmiss_cm(t) + C2 Pfa_cm(t)``
    divided by ``C0 + min(C1, C2)``. With the same costs, ``C1`` and ``C2`` equal the legacy
    weights, so ``revised = (C0 + m * legacy) / (C0 + m)`` with ``m = min(C1, C2)``.

    Raises:
        ValueError: a weight is negative or the normaliser is not positive.
    """
    op = asv_operating_point(asv)
    c0 = costs.p_tar * costs.c_miss * op.pmiss_asv + costs.p_non * costs.c_fa * op.pfa_asv
    c1 = costs.p_tar * costs.c_miss - c0
    c2 = costs.p_spoof * costs.c_fa_spoof * op.pfa_spoof_asv
    if c1 < 0 or c2 < 0 or c0 + min(c1, c2) <= 0:
        raise ValueError(
            f"t-DCF weights must be non-negative with a positive normaliser, got C0={c0:.6g}, "
            f"C1={c1:.6g}, C2={c2:.6g}; check the ASV scores (target/nontarget swapped?)"
        )
    pmiss_cm, pfa_cm, thresholds = compute_det_curve(bonafide_cm, spoof_cm)
    tdcf = (c0 + c1 * pmiss_cm + c2 * pfa_cm) / (c0 + min(c1, c2))
    i = int(np.argmin(tdcf))
    return TDCFResult(
        "2021-revised", float(tdcf[i]), float(thresholds[i]), float(c0), float(c1), float(c2), op
    )


TDCF_FORMS = {"2019": min_tdcf_2019, "2021": min_tdcf_2021}


#: Names that moved to spoofdet.evaluation.report in 0.2 (importable from here for this release
#: only; imported on first use, since report imports this module).
_MOVED_TO_REPORT = (
    "POLARITY_MARGIN",
    "polarity_check",
    "breakdown",
    "evaluate_table",
    "summarise_models",
    "_column",
    "_extra_field",
    "_group_metrics",
    "_ordered",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_REPORT:
        from spoofdet.evaluation import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
