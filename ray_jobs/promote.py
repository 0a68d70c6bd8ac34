"""Promote a registered model version to ``@champion`` only if it beats the current champion.

Submit to a cluster::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m ray_jobs.promote --name xlsr-aasist --version 7 \\
        --eval-set /mnt/shards/asvspoof2021-la /mnt/shards/in-the-wild --metric eer --margin 0.1 \\
        --actors 4 --gpus-per-actor 1 --json

Run here, or through the CLI::

    spoofdet promote --name spoofdet-demo --version 2 --eval-set runs/demo/shards/asvspoof2019-la/eval \\
        --tracking-uri sqlite:///runs/demo/train/mlflow.db

What happens, top to bottom:
1. The candidate version and the version ``@champion`` points at are looked up (aliases, not the
   deprecated stages). No champion yet: the candidate is evaluated and becomes champion.
   The candidate already champion: nothing to do. Several ``--version`` (a family's M1 M2 M3,
   ``spoofdet train --seeds``): all are evaluated, the record lists each one's score with the
   best and mean +- std over them, and the best one is the candidate.
2. Both are evaluated on the same eval sets under the same protocol by ``ray_jobs.score``
   (score files, metrics, plots, an MLflow evaluation run each, ``eval.*`` version tags). A version
   whose ``eval.<set>.<length>`` tags already hold an evaluation of every set with the same rows
   (fingerprint), rows evaluated, window and hop is not scored again (versions are immutable);
   ``--fresh`` re-scores anyway. The record says which evaluation run each number comes from.
3. The score of a version is the mean of ``--metric`` over the eval sets (EER in %, minDCF, actDCF
   or Cllr; lower is better). The candidate is promoted only if ``candidate < champion - margin``.
   actDCF and Cllr need calibrated versions on both sides.
4. The comparison is recorded as version tags on both (``promotion.*`` on the candidate,
   ``promotion.last_challenge`` on the champion, ``promotion.replaced_by`` on a replaced one) and in
   ``OUT/promotion.json``; the alias moves only on promotion.

Exit codes: 0 promoted, first champion or already champion; 3 refused (the candidate is not
better by the margin; the alias is unchanged); 2 bad input (one line on stderr, ``spoofdet
promote: error: ...``, also for an unreachable tracking server, named by its URI); 1 unexpected
(one line naming the log file with the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from spoofdet.errors import json_stdout, run_command
from spoofdet.evaluation.sets import LLR_METRICS, METRICS, check_ids, parse_eval_sets
from spoofdet.serve.registry import (
    CHAMPION,
    alias_target,
    default_tracking_uri,
    resolve_model,
    set_version_tags,
)
from spoofdet.serve.score_sets import (
    add_scoring_arguments,
    reusable_evaluations,
    run_evaluation,
    scoring_options,
)

EXIT_REFUSED = 3


def mean_metric(summary: dict[str, Any], metric: str) -> float:
    """Mean of ``metric`` over the eval sets of an evaluation summary (every set must have it)."""
    values = []
    for r in summary["sets"]:
        value = (r["metrics"] or {}).get(metric)
        if value is None:
            raise ValueError(
                f"eval set {r['eval_set']} has no {metric} for {summary['model']['uri']}: it needs labels "
                "of both classes" + (" and a calibrated model" if metric in LLR_METRICS else "")
            )
        values.append(float(value))
    return sum(values) / len(values)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="spoofdet promote",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--name", required=True, help="registered model name")
    ap.add_argument(
        "--version",
        required=True,
        nargs="+",
        action="extend",
        metavar="V",
        help="candidate version; several (a family's M1 M2 M3): each is evaluated, the record "
        "lists each one's score, best and mean +- std over them, and the best one challenges "
        "@champion",
    )
    ap.add_argument(
        "--eval-set",
        required=True,
        nargs="+",
        action="extend",
        metavar="[NAME=]SHARDS",
        help="labelled shard folder(s) from `spoofdet prepare`",
    )
    ap.add_argument(
        "--metric",
        choices=METRICS,
        default="eer",
        help="what to compare, lower is better (default eer)",
    )
    ap.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="required improvement, in the metric's units (EER: "
        "percentage points; default 0: strictly better)",
    )
    ap.add_argument("--out", default=None, help="output folder (default runs/promote/<name>)")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="score both versions even if their eval.* tags already "
        "hold an evaluation on the same sets and protocol",
    )
    add_scoring_arguments(ap)
    return ap.parse_args(argv)


def look_up(args: argparse.Namespace) -> tuple[dict[str, Any], list[Any], str, list[Any], Any]:
    """Step 1, before Ray is touched: (scoring options, eval sets, tracking URI, candidates,
    champion or None). Raises ValueError naming what to fix."""
    opts = scoring_options(args)
    sets = parse_eval_sets(args.eval_set)
    if any(s.kind != "shards" for s in sets):
        raise ValueError(
            "--eval-set: promotion needs labelled shard folders (from `spoofdet prepare`), "
            "not audio folders"
        )
    if args.margin < 0:
        raise ValueError(f"--margin must be >= 0, got {args.margin}")
    check_ids(sets)
    uri = default_tracking_uri(args.tracking_uri)
    if len(set(args.version)) < len(args.version):
        raise ValueError(f"--version names a version twice: {args.version}")
    candidates = [resolve_model(f"models:/{args.name}/{v}", uri) for v in args.version]
    champion = alias_target(args.name, CHAMPION, uri)
    return opts, sets, uri, candidates, champion


def new_record(args: argparse.Namespace, sets: list[Any], candidate: Any, champion: Any) -> dict:
    """The start of ``promotion.json``: what is compared with what, and how."""
    return {
        "name": args.name,
        "candidate": candidate.version,
        "champion": champion and champion.version,
        "metric": args.metric,
        "margin": args.margin,
        "protocol": args.length,
        "eval_sets": [s.name for s in sets],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def start_ray(num_cpus: int | None) -> bool:
    """Start Ray in-process unless it is up; True if this call started it."""
    import ray

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except BaseException:
            ray.shutdown()  # a failed start leaves nothing running
            raise
    return started


def evaluation_record(evaluations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What ``promotion.json`` keeps of each version's evaluation."""
    return {
        k: {
            "out": v["out"],
            "mlflow_run_id": v["mlflow"]["run_id"],
            "reused": v.get("reused", False),
            "calibrated": v["calibrated"],
            "sets": {
                r["eval_set"]: r["metrics"] and {m: r["metrics"][m] for m in METRICS}
                for r in v["sets"]
            },
        }
        for k, v in evaluations.items()
    }


