"""Evaluation reports: pooled metrics plus breakdowns for scores aligned with a key table.

:func:`evaluate_table` computes EER, minDCF, actDCF, Cllr (and with ASV scores the t-DCF) of
:mod:`spoofdet.evaluation.metrics` on the labelled rows, a :func:`polarity_check`, and per-group
metrics (:func:`breakdown`) by attack, vocoder group, codec condition, subset and corpus.
:func:`summarise_models` gives the best and mean of each metric over several models. Same
conventions as the metrics (label 1 = bona fide, higher score = more bona fide); numpy only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spoofdet.evaluation.metrics import (
    ASVSPOOF5_COSTS,
    BONAFIDE,
    SPOOF,
    TDCF_FORMS,
    AsvScores,
    DCFCosts,
    act_dcf,
    cllr,
    compute_eer,
    min_dcf,
)

#: Absolute EER gap (fraction) above which negated scores count as "much better".
POLARITY_MARGIN = 0.10


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
    s_l, y, labelled = _labelled(scores, key_table)
    bona, spoof = _both_classes(s_l, y)
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
        result.update(_tdcf(bona, spoof, asv, tdcf_form))
    result["breakdown"] = _breakdowns(key_table, labelled, s_l, y, asv, tdcf_form)
    return result


def _labelled(scores: Any, key_table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, labels)`` of the labelled key rows and the ``labelled`` mask over all rows.

    Raises:
        ValueError: no ``label`` column, or not one score per key row.
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
    return s[labelled], labels[labelled], labelled


def _both_classes(s_l: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(bona fide, spoof)`` scores of the labelled rows; ValueError unless both are present."""
    bona, spoof = s_l[y == BONAFIDE], s_l[y == SPOOF]
    if bona.size == 0 or spoof.size == 0:
        raise ValueError(
            f"need both classes to evaluate: {bona.size} bona fide and {spoof.size} spoof "
            "labelled rows"
        )
    return bona, spoof


def _tdcf(
    bona: np.ndarray, spoof: np.ndarray, asv: AsvScores, tdcf_form: str | None
) -> dict[str, Any]:
    """The ``min_tdcf`` and ``tdcf`` entries of :func:`evaluate_table`."""
    if tdcf_form not in TDCF_FORMS:
        raise ValueError(
            f"tdcf_form must be one of {list(TDCF_FORMS)} with ASV scores, got {tdcf_form!r}"
        )
    t = TDCF_FORMS[tdcf_form](bona, spoof, asv)
    return {"min_tdcf": t.min_tdcf, "tdcf": t.to_dict()}


def _breakdowns(
    key_table: Any,
    labelled: np.ndarray,
    s_l: np.ndarray,
    y: np.ndarray,
    asv: AsvScores | None,
    tdcf_form: str | None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`breakdown` by every dimension the key table has (the ``breakdown`` entry of
    :func:`evaluate_table`); a condition both classes pass needs at least two values."""
    extra = _column(key_table, "extra")
    condition = _extra_field(extra, "condition")
    dims: dict[str, tuple[np.ndarray | None, bool]] = {
        "attack": (_column(key_table, "attack"), True),
        "vocoder": (_column(key_table, "vocoder"), True),
        "codec": (condition if condition is not None else _column(key_table, "codec"), False),
        "subset": (_column(key_table, "subset"), False),
        "corpus": (_column(key_table, "corpus"), False),
    }
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dim, (col, spoof_only) in dims.items():
        if col is None:
            continue
        col = col[labelled]
        values = _ordered(col[y == SPOOF] if spoof_only else col)
        if not values or (not spoof_only and len(values) < 2):
            continue
        out[dim] = breakdown(
            s_l,
            y,
            col,
            spoof_only=spoof_only,
            asv=asv if dim == "attack" else None,
            tdcf_form=tdcf_form if dim == "attack" else None,
        )
    return out


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
