"""Countermeasure metrics as the ASVspoof evaluation packages define them (numpy only).

Conventions (from :mod:`spoofdet.data.schema`, not imported so that this module needs numpy alone):
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
* :func:`min_tdcf_2019` (legacy form used for 2019 LA) and :func:`min_tdcf_2021` (revised form,
  2021 LA): the tandem DCF with an ASV system whose operating point is its own EER threshold.
* :func:`evaluate_table`: pooled metrics plus breakdowns by attack, codec condition, vocoder
  group, subset and corpus, and a polarity check, for scores aligned with a key table.

Decision rule used wherever a fixed threshold ``t`` is applied (actDCF, the ASV operating
point): a trial is accepted as bona fide (ASV: as target) when ``score >= t``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BONAFIDE = 1  # == spoofdet.data.schema.BONAFIDE (kept literal: this module imports numpy only)
SPOOF = 0

#: Absolute EER gap (fraction) above which negated scores count as "much better".
POLARITY_MARGIN = 0.10


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


# ----------------------------------------------------------------------------- t-DCF


@dataclass(frozen=True)
class AsvScores:
    """Scores of an ASV system on target, non-target and spoof trials (for the t-DCF).

    ``spoof_attack`` optionally names the attack of each spoof trial (same length as ``spoof``),
    which allows a per-attack t-DCF.
    """

    target: np.ndarray
    nontarget: np.ndarray
    spoof: np.ndarray
    spoof_attack: np.ndarray | None = None

    def for_attack(self, attack: str) -> AsvScores:
        if self.spoof_attack is None:
            raise ValueError("these ASV scores carry no attack labels")
        return AsvScores(self.target, self.nontarget, self.spoof[self.spoof_attack == attack])


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


# ----------------------------------------------------------------------------- tables


def polarity_check(
    bonafide: np.ndarray, spoof: np.ndarray, margin: float = POLARITY_MARGIN
) -> tuple[bool, float]:
    """Whether negated scores reach a much lower EER (by more than ``margin``, a fraction).

    Returns:
        ``(suspicious, eer_of_negated_scores)``. Never flips anything: the caller reports it.
    """
    eer, _ = compute_eer(bonafide, spoof)
    eer_neg, _ = compute_eer(
        -np.asarray(bonafide, dtype=np.float64), -np.asarray(spoof, dtype=np.float64)
    )
    return bool(eer_neg < eer - margin), eer_neg


def _column(table: Any, name: str) -> np.ndarray | None:
    """A column of a pyarrow table or a mapping of sequences as an object array (None if absent)."""
    names = table.column_names if hasattr(table, "column_names") else list(table)
    if name not in names:
        return None
    col = table[name]
    values = col.to_pylist() if hasattr(col, "to_pylist") else list(col)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _extra_field(extra: np.ndarray | None, key: str) -> np.ndarray | None:
    if extra is None:
        return None
    out = np.empty(len(extra), dtype=object)
    for i, e in enumerate(extra):
        d = dict(e) if e else {}
        out[i] = d.get(key)
    return out if any(v is not None for v in out) else None


def _group_metrics(
    bona: np.ndarray,
    spoof: np.ndarray,
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    attack: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}
    if bona.size == 0 or spoof.size == 0:
        out.update(eer=None, min_dcf=None)
        return out
    eer, _ = compute_eer(bona, spoof)
    out["eer"] = 100.0 * eer
    out["min_dcf"] = min_dcf(bona, spoof)[0]
    if (
        asv is not None
        and tdcf_form is not None
        and attack is not None
        and asv.spoof_attack is not None
    ):
        sub = asv.for_attack(attack)
        out["min_tdcf"] = (
            TDCF_FORMS[tdcf_form](bona, spoof, sub).min_tdcf if sub.spoof.size else None
        )
    return out


def _ordered(values: np.ndarray) -> list[str]:
    return sorted({v for v in values if v is not None}, key=str)


def breakdown(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    spoof_only: bool,
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per group value.

    Args:
        scores, labels: aligned arrays (labels 1 = bona fide, 0 = spoof).
        groups: the group of each trial (None = no group).
        spoof_only: True for factors that exist only on spoof trials (attack, vocoder group):
            each group's spoof trials are scored against **all** bona fide trials. False for
            conditions both classes pass through (codec, subset, corpus): bona fide and spoof of
            that group only.
        asv, tdcf_form: with ASV scores labelled by attack, per-attack min t-DCF too.
    """
    bona_all = scores[labels == BONAFIDE]
    out: dict[str, dict[str, Any]] = {}
    spoof_groups = groups[labels == SPOOF] if spoof_only else groups
    for g in _ordered(spoof_groups):
        in_g = groups == g
        spoof = scores[in_g & (labels == SPOOF)]
        bona = bona_all if spoof_only else scores[in_g & (labels == BONAFIDE)]
        out[str(g)] = _group_metrics(
            bona, spoof, asv, tdcf_form, attack=str(g) if spoof_only else None
        )
    return out