def decide(
    args: argparse.Namespace,
    record: dict[str, Any],
    evaluations: dict,
    candidate: Any,
    champion: Any,
) -> None:
    """Step 3: both scores and the result into ``record``; ValueError when they cannot compare."""
    if args.metric in LLR_METRICS:
        uncal = [k for k, v in evaluations.items() if not v["calibrated"]]
        if uncal:
            raise ValueError(
                f"--metric {args.metric} needs calibrated LLR scores but {', '.join(uncal)} of "
                f"{args.name} store no calibration; compare on eer or min_dcf"
            )
    record["candidate_score"] = mean_metric(evaluations[f"v{candidate.version}"], args.metric)
    if champion is None:
        record["result"] = "first champion"
    else:
        record["champion_score"] = mean_metric(evaluations[f"v{champion.version}"], args.metric)
        better = record["candidate_score"] < record["champion_score"] - args.margin
        record["result"] = "promoted" if better else "refused"


def record_decision(
    args: argparse.Namespace, record: dict[str, Any], candidate: Any, champion: Any, uri: str
) -> None:
    """Step 4: tag both versions with the comparison; move the alias only on promotion."""
    from mlflow.tracking import MlflowClient

    keys = ("result", "metric", "margin", "protocol", "candidate_score", "champion_score", "time")
    tags = {f"promotion.{k}": record[k] for k in keys if record.get(k) is not None}
    tags.update(
        {
            "promotion.compared_with": record["champion"] or "",
            "promotion.eval_sets": ",".join(record["eval_sets"]),
        }
    )
    set_version_tags(args.name, candidate.version, tags, uri)
    if champion is not None:
        challenge = {k: record.get(k) for k in ("candidate", *keys)}
        set_version_tags(
            args.name, champion.version, {"promotion.last_challenge": json.dumps(challenge)}, uri
        )
    if record["result"] in ("promoted", "first champion"):
        MlflowClient(tracking_uri=uri).set_registered_model_alias(
            args.name, CHAMPION, candidate.version
        )
        if champion is not None:
            set_version_tags(
                args.name, champion.version, {"promotion.replaced_by": candidate.version}, uri
            )


def main(argv: list[str] | None = None) -> int:
    """``spoofdet promote ARGV``; returns the exit code (module docstring). Every error is one
    line on stderr (``spoofdet.errors.run_command``)."""
    from spoofdet.tracking import bounded_http

    bounded_http()  # bounded waits for a tracking server, before the first call
    return run_command("promote", _run, argv)


