"""Evaluation reports: pooled metrics plus breakdowns for scores aligned with a key table.

:func:`evaluate_table` computes EER, minDCF, actDCF, Cllr, AUC (and with ASV scores the t-DCF) of
:mod:`spoofdet.evaluation.metrics` on the labelled rows, accuracy/precision/recall/F1 at a stated
threshold, a :func:`polarity_check`, per-group metrics (:func:`breakdown`) by attack, vocoder
group, codec condition, subset and corpus, attack x codec tables (:func:`breakdown_2d`) and, on
request, bootstrap intervals (:mod:`spoofdet.evaluation.bootstrap`). :func:`summarise_models`
gives the best, mean and std of each metric over several models. Same conventions as the
metrics (label 1 = bona fide, higher score = more bona fide); numpy only.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spoofdet.evaluation.bootstrap import BootstrapSpec, bootstrap_intervals
from spoofdet.evaluation.metrics import (
    ASVSPOOF5_COSTS,
    BONAFIDE,
    SPOOF,
    TDCF_FORMS,
    AsvScores,
    DCFCosts,
    act_dcf,
    auc,
    cllr,
    compute_eer,
    min_dcf,
    threshold_metrics,
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
    *,
    condition: str | None = None,
    costs: DCFCosts = ASVSPOOF5_COSTS,
    boot: BootstrapSpec | None = None,
    bona_speakers: np.ndarray | None = None,
    spoof_speakers: np.ndarray | None = None,
) -> dict[str, Any]:
    """One group's metrics: counts, EER (percent), minDCF, [min t-DCF], actDCF, Cllr, AUC, [ci].

    With ASV scores and a t-DCF form, ``attack`` keeps the ASV spoof trials of that attack and
    ``condition`` the ASV target, non-target and spoof trials of that codec condition (both may
    be given: an attack x codec cell); the min t-DCF is None when a class of ASV trials is left
    empty.
    """
    out: dict[str, Any] = {"n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}
    if bona.size == 0 or spoof.size == 0:
        out.update(eer=None, min_dcf=None, act_dcf=None, cllr=None, auc=None)
        return out
    eer, _ = compute_eer(bona, spoof)
    out["eer"] = 100.0 * eer
    out["min_dcf"] = min_dcf(bona, spoof, costs)[0]
    sub = _asv_subset(asv, tdcf_form, attack, condition)
    if sub is not None:
        out["min_tdcf"] = TDCF_FORMS[tdcf_form](bona, spoof, sub).min_tdcf if sub.complete else None
    out["act_dcf"] = act_dcf(bona, spoof, costs)
    out["cllr"] = cllr(bona, spoof)
    out["auc"] = auc(bona, spoof)
    if boot is not None:
        out["ci"] = bootstrap_intervals(
            bona,
            spoof,
            boot,
            bona_speakers=bona_speakers,
            spoof_speakers=spoof_speakers,
            costs=costs,
        )
    return out


def _asv_subset(
    asv: AsvScores | None, tdcf_form: str | None, attack: str | None, condition: str | None
) -> AsvScores | None:
    """The ASV trials of a group (None: no t-DCF for it: no ASV scores, or no labels to filter by)."""
    if asv is None or tdcf_form is None or (attack is None and condition is None):
        return None
    if attack is not None and asv.spoof_attack is None:
        return None
    if condition is not None and not asv.has_conditions:
        return None
    sub = asv if condition is None else asv.for_condition(condition)
    return sub if attack is None else sub.for_attack(attack)


def _ordered(values: np.ndarray) -> list[str]:
    return sorted({v for v in values if v is not None}, key=str)


#: Breakdown dimensions that exist on spoof trials only: each group's spoof trials are scored
#: against all bona fide trials. The others (codec, subset, corpus) are conditions both classes
#: pass: each group's own bona fide and spoof trials.
SPOOF_ONLY_DIMS = ("attack", "vocoder")
#: Every breakdown dimension, in report order.
DIMENSIONS = ("attack", "vocoder", "codec", "subset", "corpus")


def breakdown_column(key_table: Any, dim: str) -> np.ndarray | None:
    """The per-row group of breakdown dimension ``dim`` in a key table (pyarrow table or mapping
    of columns): ``codec`` is ``extra['condition']`` where present (e.g. ``C2``), else the
    ``codec`` column; the others are the column of that name. None when the table has none."""
    if dim == "codec":
        condition = _extra_field(_column(key_table, "extra"), "condition")
        if condition is not None:
            return condition
    return _column(key_table, dim)


def group_masks(
    labels: np.ndarray, groups: np.ndarray, *, spoof_only: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Group value -> ``(bona fide mask, spoof mask)`` over the trials, as every breakdown (and
    per-group DET curve) groups them: for a ``spoof_only`` factor, the groups seen on spoof
    trials, each with **all** bona fide trials; for a condition, the groups seen on labelled
    trials, each with its own bona fide and spoof trials (a group may lack a class)."""
    is_bona, is_spoof = labels == BONAFIDE, labels == SPOOF
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for g in _ordered(groups[is_spoof] if spoof_only else groups[is_bona | is_spoof]):
        in_g = groups == g
        out[str(g)] = (is_bona if spoof_only else in_g & is_bona, in_g & is_spoof)
    return out


