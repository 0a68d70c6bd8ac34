"""Score eval sets with a resolved model: score files, metrics, plots, cross-dataset table, MLflow.

The library half of ``spoofdet score`` (``ray_jobs/score.py``) and ``spoofdet promote``
(``ray_jobs/promote.py``); the jobs parse arguments, start Ray and print. Per eval set, in
``OUT/<length>/<set>/``:

- a labelled shard folder: ``scores.txt`` (``<utt_id> <score>``, written whole), ``metrics.json``
  (metrics over the rows evaluated: phase ``eval`` where a set has phases), ``det.png`` (named
  after the model; the Bayes LLR threshold's operating point when calibrated),
  ``det_by_<dim>.png`` per breakdown of the metrics (attack, codec, ...: a curve per group),
  ``hist.png``;
- a folder of audio (unlabelled): ``scores.csv`` (``path,score,llr,decision,error``, a row per
  file, failures included), ``metrics.json`` and ``hist.png``.

Scores are calibrated LLRs when the model stores a calibration, else raw scores (``score_type``
says which). ``OUT/<length>/cross_dataset.{md,json}`` has one row per set, saying how many of the
rows evaluated were scored (``scored 198 of 200 (2 failed to decode)``), and
``OUT/<length>/summary.json`` what ``--json`` prints. Every set's ids are checked to be writable
before anything is scored (:func:`spoofdet.evaluation.sets.check_ids`). Needs a running Ray to
score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from spoofdet.data.corpora import prepare_folder
from spoofdet.errors import SpoofdetError
from spoofdet.evaluation import sets as eval_sets
from spoofdet.evaluation.plots import plot_breakdown_dets, plot_det, plot_histogram
from spoofdet.evaluation.protocols import (
    DEFAULT_HOP,
    LENGTHS,
    WINDOW,
    check_length,
    describe_protocol,
)
from spoofdet.evaluation.scorefile import write_scores
from spoofdet.evaluation.sets import EvalSet, cross_dataset_table
from spoofdet.serve import batch as inference
from spoofdet.serve.predict import Prediction, decide, write_csv
from spoofdet.serve.registry import DECISION_THRESHOLD, read_calibration, version_tags


def score_clips(es: EvalSet, ref: Any, *, length: str, hop: int, opts: dict[str, Any]) -> Any:
    """Per clip of the eval set, its raw score (mean over windows) or why it failed (Ray Data)."""
    if es.kind == "shards":
        return inference.score_dataset(
            inference.shard_dataset(es.path), ref, files=False, length=length, hop=hop, **opts
        )
    table = prepare_folder(es.path, check_audio=False).table
    return inference.score_dataset(
        inference.folder_dataset(table), ref, files=True, length=length, hop=hop, **opts
    )


def align_clips(es: EvalSet, meta: Any, clips: Any) -> np.ndarray:
    """The raw clip scores (``ClipScores`` of :func:`score_clips`) of ``es`` in metadata order
    (NaN for clips that failed to decode).

    Raises:
        SpoofdetError: a metadata row with neither a score nor a decoding error, or a score of a
            clip the metadata does not list (the shards and metadata.parquet disagree).
    """
    scores = eval_sets.align(meta, clips.raw)
    ids = meta["utt_id"].to_pylist()
    unknown = sorted(set(clips.raw) - set(ids))
    missing = [u for u, s in zip(ids, scores) if not np.isfinite(s) and u not in clips.errors]
    if unknown or missing:
        raise SpoofdetError(
            f"{es.name}: {len(missing)} metadata row(s) got no score (e.g. {missing[:3]}) and "
            f"{len(unknown)} score(s) match no row (e.g. {unknown[:3]}); the shards and "
            f"{es.path}/metadata.parquet disagree: re-run `spoofdet prepare` for this set"
        )
    return scores


def score_shard_set(
    es: EvalSet,
    clips: Any,
    to_score: Any,
    *,
    calibrated: bool,
    length: str,
    phase: str | None,
    out: Path,
    result: dict[str, Any],
    thresholds: dict[str, float],
    model: str = "",
) -> tuple[Any, Any]:
    """A labelled shard folder: ``scores.txt``, metrics over the rows evaluated and the DET plots
    (into ``result`` and ``thresholds``); returns the scores and labels for the histogram.

    The DET plots are named after ``model``: ``det.png`` (pooled) and, per breakdown dimension of
    the metrics (attack, codec, ...), ``det_by_<dim>.png`` with a curve per group; calibrated
    scores also mark the operating point of the Bayes LLR threshold."""
    meta = eval_sets.read_metadata(es)
    scores = to_score(align_clips(es, meta, clips))
    ids = meta["utt_id"].to_pylist()
    ok = np.isfinite(scores)
    write_scores(out / "scores.txt", [u for u, k in zip(ids, ok) if k], scores[ok])
    mask, result["selection"] = eval_sets.select_rows(meta, phase)
    metrics = eval_sets.set_metrics(meta, scores, mask, calibrated=calibrated)
    failed = np.asarray([u in clips.errors for u in ids], dtype=bool)
    result.update(
        n_evaluated_rows=int(mask.sum()),
        n_evaluated_scored=int((mask & ok).sum()),
        n_evaluated_failed=int((mask & failed).sum()),
    )
    result.update(
        scores=str(out / "scores.txt"),
        quarantined_in_shards=eval_sets.quarantined(es),
        metrics=metrics,
        fingerprint=eval_sets.fingerprint(meta),
    )
    labels = np.asarray([v if v is not None else -1 for v in meta["label"].to_pylist()])
    use = mask & ok
    if metrics is not None:
        thresholds["EER threshold"] = metrics["threshold"]
        op = ("Bayes LLR threshold", DECISION_THRESHOLD) if calibrated else None
        result["det_png"] = str(
            plot_det(
                scores[use & (labels == 1)],
                scores[use & (labels == 0)],
                out / "det.png",
                name=model or es.name,
                threshold=op,
                title=f"{model or es.name}: {es.name}, {length}",
            )
        )
        by = plot_breakdown_dets(
            scores[use],
            meta.filter(use),
            list(metrics["breakdown"]),
            out,
            name=model or es.name,
            threshold=op,
            context=f"{es.name}, {length}",
        )
        result.update({f"{k}_png": str(p) for k, p in by.items()})
    return scores[use], labels[use]


def score_folder_set(
    clips: Any, to_score: Any, cal: Any, out: Path, result: dict[str, Any]
) -> tuple[Any, None]:
    """A folder of audio (unlabelled): ``scores.csv`` with a row per file, failures included
    (into ``result``); returns the scores for the histogram."""
    ids = sorted(set(clips.raw) | set(clips.errors))
    hist_scores = to_score([clips.raw[u] for u in ids if u in clips.raw])
    llr = dict(zip([u for u in ids if u in clips.raw], hist_scores))
    write_csv(
        [
            Prediction(u, error=clips.errors[u])
            if u in clips.errors
            else Prediction(
                u,
                clips.raw[u],
                llr[u] if cal else None,
                decide(llr[u], DECISION_THRESHOLD) if cal else None,
                n_windows=clips.n_windows[u],
            )
            for u in ids
        ],
        out / "scores.csv",
    )
    result.update(
        selection="all files",
        scores=str(out / "scores.csv"),
        metrics=None,
        n_evaluated_rows=len(ids),
        n_evaluated_scored=len(clips.raw),
        n_evaluated_failed=len(clips.errors),
    )
    return hist_scores, None


def set_header(
    es: EvalSet, clips: Any, *, calibrated: bool, length: str, hop: int, window: int
) -> dict[str, Any]:
    """The first keys of an eval set's result: what was scored, how, and what failed."""
    return {
        "eval_set": es.name,
        "path": es.path,
        "kind": es.kind,
        "protocol": describe_protocol(length, window=window, hop=hop),
        "score_type": "llr" if calibrated else "raw",
        "n_scored": len(clips.raw),
        "n_failed": len(clips.errors),
        "failed": dict(list(clips.errors.items())[:20]),
    }