def evaluate_table(
    scores: Sequence[float] | np.ndarray,
    key_table: Any,
    *,
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    costs: DCFCosts = ASVSPOOF5_COSTS,
    polarity_margin: float = POLARITY_MARGIN,
) -> dict[str, Any]:
    """All metrics for scores aligned row by row with a key table.

    Args:
        scores: one score per key row, higher = more bona fide.
        key_table: a pyarrow table in :data:`spoofdet.data.schema.UTTERANCE_SCHEMA` (or a mapping of
            column name -> sequence) with at least ``label``; rows with a null label are skipped
            and counted. Optional columns drive the breakdowns: ``attack`` and ``vocoder``
            (spoof-only factors vs all bona fide), ``codec`` (named by ``extra['condition']``
            where present, e.g. ``C2``), ``subset`` and ``corpus`` (only when they take more than
            one value).
        asv: ASV scores for the t-DCF; ``tdcf_form`` ``"2019"`` (legacy) or ``"2021"`` (revised).
        polarity_margin: warn when negated scores have an EER lower by more than this fraction.

    Returns:
        A JSON-ready dict: ``eer`` (percent), ``threshold``, ``min_dcf``, ``act_dcf`` (assumes
        LLR scores), ``cllr`` (assumes LLR scores), ``n_bonafide``, ``n_spoof``,
        ``n_unlabelled``, ``polarity_warning``, ``eer_negated`` (percent), ``breakdown``
        (dimension -> group -> metrics with ``eer`` in percent), and with ASV scores ``min_tdcf``
        and ``tdcf`` (form, weights, CM threshold, ASV operating point).

    Raises:
        ValueError: length mismatch, non-finite scores, no bona fide or no spoof rows.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    label_col = _column(key_table, "label")
    if label_col is None:
        raise ValueError("key table has no 'label' column")
    if s.size != label_col.size:
        raise ValueError(
            f"{s.size} scores for {label_col.size} key rows; align the scores with the key first"
        )
    labelled = np.array([v is not None for v in label_col], dtype=bool)
    labels = np.where(labelled, label_col, -1).astype(np.int64)
    s_l, y = s[labelled], labels[labelled]
    bona, spoof = s_l[y == BONAFIDE], s_l[y == SPOOF]
    if bona.size == 0 or spoof.size == 0:
        raise ValueError(
            f"need both classes to evaluate: {bona.size} bona fide and {spoof.size} spoof labelled rows"
        )
    eer, thr = compute_eer(bona, spoof)
    suspicious, eer_neg = polarity_check(bona, spoof, polarity_margin)
    result: dict[str, Any] = {
        "eer": 100.0 * eer,
        "threshold": thr,
        "min_dcf": min_dcf(bona, spoof, costs)[0],
        "act_dcf": act_dcf(bona, spoof, costs),
        "cllr": cllr(bona, spoof),
        "n_bonafide": int(bona.size),
        "n_spoof": int(spoof.size),
        "n_unlabelled": int((~labelled).sum()),
        "polarity_warning": suspicious,
        "eer_negated": 100.0 * eer_neg,
    }
    if suspicious:
        warnings.warn(
            f"negated scores give EER {100 * eer_neg:.2f} % against {100 * eer:.2f} %: the scores look "
            "inverted (higher should mean more bona fide, label 1 = bona fide). Nothing was flipped; "
            "check the model's output index and the score file's polarity.",
            stacklevel=2,
        )
    if asv is not None:
        if tdcf_form not in TDCF_FORMS:
            raise ValueError(
                f"tdcf_form must be one of {list(TDCF_FORMS)} with ASV scores, got {tdcf_form!r}"
            )
        t = TDCF_FORMS[tdcf_form](bona, spoof, asv)
        result["min_tdcf"] = t.min_tdcf
        result["tdcf"] = t.to_dict()

    extra = _column(key_table, "extra")
    condition = _extra_field(extra, "condition")
    dims: dict[str, tuple[np.ndarray | None, bool]] = {
        "attack": (_column(key_table, "attack"), True),
        "vocoder": (_column(key_table, "vocoder"), True),
        "codec": (condition if condition is not None else _column(key_table, "codec"), False),
        "subset": (_column(key_table, "subset"), False),
        "corpus": (_column(key_table, "corpus"), False),
    }
    result["breakdown"] = {}
    for dim, (col, spoof_only) in dims.items():
        if col is None:
            continue
        col = col[labelled]
        values = _ordered(col[y == SPOOF] if spoof_only else col)
        if not values or (not spoof_only and len(values) < 2):
            continue
        result["breakdown"][dim] = breakdown(
            s_l,
            y,
            col,
            spoof_only=spoof_only,
            asv=asv if dim == "attack" else None,
            tdcf_form=tdcf_form if dim == "attack" else None,
        )
    return result


def summarise_models(
    results: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("eer", "min_dcf", "act_dcf", "cllr", "min_tdcf"),
) -> dict[str, Any]:
    """Best (lowest) and mean of each metric over several models' results (AMSDF-style report)."""
    out: dict[str, Any] = {}
    for k in keys:
        vals = [r[k] for r in results if r.get(k) is not None]
        if vals:
            out[k] = {
                "best": float(min(vals)),
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals)),
            }
    return out
