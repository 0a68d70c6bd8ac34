"""Score eval sets with a detector (Ray Data batch inference): score files, metrics, plots, MLflow.

Submit to a cluster (shards, output folder and tracking store reachable from every node)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m ray_jobs.score --model models:/xlsr-aasist@champion \\
        --eval-set /mnt/shards/asvspoof2021-la /mnt/shards/asvspoof2021-df /mnt/shards/in-the-wild \\
        --length 4s --actors 4 --gpus-per-actor 1 --batch-size 64 --out /mnt/eval/xlsr-aasist --json

Run here (Ray starts in-process), or through the CLI::

    spoofdet score --model models:/spoofdet-demo@champion --eval-set runs/demo/shards/asvspoof2019-la/eval \\
        --tracking-uri sqlite:///runs/demo/train/mlflow.db

What happens, top to bottom:
1. Arguments, eval sets (every id writable to its score file, ``spoofdet.evaluation.sets.check_ids``)
   and the protocol are checked, and the model reference is resolved (an alias to the version it
   points at now; the model checked to be a spoofdet model), before Ray is touched.
2. Per eval set, Ray Data decodes the clips into fixed 64,600-sample windows (``--length 4s``: the
   first window, repeat-padded; ``full``: windows every ``--hop`` samples covering the whole clip)
   and an actor pool scores them (``spoofdet.serve.batch``); window scores are averaged per clip.
3. Per eval set, in ``OUT/<length>/<set>/``: ``scores.txt`` (``<utt_id> <score>``, written whole;
   a folder of audio gets ``scores.csv`` with ``path,score,llr,decision,error``), ``metrics.json``
   (``spoofdet.evaluation.metrics.evaluate_table`` on the schema columns of ``metadata.parquet``;
   rows of phase ``eval`` where a set has phases), ``det.png`` and ``hist.png``. Scores are
   calibrated LLRs when the model stores a calibration, else raw scores (``score_type`` says which).
4. ``OUT/<length>/cross_dataset.{md,json}``: one row per set, the protocol stated in both.
   With several ``--model`` (a family's M1 M2 M3), steps 2-5 run per model into
   ``OUT/<model>/`` and ``OUT/<length>/models.{md,json}`` compares them per labelled set, as AMSDF
   reports: each model, best, mean +- std over models and a vote
   (``spoofdet.serve.score_models``).
5. MLflow: a new run "eval <model> <length>" (tag ``spoofdet.kind=evaluation``) in the experiment
   of the run that trained the model, nested under it (``mlflow.parentRunId``), with metrics
   ``<set>.<length>.<metric>`` (linked to the logged model) and every file above as artifacts;
   a registered version also gets the tags ``eval.<set>.<length>`` (a JSON summary). A new run,
   not the training run, so that evaluations of one model under several protocols stay apart.

Steps 2-5 are ``spoofdet.serve.score_sets.run_evaluation``; this job parses, starts Ray, prints.
Exit codes: 0 done; 2 bad input, one line on stderr (``spoofdet score: error: ...``); 1 unexpected
(one line naming the log file with the traceback; ``SPOOFDET_DEBUG=1`` prints it).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from spoofdet.errors import json_stdout, run_command
from spoofdet.evaluation.sets import check_ids, parse_eval_sets
from spoofdet.serve.registry import default_tracking_uri, resolve_model
from spoofdet.serve.score_models import compare_models
from spoofdet.serve.score_sets import (
    add_scoring_arguments,
    evaluate_set,
    run_evaluation,
    score_clips,
    score_folder_set,
    score_shard_set,
    scoring_options,
)

__all__ = [
    "add_scoring_arguments",
    "evaluate_set",
    "main",
    "parse_args",
    "print_summary",
    "run_evaluation",
    "score_clips",
    "score_folder_set",
    "score_shard_set",
    "scoring_options",
]


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
        nargs="+",
        action="extend",
        metavar="MODEL",
        help="models:/NAME@champion, models:/NAME/VERSION, runs:/RUN/model, "
        "or a train run's final/ folder; several (e.g. a family's M1 M2 M3): each is scored "
        "into OUT/<model>/ and OUT/<length>/models.{md,json} compares them per set: each model, "
        "best, mean +- std over models and a vote (spoofdet.serve.score_models)",
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
    """``spoofdet score ARGV``; returns the exit code (module docstring). Every error is one line
    on stderr (``spoofdet.errors.run_command``)."""
    from spoofdet.tracking import bounded_http

    bounded_http()  # bounded waits for a tracking server, before the first call
    return run_command("score", _run, argv)


def _run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    with json_stdout(args.json) as stdout:  # --json: stdout holds the one object, nothing else
        return _score(args, stdout)


def _score(args: argparse.Namespace, stdout: Any) -> int:
    # 1. check everything and resolve the models before Ray is touched
    opts = scoring_options(args)
    sets = parse_eval_sets(args.eval_set)
    check_ids(sets)
    refs = []
    for model in args.model:
        ref = resolve_model(model, args.tracking_uri)
        if ref.tracking_uri is None and not args.no_mlflow:
            # a model folder of no known run: the default store
            ref = replace(ref, tracking_uri=default_tracking_uri(args.tracking_uri))
        refs.append(ref)
    if len({r.label for r in refs}) < len(refs):
        raise ValueError(f"--model names the same model twice: {[r.label for r in refs]}")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:  # 2-5. score, write, log (per model)
        root = Path(args.out or Path("runs/eval") / _folder(refs[0]))
        summaries = [
            run_evaluation(
                ref,
                sets,
                length=args.length,
                hop=args.hop,
                phase=args.phase,
                out=root if len(refs) == 1 else root / _folder(ref),
                opts=opts,
                mlflow=not args.no_mlflow,
                experiment=args.experiment,
            )
            for ref in refs
        ]
    finally:
        if started:
            ray.shutdown()
    if len(refs) == 1:
        summary = summaries[0]
    else:  # 6. several models: one table per set (each, best, mean +- std, vote)
        compared = compare_models(
            summaries, [r.label for r in refs], sets, phase=args.phase, out=root / args.length
        )
        summary = {"models": summaries, "comparison": compared}
    if args.json:
        print(json.dumps(summary, allow_nan=False), file=stdout)
    elif len(refs) == 1:
        print_summary(summary)
    else:
        for s in summaries:
            print_summary(s)
        print(Path(summary["comparison"]["markdown"]).read_text())
    return 0


def _folder(ref: Any) -> str:
    """A model's output folder name: its label with spaces and slashes replaced."""
    return ref.label.replace(" ", "-").replace("/", "_")


if __name__ == "__main__":
    raise SystemExit(main())
