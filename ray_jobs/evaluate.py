"""Score eval sets with a detector (Ray Data batch inference): score files, metrics, plots, MLflow.

Submit to a cluster (shards, output folder and tracking store reachable from every node)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m ray_jobs.evaluate --model models:/xlsr-aasist@champion \\
        --eval-set /mnt/shards/asvspoof2021-la /mnt/shards/asvspoof2021-df /mnt/shards/in-the-wild \\
        --length 4s --actors 4 --gpus-per-actor 1 --batch-size 64 --out /mnt/eval/xlsr-aasist --json

Run here (Ray starts in-process), or through the CLI::

    spoofdet score --model models:/spoofdet-demo@champion --eval-set runs/demo/shards/asvspoof2019-la/eval \\
        --tracking-uri sqlite:///runs/demo/train/mlflow.db

What happens, top to bottom:
1. Arguments, eval sets and the protocol are checked, and the model reference is resolved (an
   alias to the version it points at now), before Ray is touched.
2. Per eval set, Ray Data decodes the clips into fixed 64,600-sample windows (``--length 4s``: the
   first window, repeat-padded; ``full``: windows every ``--hop`` samples covering the whole clip)
   and an actor pool scores them (``spoofdet.serve.batch``); window scores are averaged per clip.
3. Per eval set, in ``OUT/<length>/<set>/``: ``scores.txt`` (``<utt_id> <score>``, written whole;
   a folder of audio gets ``scores.csv`` with ``path,score,llr,decision,error``), ``metrics.json``
   (``spoofdet.evaluation.metrics.evaluate_table`` on the schema columns of ``metadata.parquet``;
   rows of phase ``eval`` where a set has phases), ``det.png`` and ``hist.png``. Scores are
   calibrated LLRs when the model stores a calibration, else raw scores (``score_type`` says which).
4. ``OUT/<length>/cross_dataset.{md,json}``: one row per set, the protocol stated in both.
5. MLflow: a new run "eval <model> <length>" (tag ``spoofdet.kind=evaluation``) in the experiment
   of the run that trained the model, nested under it (``mlflow.parentRunId``), with metrics
   ``<set>.<length>.<metric>`` (linked to the logged model) and every file above as artifacts;
   a registered version also gets the tags ``eval.<set>.<length>`` (a JSON summary). A new run,
   not the training run, so that evaluations of one model under several protocols stay apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from spoofdet.evaluation.protocols import (
    DEFAULT_HOP,
    LENGTHS,
    WINDOW,
    check_length,
    describe_protocol,
)
from spoofdet.evaluation.sets import EvalSet, parse_eval_sets


def score_clips(es: EvalSet, ref: Any, *, length: str, hop: int, opts: dict[str, Any]) -> Any:
    """Per clip of the eval set, its raw score (mean over windows) or why it failed (Ray Data)."""
    from spoofdet.serve import batch as inference

    if es.kind == "shards":
        return inference.score_dataset(
            inference.shard_dataset(es.path), ref, files=False, length=length, hop=hop, **opts
        )
    from spoofdet.data.corpora import prepare_folder

    table = prepare_folder(es.path, check_audio=False).table
    return inference.score_dataset(
        inference.folder_dataset(table), ref, files=True, length=length, hop=hop, **opts
    )


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
) -> tuple[Any, Any]:
    """A labelled shard folder: ``scores.txt``, metrics over the rows evaluated and the DET plot
    (into ``result`` and ``thresholds``); returns the scores and labels for the histogram."""
    import numpy as np

    from spoofdet.evaluation import sets as eval_sets
    from spoofdet.evaluation.plots import plot_det
    from spoofdet.evaluation.scorefile import write_scores

    meta = eval_sets.read_metadata(es)
    scores = to_score(eval_sets.align(meta, clips.raw))
    ids = meta["utt_id"].to_pylist()
    unknown = sorted(set(clips.raw) - set(ids))
    missing = [u for u, s in zip(ids, scores) if not np.isfinite(s) and u not in clips.errors]
    if unknown or missing:
        raise RuntimeError(
            f"{es.name}: {len(missing)} metadata row(s) got no score (e.g. {missing[:3]}) and "
            f"{len(unknown)} score(s) match no row (e.g. {unknown[:3]}); the shards and "
            f"{es.path}/metadata.parquet disagree: re-run `spoofdet prepare` for this set"
        )
    ok = np.isfinite(scores)
    write_scores(out / "scores.txt", [u for u, k in zip(ids, ok) if k], scores[ok])
    mask, result["selection"] = eval_sets.select_rows(meta, phase)
    metrics = eval_sets.set_metrics(meta, scores, mask, calibrated=calibrated)
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
        result["det_png"] = str(
            plot_det(
                scores[use & (labels == 1)],
                scores[use & (labels == 0)],
                out / "det.png",
                title=f"{es.name}, {length}: EER {metrics['eer']:.2f} %",
            )
        )
    return scores[use], labels[use]


def score_folder_set(
    clips: Any, to_score: Any, cal: Any, out: Path, result: dict[str, Any]
) -> tuple[Any, None]:
    """A folder of audio (unlabelled): ``scores.csv`` with a row per file, failures included
    (into ``result``); returns the scores for the histogram."""
    from spoofdet.serve.predict import Prediction, decide, write_csv
    from spoofdet.serve.registry import DECISION_THRESHOLD

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
    result.update(selection="all files", scores=str(out / "scores.csv"), metrics=None)
    return hist_scores, None


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
    """Score one eval set and write its score file, metrics JSON and plots (step 2-3)."""
    import numpy as np

    from spoofdet.evaluation.plots import plot_histogram
    from spoofdet.serve.registry import DECISION_THRESHOLD

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clips = score_clips(es, ref, length=length, hop=hop, opts=opts)
    cal = calibration
    to_score = (
        (lambda raw: cal.apply(raw))
        if cal is not None
        else (lambda raw: np.asarray(raw, dtype=np.float64))
    )
    result: dict[str, Any] = {
        "eval_set": es.name,
        "path": es.path,
        "kind": es.kind,
        "protocol": describe_protocol(length, window=opts.get("window", WINDOW), hop=hop),
        "score_type": "llr" if cal is not None else "raw",
        "n_scored": len(clips.raw),
        "n_failed": len(clips.errors),
        "failed": dict(list(clips.errors.items())[:20]),
    }
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
    """Steps 2-5 for a resolved model; returns the summary that ``--json`` prints (also
    OUT/<length>/summary.json)."""
    from spoofdet.evaluation.sets import cross_dataset_table
    from spoofdet.serve.registry import read_calibration

    calibration = read_calibration(
        ref
    )  # the driver reads only the calibration; the actors load the model
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


def add_scoring_arguments(ap: argparse.ArgumentParser) -> None:
    """Options shared with ``ray_jobs.promote``: protocol, rows, Ray resources, tracking."""
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="spoofdet score",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 done, 2 bad input (the message names what to fix), 1 unexpected",
    )
    ap.add_argument(
        "--model",
        required=True,
        help="models:/NAME@champion, models:/NAME/VERSION, runs:/RUN/model, "
        "or a train run's final/ folder",
    )
    ap.add_argument(
        "--eval-set",
        required=True,
        nargs="+",
        action="extend",
        metavar="[NAME=]PATH",
        help="shard folder(s) from `spoofdet prepare`, or folder(s) of audio (unlabelled)",
    )
    ap.add_argument("--out", default=None, help="output folder (default runs/eval/<model>)")
    ap.add_argument(
        "--experiment",
        default=None,
        help="MLflow experiment of the evaluation run (default: the model's)",
    )
    ap.add_argument("--no-mlflow", action="store_true", help="write files only, log nothing")
    add_scoring_arguments(ap)
    return ap.parse_args(argv)


def print_summary(summary: dict[str, Any]) -> None:
    print(Path(summary["cross_dataset"]["markdown"]).read_text())
    for r in summary["sets"]:
        failed = f", {r['n_failed']} clip(s) failed to decode" if r["n_failed"] else ""
        print(f"{r['eval_set']}: scores {r['scores']}{failed}")
    if "mlflow" in summary:
        print(f"MLflow: run {summary['mlflow']['run_id']} at {summary['mlflow']['tracking_uri']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spoofdet.serve.registry import default_tracking_uri, resolve_model

    try:
        opts = scoring_options(args)
        sets = parse_eval_sets(args.eval_set)
        ref = resolve_model(args.model, args.tracking_uri)
        if ref.tracking_uri is None and not args.no_mlflow:
            # a model folder of no known run: the default store
            ref = replace(ref, tracking_uri=default_tracking_uri(args.tracking_uri))
    except ValueError as exc:
        print(f"spoofdet score: error: {exc}", file=sys.stderr)
        return 2
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        out = Path(args.out or Path("runs/eval") / ref.label.replace(" ", "-").replace("/", "_"))
        summary = run_evaluation(
            ref,
            sets,
            length=args.length,
            hop=args.hop,
            phase=args.phase,
            out=out,
            opts=opts,
            mlflow=not args.no_mlflow,
            experiment=args.experiment,
        )
    except ValueError as exc:
        print(f"spoofdet score: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    if args.json:
        print(json.dumps(summary, allow_nan=False))
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
