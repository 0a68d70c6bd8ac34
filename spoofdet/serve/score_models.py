"""Several models scored on the same eval sets, reported the way AMSDF reports M1-M3: per model,
the best and the mean +- std over models, and a vote over them, per set, in one table.

``spoofdet score --model A B C`` scores every set with each model (``OUT/<model>/<length>/...``,
exactly as one model would be scored) and then :func:`compare_models` reads the score files back:

* the clips compared are the selected rows (``--phase``) that **every** model scored (a clip one
  model failed to decode is left out for all and counted: ``n_not_scored_by_all``), so every row
  of the table is computed on the same trials;
* each model's metrics are :func:`spoofdet.evaluation.sets.set_metrics` on those trials (actDCF
  and Cllr None for an uncalibrated model, as in its own ``metrics.json``);
* ``over_models``: :func:`spoofdet.evaluation.report.summarise_models` (best = lowest, highest for
  AUC and the at-threshold metrics);
* ``vote``: :func:`spoofdet.evaluation.report.vote_fusion`, each model voting at its decision
  threshold: the Bayes LLR threshold ``-ln(beta)`` for a calibrated model, else its EER threshold
  on these trials (flagged ``optimistic``: chosen on the test labels).

Writes ``OUT/<length>/models.md`` and ``models.json``; returns the JSON.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from spoofdet.evaluation import sets as eval_sets
from spoofdet.evaluation.report import (
    evaluate_table,
    summarise_models,
    text_models_table,
    vote_fusion,
)
from spoofdet.evaluation.scorefile import read_scores


def _scores_of(result: dict[str, Any]) -> dict[str, float]:
    s = read_scores(result["scores"])
    return dict(zip(s.ids, s.scores.tolist()))


def compare_set(
    es: eval_sets.EvalSet,
    per_model: list[dict[str, Any]],
    labels: list[str],
    calibrated: list[bool],
    phase: str | None,
) -> dict[str, Any] | None:
    """The comparison of one eval set (``per_model``: each model's result for it, in order); None
    for a set without labels or without both classes among the clips every model scored."""
    if any(r.get("metrics") is None or not r.get("scores") for r in per_model):
        return None
    table = eval_sets.read_metadata(es)
    mask, selection = eval_sets.select_rows(table, phase)
    aligned = [eval_sets.align(table, _scores_of(r)) for r in per_model]
    common = mask & np.all(np.isfinite(np.stack(aligned)), axis=0)
    results = []
    for scores, cal in zip(aligned, calibrated):
        m = eval_sets.set_metrics(table, scores, common, calibrated=cal)
        if m is None:
            return None
        results.append(m)
    thresholds = [r["at_threshold"]["threshold"] for r in results]  # Bayes LLR, or raw: EER
    kept = table.filter(pa.array(common))
    fused = vote_fusion([a[common] for a in aligned], thresholds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vote = evaluate_table(fused, kept, threshold=0.5, tables=False)
    vote.update(method="vote", act_dcf=None, cllr=None, vote_thresholds=thresholds)
    vote["at_threshold"].update(threshold_source="vote", optimistic=not all(calibrated))
    return {
        "eval_set": es.name,
        "selection": selection,
        "n_compared": int(common.sum()),
        "n_not_scored_by_all": int((mask & ~common).sum()),
        "models": [{"model": lab, **r} for lab, r in zip(labels, results)],
        "over_models": summarise_models(results),
        "vote": vote,
        "threshold_sources": ["bayes_llr" if cal else "eer (optimistic)" for cal in calibrated],
    }


def compare_models(
    summaries: list[dict[str, Any]],
    labels: list[str],
    sets: list[eval_sets.EvalSet],
    *,
    phase: str | None,
    out: Path,
) -> dict[str, Any]:
    """One comparison per labelled set over the models of ``summaries`` (each the summary of
    :func:`spoofdet.serve.score_sets.run_evaluation` for one model, in ``--model`` order, named
    by ``labels``); writes ``out/models.md`` and ``out/models.json``."""
    calibrated = [bool(s["calibrated"]) for s in summaries]
    compared = []
    for i, es in enumerate(sets):
        c = compare_set(es, [s["sets"][i] for s in summaries], labels, calibrated, phase)
        if c is not None:
            compared.append(c)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "models": labels,
        "protocol": summaries[0]["protocol"],
        "sets": compared,
    }
    (out / "models.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    (out / "models.md").write_text(models_markdown(report))
    report["markdown"], report["json"] = str(out / "models.md"), str(out / "models.json")
    return report


def models_markdown(report: dict[str, Any]) -> str:
    """The table of :func:`compare_models` as text: per set, one block of rows M1..Mn, best,
    mean +- std and the vote."""
    p = report["protocol"]
    lines = [f"# {len(report['models'])} models, {p['length']} protocol", ""]
    for c in report["sets"]:
        dropped = c["n_not_scored_by_all"]
        lines.append(
            f"## {c['eval_set']} ({c['selection']}, {c['n_compared']:,} clips scored by every "
            f"model" + (f"; {dropped:,} left out: not scored by all" if dropped else "") + ")"
        )
        lines.append("```")
        lines += text_models_table(c["models"], c["over_models"], c["vote"], report["models"])
        lines.append("```")
        lines.append(
            "vote thresholds: "
            + ", ".join(
                f"M{i} {t:.4g} ({src})"
                for i, (t, src) in enumerate(
                    zip(c["vote"]["vote_thresholds"], c["threshold_sources"]), start=1
                )
            )
        )
        lines.append("")
    if not report["sets"]:
        lines.append("no labelled set with both classes: nothing to compare")
    return "\n".join(lines) + "\n"