def _run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    with json_stdout(args.json) as stdout:  # --json: stdout holds the one object, nothing else
        return _promote(args, stdout)


def pick_best(
    args: argparse.Namespace, evaluations: dict, candidates: list[Any]
) -> tuple[Any, dict[str, Any]]:
    """Several candidates: each one's score (the mean of ``--metric`` over the sets), the best
    and mean +- std over them (AMSDF's report of M1-M3), and the best candidate, which then
    challenges the champion."""
    import numpy as np

    scores = {c.version: mean_metric(evaluations[f"v{c.version}"], args.metric) for c in candidates}
    best = min(candidates, key=lambda c: scores[c.version])
    values = list(scores.values())
    return best, {
        "scores": scores,
        "best": best.version,
        "best_score": scores[best.version],
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
    }


def _promote(args: argparse.Namespace, stdout: Any) -> int:
    # 1. look up the candidates and the champion (before Ray is touched)
    opts, sets, uri, candidates, champion = look_up(args)
    out = Path(args.out or Path("runs/promote") / args.name)
    candidate = candidates[0]
    record = new_record(args, sets, candidate, champion)
    if len(candidates) == 1 and champion is not None and champion.version == candidate.version:
        record.update(result="already champion", evaluations={})
        return report(record, out, args.json, stdout)

    # 2. evaluate all on the same sets, same protocol (reusing recorded evaluations of these sets)
    started = False
    try:
        versions = {c.version for c in candidates}
        challenged = champion is not None and champion.version not in versions
        refs = [*candidates] + ([champion] if challenged else [])
        evaluations = reusable_evaluations(
            refs,
            sets,
            length=args.length,
            phase=args.phase,
            window=args.window,
            hop=args.hop,
            fresh=args.fresh,
        )
        todo = [r for r in refs if evaluations[f"v{r.version}"] is None]
        started = bool(todo) and start_ray(args.num_cpus)
        for r in todo:
            evaluations[f"v{r.version}"] = run_evaluation(
                r,
                sets,
                length=args.length,
                hop=args.hop,
                phase=args.phase,
                out=out / f"v{r.version}",
                opts=opts,
            )
        record["evaluations"] = evaluation_record(evaluations)
        if len(candidates) > 1:  # the best of several challenges the champion
            candidate, record["candidates"] = pick_best(args, evaluations, candidates)
            record["candidate"] = candidate.version
            if champion is not None and champion.version == candidate.version:
                record["result"] = "already champion"
                return report(record, out, args.json, stdout)
        decide(args, record, evaluations, candidate, champion)  # 3.
    finally:
        if started:
            import ray

            ray.shutdown()

    record_decision(args, record, candidate, champion, uri)  # 4.
    return report(record, out, args.json, stdout)


def report(record: dict[str, Any], out: Path, as_json: bool, stdout: Any = None) -> int:
    """Write OUT/promotion.json, print the decision (``--json``: to ``stdout``), return the exit
    code."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "promotion.json").write_text(json.dumps(record, indent=2, allow_nan=False))
    record["record"] = str(out / "promotion.json")
    if as_json:
        print(json.dumps(record, allow_nan=False), file=stdout or sys.stdout)
    else:
        name, cand, champ, m = (record[k] for k in ("name", "candidate", "champion", "metric"))
        scores = (
            f" ({m} {record['candidate_score']:.4g} vs {record['champion_score']:.4g}, "
            f"margin {record['margin']:g})"
            if "champion_score" in record
            else ""
        )
        print(
            {
                "promoted": f"PROMOTED: {name} v{cand} is now @champion, replacing v{champ}{scores}",
                "refused": f"REFUSED: {name} v{cand} is not better than @champion v{champ}{scores}; "
                "alias unchanged",
                "first champion": f"{name} v{cand} is the first @champion "
                f"({m} {record.get('candidate_score', 0):.4g})",
                "already champion": f"{name} v{cand} is already @champion; nothing to do",
            }[record["result"]]
        )
        c = record.get("candidates")
        if c:
            each = ", ".join(f"v{v} {x:.4g}" for v, x in c["scores"].items())
            print(
                f"candidates ({m}): {each}; best v{c['best']} {c['best_score']:.4g}, "
                f"mean {c['mean']:.4g} +- {c['std']:.4g}"
            )
        print(f"record: {out / 'promotion.json'}")
    return EXIT_REFUSED if record["result"] == "refused" else 0


if __name__ == "__main__":
    raise SystemExit(main())