def breakdown(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    spoof_only: bool,
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    costs: DCFCosts = ASVSPOOF5_COSTS,
    boot: BootstrapSpec | None = None,
    speakers: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics per group value.

    Args:
        scores, labels: aligned arrays (labels 1 = bona fide, 0 = spoof).
        groups: the group of each trial (None = no group).
        spoof_only: True for factors that exist only on spoof trials (attack, vocoder group):
            each group's spoof trials are scored against **all** bona fide trials. False for
            conditions both classes pass through (codec, subset, corpus): bona fide and spoof of
            that group only.
        asv, tdcf_form: with ASV scores, min t-DCF per group: per attack (spoof-only factor, ASV
            scores labelled by attack: spoof ASV trials of that attack, all target/non-target) or
            per condition (ASV scores labelled by condition: all three ASV classes of that
            condition, as the official 2021 LA package does).
        boot, speakers: bootstrap intervals per group (``ci``), by speaker when ``speakers`` (the
            speaker of each trial) is given.

    Returns:
        group -> ``{n_bonafide, n_spoof, eer (percent), min_dcf, [min_tdcf], act_dcf, cllr,
        auc, [ci]}`` (metrics None when the group lacks a class).
    """
    out: dict[str, dict[str, Any]] = {}
    for g, (b_mask, s_mask) in group_masks(labels, groups, spoof_only=spoof_only).items():
        out[g] = _group_metrics(
            scores[b_mask],
            scores[s_mask],
            asv,
            tdcf_form,
            attack=g if spoof_only else None,
            condition=None if spoof_only else g,
            costs=costs,
            boot=boot,
            bona_speakers=None if speakers is None else speakers[b_mask],
            spoof_speakers=None if speakers is None else speakers[s_mask],
        )
    return out


def breakdown_2d(
    scores: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    costs: DCFCosts = ASVSPOOF5_COSTS,
) -> dict[str, dict[str, dict[str, Any]]]:
    """A two-way table: a spoof-only factor (``rows``, e.g. attack) by a condition both classes
    pass through (``cols``, e.g. codec).

    Cell ``[a][c]`` scores the spoof trials of ``a`` in condition ``c`` against the bona fide
    trials of ``c`` (the official 2021 decomposition). Every row value meets every column value;
    a cell without spoof (or bona fide) trials keeps its counts with ``eer``/``min_dcf`` None.
    With ASV scores labelled by attack and condition, cells also get ``min_tdcf`` (ASV target and
    non-target of ``c``, ASV spoof of ``a`` in ``c``).

    Returns:
        row -> col -> ``{eer (percent), min_dcf, n_bonafide, n_spoof, [min_tdcf]}``.
    """
    is_spoof = labels == SPOOF
    col_values = _ordered(cols)
    bona_idx: dict[Any, list[int]] = {c: [] for c in col_values}
    cell_idx: dict[tuple[Any, Any], list[int]] = {}
    for i, (y, r, c) in enumerate(zip(labels, rows, cols)):
        if c is None:
            continue
        if y == BONAFIDE:
            bona_idx[c].append(i)
        elif y == SPOOF and r is not None:
            cell_idx.setdefault((r, c), []).append(i)
    with_tdcf = (
        asv is not None
        and tdcf_form is not None
        and asv.has_conditions
        and asv.spoof_attack is not None
    )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in _ordered(rows[is_spoof]):
        row: dict[str, dict[str, Any]] = {}
        for c in col_values:
            bona = scores[np.asarray(bona_idx[c], dtype=np.int64)]
            spoof = scores[np.asarray(cell_idx.get((r, c), []), dtype=np.int64)]
            cell: dict[str, Any] = {"n_bonafide": int(bona.size), "n_spoof": int(spoof.size)}
            if bona.size and spoof.size:
                cell["eer"] = 100.0 * compute_eer(bona, spoof)[0]
                cell["min_dcf"] = min_dcf(bona, spoof, costs)[0]
                if with_tdcf:
                    sub = asv.for_condition(str(c)).for_attack(str(r))  # type: ignore[union-attr]
                    cell["min_tdcf"] = (
                        TDCF_FORMS[tdcf_form](bona, spoof, sub).min_tdcf  # type: ignore[index]
                        if sub.complete
                        else None
                    )
            else:
                cell.update(eer=None, min_dcf=None)
            row[str(c)] = cell
        out[str(r)] = row
    return out


def evaluate_table(
    scores: Sequence[float] | np.ndarray,
    key_table: Any,
    *,
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    costs: DCFCosts = ASVSPOOF5_COSTS,
    polarity_margin: float = POLARITY_MARGIN,
    threshold: float | str | None = None,
    positive: str = "bonafide",
    bootstrap: BootstrapSpec | None = None,
    tables: bool = True,
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
            ASV scores labelled by codec condition (2021 LA) also give a min t-DCF per codec.
        polarity_margin: warn when negated scores have an EER lower by more than this fraction.
        threshold, positive: the decision threshold of ``at_threshold`` (:func:`resolve_threshold`:
            None = the Bayes LLR threshold of ``costs``, ``"eer"``, or a number) and the class
            counted positive there (``"bonafide"`` as Speech-DF-Arena, or ``"spoof"``).
        bootstrap: percentile intervals (``ci``) pooled and per breakdown group, resampling within
            class, by speaker when every labelled row has a ``speaker``.
        tables: compute ``breakdown_2d`` (attack/vocoder x codec tables).

    Returns:
        A JSON-ready dict: ``eer`` (percent), ``threshold``, ``min_dcf``, ``act_dcf`` (assumes
        LLR scores), ``cllr`` (assumes LLR scores), ``auc``, ``at_threshold`` (see
        :func:`at_threshold`), ``n_bonafide``, ``n_spoof``, ``n_unlabelled``,
        ``polarity_warning``, ``eer_negated`` (percent), ``breakdown`` (dimension -> group ->
        metrics of :func:`breakdown`), with ``tables`` ``breakdown_2d`` (``"attack x codec"`` ->
        attack -> codec -> cell of :func:`breakdown_2d`; empty without both dimensions), with ASV
        scores ``min_tdcf`` and ``tdcf`` (form, weights, CM threshold, ASV operating point), and
        with ``bootstrap`` ``bootstrap`` (``n``, ``seed``, ``ci``, ``unit`` trial|speaker,
        ``method``) and ``ci`` (metric -> ``[low, high]``, EER in percent; also in every
        breakdown group).

    Raises:
        ValueError: length mismatch, non-finite scores, no bona fide or no spoof rows, a bad
            threshold or positive class.
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
        "auc": auc(bona, spoof),
        "at_threshold": at_threshold(bona, spoof, threshold, positive, costs, eer_threshold=thr),
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
    speakers = None
    if bootstrap is not None:
        speakers = _speakers(key_table, labelled)
        result["bootstrap"] = {
            "n": bootstrap.n,
            "seed": bootstrap.seed,
            "ci": bootstrap.ci,
            "unit": "trial" if speakers is None else "speaker",
            "method": "percentile; bona fide and spoof resampled separately",
        }
        result["ci"] = bootstrap_intervals(
            bona,
            spoof,
            bootstrap,
            bona_speakers=None if speakers is None else speakers[y == BONAFIDE],
            spoof_speakers=None if speakers is None else speakers[y == SPOOF],
            costs=costs,
        )
    result["breakdown"] = _breakdowns(
        key_table, labelled, s_l, y, asv, tdcf_form, costs, bootstrap, speakers
    )
    if tables:
        result["breakdown_2d"] = _tables(key_table, labelled, s_l, y, asv, tdcf_form, costs)
    return result


#: ``threshold_source`` of :func:`at_threshold`, by how the threshold was chosen.
THRESHOLD_SOURCES = {"bayes_llr": "Bayes LLR threshold -ln(beta)", "eer": "EER", "given": "given"}


def resolve_threshold(
    threshold: float | str | None, costs: DCFCosts, eer_threshold: float
) -> tuple[float, str]:
    """``(value, source)``: None -> the Bayes LLR threshold ``-ln(beta)`` of ``costs``
    (``bayes_llr``, meant for calibrated LLR scores), ``"eer"`` -> the EER threshold of the
    scores being evaluated (``eer``, optimistic: chosen on the test scores), a number -> itself
    (``given``; a numeric string is accepted too).

    Raises:
        ValueError: anything else, or a non-finite number.
    """
    if threshold is None:
        return costs.llr_threshold, "bayes_llr"
    if isinstance(threshold, str):
        if threshold.strip().lower() == "eer":
            return float(eer_threshold), "eer"
        try:
            threshold = float(threshold)
        except ValueError:
            raise ValueError(f"threshold must be a number or 'eer', got {threshold!r}") from None
    value = float(threshold)
    if not np.isfinite(value):
        raise ValueError(f"threshold must be a finite number or 'eer', got {threshold!r}")
    return value, "given"


def at_threshold(
    bona: np.ndarray,
    spoof: np.ndarray,
    threshold: float | str | None = None,
    positive: str = "bonafide",
    costs: DCFCosts = ASVSPOOF5_COSTS,
    *,
    eer_threshold: float | None = None,
) -> dict[str, Any]:
    """The ``at_threshold`` entry of :func:`evaluate_table`: accuracy, precision, recall, F1 and
    the confusion counts at a stated threshold (bona fide when ``score >= threshold``).

    Returns:
        ``{threshold, threshold_source (bayes_llr|eer|given), positive, accuracy, precision,
        recall, f1, tp, fp, tn, fn, optimistic, assumes_llr}``: ``optimistic`` is True for the
        EER threshold of these very scores, ``assumes_llr`` for the Bayes LLR threshold.
    """
    if eer_threshold is None:
        eer_threshold = compute_eer(bona, spoof)[1]
    value, source = resolve_threshold(threshold, costs, eer_threshold)
    m = threshold_metrics(bona, spoof, value, positive)
    return {
        "threshold": m.pop("threshold"),
        "threshold_source": source,
        **m,
        "optimistic": source == "eer",
        "assumes_llr": source == "bayes_llr",
    }


def _speakers(key_table: Any, labelled: np.ndarray) -> np.ndarray | None:
    """The ``speaker`` of each labelled row, or None (trial bootstrap) unless every one has one."""
    col = _column(key_table, "speaker")
    if col is None:
        return None
    col = col[labelled]
    if any(v is None or str(v).strip() in ("", "-") for v in col):
        return None
    return col


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
    costs: DCFCosts = ASVSPOOF5_COSTS,
    boot: BootstrapSpec | None = None,
    speakers: np.ndarray | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`breakdown` by every dimension the key table has (the ``breakdown`` entry of
    :func:`evaluate_table`); a condition both classes pass needs at least two values."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for dim, (col, spoof_only) in _dimensions(key_table, labelled).items():
        if col is None:
            continue
        values = _ordered(col[y == SPOOF] if spoof_only else col)
        if not values or (not spoof_only and len(values) < 2):
            continue
        with_asv = dim in ("attack", "codec")
        out[dim] = breakdown(
            s_l,
            y,
            col,
            spoof_only=spoof_only,
            asv=asv if with_asv else None,
            tdcf_form=tdcf_form if with_asv else None,
            costs=costs,
            boot=boot,
            speakers=speakers,
        )
    return out


def _dimensions(key_table: Any, labelled: np.ndarray) -> dict[str, tuple[np.ndarray | None, bool]]:
    """Breakdown dimension -> (its value on each labelled row or None, spoof-only factor?).
    The codec dimension is named by ``extra['condition']`` where present (e.g. ``C2``)."""
    dims = {d: (breakdown_column(key_table, d), d in SPOOF_ONLY_DIMS) for d in DIMENSIONS}
    return {k: (None if c is None else c[labelled], so) for k, (c, so) in dims.items()}


def _tables(
    key_table: Any,
    labelled: np.ndarray,
    s_l: np.ndarray,
    y: np.ndarray,
    asv: AsvScores | None,
    tdcf_form: str | None,
    costs: DCFCosts,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """The ``breakdown_2d`` entry of :func:`evaluate_table`: ``"attack x codec"`` and
    ``"vocoder x codec"`` tables where the key has both dimensions (the codec with at least two
    values among the labelled rows, as in the one-way breakdown)."""
    dims = _dimensions(key_table, labelled)
    codec = dims["codec"][0]
    if codec is None or len(_ordered(codec)) < 2:
        return {}
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for dim in ("attack", "vocoder"):
        col = dims[dim][0]
        if col is None or not _ordered(col[y == SPOOF]):
            continue
        out[f"{dim} x codec"] = breakdown_2d(
            s_l,
            y,
            col,
            codec,
            asv=asv if dim == "attack" else None,
            tdcf_form=tdcf_form if dim == "attack" else None,
            costs=costs,
        )
    return out


#: Metrics of :func:`summarise_models` for which higher is better (best = max); lower otherwise.
HIGHER_IS_BETTER = ("auc", "accuracy", "precision", "recall", "f1")
#: Metrics of :func:`summarise_models`: top-level keys, then the ``at_threshold`` ones.
SUMMARY_KEYS = ("eer", "min_dcf", "act_dcf", "cllr", "min_tdcf", "auc")
AT_THRESHOLD_KEYS = ("accuracy", "precision", "recall", "f1")


def summarise_models(
    results: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = SUMMARY_KEYS + AT_THRESHOLD_KEYS,
) -> dict[str, Any]:
    """Best, mean and std of each metric over several models' results (AMSDF-style report).

    ``best`` is the lowest value, except for :data:`HIGHER_IS_BETTER` metrics (AUC and the
    at-threshold metrics), where it is the highest. :data:`AT_THRESHOLD_KEYS` are read from each
    result's ``at_threshold``. A metric missing (or None) in every result is left out; ``n`` says
    how many results had it.
    """
    out: dict[str, Any] = {}
    for k in keys:
        vals = []
        for r in results:
            src = (r.get("at_threshold") or {}) if k in AT_THRESHOLD_KEYS else r
            if src.get(k) is not None:
                vals.append(src[k])
        if vals:
            out[k] = {
                "best": float(max(vals) if k in HIGHER_IS_BETTER else min(vals)),
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals)),
                "n": len(vals),
            }
    return out


# ----------------------------------------------------------------------------- fusion


def vote_fusion(scores: Sequence[np.ndarray], thresholds: Sequence[float]) -> np.ndarray:
    """Majority-vote fusion of several models' aligned scores.

    Model ``m`` votes bona fide on a trial when its score is ``>= thresholds[m]``. The fused score
    is the share of bona fide votes, ``v / M``; a tie (``v / M`` exactly 1/2, M even) is broken
    by the mean score: it stays 1/2 (bona fide) when the mean of the models' scores is at or
    above the mean of their thresholds (the threshold itself when they share one), and becomes
    ``1/2 - 1/(2M)`` (spoof, between the tie and the next lower level) otherwise. Deciding
    ``fused >= 1/2`` is then the majority vote; the fused score still ranks trials (M + 2
    levels), so EER and minDCF stay defined, but actDCF and Cllr are meaningless for it.

    Raises:
        ValueError: fewer than two models, misaligned scores, a threshold per model missing.
    """
    s = np.stack([np.asarray(x, dtype=np.float64) for x in scores])
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if s.shape[0] < 2:
        raise ValueError(f"vote fusion needs at least two models, got {s.shape[0]}")
    if t.size != s.shape[0]:
        raise ValueError(f"vote fusion: {t.size} thresholds for {s.shape[0]} models")
    n_models = s.shape[0]
    votes = (s >= t[:, None]).sum(axis=0)
    fused = votes / n_models
    tie = 2 * votes == n_models
    lost = tie & (s.mean(axis=0) < t.mean())
    fused[lost] = 0.5 - 0.5 / n_models
    return fused


# ----------------------------------------------------------------------------- text


def _num(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _interval(ci: Mapping[str, Any], key: str, spec: str) -> str:
    lo, hi = ci[key]
    return f"[{format(lo, spec)}, {format(hi, spec)}]"


def text_metrics(r: Mapping[str, Any]) -> list[str]:
    """Report lines for the AUC, the at-threshold metrics and the bootstrap intervals of an
    :func:`evaluate_table` result (intervals as ``EER 3.21 % [2.95, 3.50]``)."""
    lines = []
    a = r.get("at_threshold")
    if a is not None:
        how = {
            "bayes_llr": "Bayes LLR threshold -ln(beta), assumes LLR scores",
            "eer": "EER threshold of these scores: optimistic",
            "given": "given",
            "vote": "majority of votes",
        }.get(a["threshold_source"], a["threshold_source"])
        lines.append(
            f"  AUC {r['auc']:.4f}   at threshold {a['threshold']:.6g} ({how}; positive "
            f"{a['positive']}): accuracy {100 * a['accuracy']:.2f} %  precision "
            f"{_num(a['precision'], '.4f')}  recall {a['recall']:.4f}  F1 {a['f1']:.4f}  "
            f"(tp {a['tp']:,}, fp {a['fp']:,}, tn {a['tn']:,}, fn {a['fn']:,})"
        )
    if "ci" in r and "bootstrap" in r:
        b, ci = r["bootstrap"], r["ci"]
        lines.append(
            f"  {100 * b['ci']:g} % bootstrap intervals ({b['n']:,} replicates by {b['unit']}, "
            f"seed {b['seed']}): EER {r['eer']:.2f} % {_interval(ci, 'eer', '.2f')}   "
            f"minDCF {r['min_dcf']:.4f} {_interval(ci, 'min_dcf', '.4f')}   "
            f"actDCF {r['act_dcf']:.4f} {_interval(ci, 'act_dcf', '.4f')}   "
            f"Cllr {r['cllr']:.4f} {_interval(ci, 'cllr', '.4f')}   "
            f"AUC {r['auc']:.4f} {_interval(ci, 'auc', '.4f')}"
        )
    return lines


def text_group(name: str, g: Mapping[str, Any]) -> str:
    """One breakdown group as a report line (EER with its interval when bootstrapped)."""
    eer = "EER     n/a" if g.get("eer") is None else f"EER {g['eer']:7.3f} %"
    if g.get("ci"):
        eer += f" {_interval(g['ci'], 'eer', '.2f')}"
    tdcf = f"  min t-DCF {_num(g['min_tdcf'], '.4f')}" if "min_tdcf" in g else ""
    return (
        f"    {name:<34} {eer}  minDCF {_num(g.get('min_dcf'), '.4f')}{tdcf}"
        f"  actDCF {_num(g.get('act_dcf'), '.4f')}  Cllr {_num(g.get('cllr'), '.4f')}"
        f"  AUC {_num(g.get('auc'), '.4f')}  ({g['n_bonafide']:,} bona fide, {g['n_spoof']:,} spoof)"
    )


def text_tables(tables: Mapping[str, Any]) -> list[str]:
    """The ``breakdown_2d`` tables as compact text: rows (attacks) by columns (codecs), EER %
    (``-`` where a cell lacks a class)."""
    lines = []
    for name, table in tables.items():
        if not table:
            continue
        row_dim, col_dim = name.split(" x ")
        cols = list(next(iter(table.values())))
        width = max(7, *(len(c) for c in cols))
        label = max(len(row_dim), *(len(r) for r in table))
        lines.append(
            f"  {name} (EER %, spoof of each {row_dim} in the {col_dim} vs bona fide of that {col_dim}):"
        )
        lines.append("    " + " " * label + "".join(f" {c:>{width}}" for c in cols))
        for r, row in table.items():
            cells = "".join(
                f" {('-' if row[c]['eer'] is None else format(row[c]['eer'], '.2f')):>{width}}"
                for c in cols
            )
            lines.append(f"    {r:<{label}}{cells}")
    return lines


#: Columns of :func:`text_models_table`: (header, key in the result, format).
MODEL_COLUMNS = (
    ("EER %", "eer", ".3f"),
    ("minDCF", "min_dcf", ".4f"),
    ("actDCF", "act_dcf", ".4f"),
    ("Cllr", "cllr", ".4f"),
    ("AUC", "auc", ".4f"),
    ("F1", "f1", ".4f"),
    ("min t-DCF", "min_tdcf", ".4f"),
)


def text_models_table(
    results: Sequence[Mapping[str, Any]],
    over_models: Mapping[str, Any],
    fusion: Mapping[str, Any] | None,
    names: Sequence[str],
) -> list[str]:
    """One table over several models: rows M1..Mn (named), best, mean +- std and the fusion;
    columns EER, minDCF, actDCF, Cllr, AUC, F1 (at the stated threshold), min t-DCF when
    present. Best is the lowest value, the highest for AUC and F1."""
    cols = [c for c in MODEL_COLUMNS if c[1] != "min_tdcf" or c[1] in over_models]

    def get(r: Mapping[str, Any], key: str) -> Any:
        return (r.get("at_threshold") or {}).get(key) if key == "f1" else r.get(key)

    rows: list[tuple[str, list[str]]] = []
    for i, (r, name) in enumerate(zip(results, names), start=1):
        rows.append((f"M{i} {name}", [_num(get(r, k), spec) for _, k, spec in cols]))
    rows.append(("best", [_num(over_models.get(k, {}).get("best"), spec) for _, k, spec in cols]))
    rows.append(
        (
            "mean ± std",
            [
                f"{format(over_models[k]['mean'], spec)} ± {format(over_models[k]['std'], spec)}"
                if k in over_models
                else "n/a"
                for _, k, spec in cols
            ],
        )
    )
    if fusion is not None:
        rows.append(
            (f"fusion ({fusion['method']})", [_num(get(fusion, k), spec) for _, k, spec in cols])
        )
    label = max(len(r[0]) for r in rows)
    widths = [max(len(h), *(len(r[1][j]) for r in rows)) for j, (h, _, _) in enumerate(cols)]
    lines = ["  " + " " * label + "".join(f"  {h:>{w}}" for (h, _, _), w in zip(cols, widths))]
    for name, cells in rows:
        lines.append(f"  {name:<{label}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)))
    return lines