def evaluate_set(
    es: EvalSet,
    ref: Any,
    *,
    calibration: Any,
    length: str,
    hop: int,
    phase: str | None,
    out: Path,
    opts: dict[str, Any],
) -> dict[str, Any]:
    """Score one eval set and write its score file, metrics JSON and plots."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clips = score_clips(es, ref, length=length, hop=hop, opts=opts)
    cal = calibration
    to_score = (
        (lambda raw: cal.apply(raw))
        if cal is not None
        else (lambda raw: np.asarray(raw, dtype=np.float64))
    )
    window = opts.get("window", WINDOW)
    result = set_header(
        es, clips, calibrated=cal is not None, length=length, hop=hop, window=window
    )
    thresholds = {"decision threshold (LLR)": DECISION_THRESHOLD} if cal is not None else {}
    if es.kind == "shards":
        hist_scores, hist_labels = score_shard_set(
            es,
            clips,
            to_score,
            calibrated=cal is not None,
            length=length,
            phase=phase,
            out=out,
            result=result,
            thresholds=thresholds,
            model=ref.label,
        )
    else:
        hist_scores, hist_labels = score_folder_set(clips, to_score, cal, out, result)
    if len(hist_scores):
        result["hist_png"] = str(
            plot_histogram(
                hist_scores,
                out / "hist.png",
                labels=hist_labels,
                thresholds=thresholds,
                xlabel="calibrated LLR" if cal is not None else "raw score",
                title=f"{es.name}, {length} ({ref.label})",
            )
        )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "metrics.json").write_text(
        json.dumps({"model": ref.to_dict(), **result}, indent=2, allow_nan=False)
    )
    return result


def run_evaluation(
    ref: Any,
    sets: list[EvalSet],
    *,
    length: str = "4s",
    hop: int = DEFAULT_HOP,
    phase: str | None = None,
    out: Path,
    opts: dict[str, Any],
    mlflow: bool = True,
    experiment: str | None = None,
) -> dict[str, Any]:
    """Score every set with a resolved model, write the cross-dataset table and log to MLflow;
    returns the summary that ``--json`` prints (also OUT/<length>/summary.json).

    Raises:
        SpoofdetError: before anything is scored, a set whose ids cannot be written
            (:func:`spoofdet.evaluation.sets.check_ids`); after scoring, shards that disagree
            with their metadata.
    """
    eval_sets.check_ids(sets)
    # the driver reads only the calibration; the actors load the model
    calibration = read_calibration(ref)
    out = Path(out) / length
    results = [
        evaluate_set(
            es,
            ref,
            calibration=calibration,
            length=length,
            hop=hop,
            phase=phase,
            out=out / es.name,
            opts=opts,
        )
        for es in sets
    ]
    protocol = describe_protocol(length, window=opts.get("window", WINDOW), hop=hop)
    md, table = cross_dataset_table(results, protocol, ref.label)
    (out / "cross_dataset.md").write_text(md)
    (out / "cross_dataset.json").write_text(json.dumps(table, indent=2, allow_nan=False))
    summary = {
        "model": ref.to_dict(),
        "calibrated": calibration is not None,
        "protocol": protocol,
        "out": str(out),
        "sets": results,
        "cross_dataset": {
            "markdown": str(out / "cross_dataset.md"),
            "json": str(out / "cross_dataset.json"),
            "mean_over_sets": table["mean_over_sets"],
        },
    }
    if mlflow and ref.tracking_uri:
        from spoofdet.tracking import log_evaluation

        summary["mlflow"] = log_evaluation(ref, results, out, length=length, experiment=experiment)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    return summary


def recorded_evaluation(
    ref: Any, sets: list[EvalSet], wanted: dict[str, dict[str, Any]], length: str
) -> dict[str, Any] | None:
    """The evaluation of ``ref`` on every set as recorded in its version tags, or None if any set
    lacks a match."""
    tags, results = version_tags(ref.name, ref.version, ref.tracking_uri), []
    for es in sets:
        rec = json.loads(tags.get(f"eval.{es.name}.{length}", "null"))
        if not rec or any(rec.get(k) != v for k, v in wanted[es.name].items()):
            return None
        results.append(
            {
                "eval_set": es.name,
                "selection": rec["selection"],
                "metrics": rec,
                "run_id": rec["run_id"],
            }
        )
    return {
        "model": ref.to_dict(),
        "calibrated": all(r["metrics"]["score_type"] == "llr" for r in results),
        "sets": results,
        "out": None,
        "reused": True,
        "mlflow": {"run_id": ",".join(sorted({r["run_id"] for r in results}))},
    }


def reusable_evaluations(
    refs: list[Any],
    sets: list[EvalSet],
    *,
    length: str,
    phase: str | None,
    window: int,
    hop: int,
    fresh: bool = False,
) -> dict[str, dict[str, Any] | None]:
    """Per registered version (``v<N>``), its recorded evaluation on the same rows and protocol,
    or None where it must be scored (always None with ``fresh``)."""
    wanted = {}
    for es in sets:
        meta = eval_sets.read_metadata(es)
        wanted[es.name] = {
            "fingerprint": eval_sets.fingerprint(meta),
            "selection": eval_sets.select_rows(meta, phase)[1],
            "window": window,
            "hop": hop if length == "full" else None,
        }
    return {
        f"v{r.version}": None if fresh else recorded_evaluation(r, sets, wanted, length)
        for r in refs
    }


def add_scoring_arguments(ap: argparse.ArgumentParser) -> None:
    """Options shared by ``spoofdet score`` and ``spoofdet promote``: protocol, rows, Ray
    resources, tracking."""
    ap.add_argument(
        "--length",
        choices=LENGTHS,
        default="4s",
        help="4s: the first --window samples, repeat-padded "
        "(default, as papers); full: mean over windows covering the whole clip",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help=f"samples per window (default {WINDOW:,}; XLSR-Mamba "
        "and Fake-Mamba evaluate on 66,800, the length their checkpoints were trained on)",
    )
    ap.add_argument(
        "--hop",
        type=int,
        default=None,
        help=f"window hop for --length full (default half the window: {DEFAULT_HOP})",
    )
    ap.add_argument(
        "--phase",
        default=None,
        help="rows evaluated where a set has phases (2021 LA/DF): eval (default), "
        "progress, hidden or all",
    )
    ap.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default $MLFLOW_TRACKING_URI, else "
        "sqlite:///<$SPOOFDET_STORAGE or runs/train>/mlflow.db)",
    )
    ap.add_argument("--actors", type=int, default=1, help="scoring actors (default 1)")
    ap.add_argument(
        "--gpus-per-actor",
        type=float,
        default=0.0,
        help="GPUs per actor; 0 scores on CPU (default)",
    )
    ap.add_argument(
        "--cpus-per-actor",
        type=float,
        default=1.0,
        help="CPUs (and torch threads) per actor (default 1)",
    )
    ap.add_argument(
        "--batch-size", type=int, default=16, help="windows per forward pass (default 16)"
    )
    ap.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs for a Ray started in-process (default: all)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def scoring_options(args: argparse.Namespace) -> dict[str, Any]:
    """Check the options of :func:`add_scoring_arguments` (ValueError naming the flag), default
    ``--hop`` to half the window; returns the options of :func:`score_clips`."""
    if args.window < 400:
        raise ValueError(
            f"--window must be at least 400 samples (one frame of the SSL front-ends), got {args.window}"
        )
    if args.hop is None:
        args.hop = args.window // 2
    check_length(args.length, args.hop, args.window)
    for flag in ("actors", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    return {
        "batch_size": args.batch_size,
        "actors": args.actors,
        "gpus_per_actor": args.gpus_per_actor,
        "cpus_per_actor": args.cpus_per_actor,
        "window": args.window,
    }
