"""Calibrate a model on a labelled dev set: raw scores -> LLRs, optionally registered as a new version.

Submit to a cluster (shards and tracking store reachable from every node)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m ray_jobs.calibrate --model models:/xlsr-aasist/3 --dev /mnt/shards/asvspoof2019-la/dev \\
        --actors 4 --gpus-per-actor 1 --register --json

Run here (Ray starts in-process), or through the CLI::

    spoofdet calibrate --model models:/spoofdet-demo/1 --dev runs/demo/shards/asvspoof2019-la/dev \\
        --tracking-uri sqlite:///runs/demo/train/mlflow.db --register

What happens, top to bottom:
1. Arguments are checked (``--out`` or ``--register`` is required; ``--register`` needs a
   registered version, ``models:/NAME/VERSION`` or ``@ALIAS``), the dev set must be a labelled
   shard folder with writable ids, and the model reference is resolved, before Ray is touched.
   A model that already stores a calibration is recalibrated: its old map is reported and
   replaced, never stacked (the new one is fitted on the raw scores, not on the old LLRs).
2. Ray Data scores the dev clips with the model, as ``spoofdet score`` does (``--length 4s``:
   the first window; ``full``: the mean over windows), giving raw scores. Rows that failed to
   decode, unlabelled rows and rows outside ``--phase`` are counted and left out.
3. The scores are checked (``spoofdet.evaluation.calibration.check_calibratable``): too few
   trials, a model at chance or inverted scores are refused (exit 2) with what was measured. Else
   the calibration is fitted as at the end of training (``fit_calibration``, prior-weighted
   logistic regression at the ASVspoof 5 effective prior unless ``--p-bonafide``), and the dev
   EER/minDCF and actDCF/Cllr are reported before (the model's own output: raw scores, or its old
   LLRs) and after.
4. ``--out DIR``: ``DIR/calibration.json`` (the map) and ``DIR/summary.json`` (what ``--json``
   prints). ``--register``: a new version of the same registered model, logged in a new MLflow
   run (tag ``spoofdet.kind=calibration``, nested under the source version's run) with the same
   weights and config plus the calibration, stored as trained models store it (so ``spoofdet
   predict`` gives LLRs and decisions). Lineage: version tags ``spoofdet.calibrated_from``
   (``NAME/VERSION``), ``spoofdet.calibration_dev`` (path), ``spoofdet.calibration_dev_fingerprint``,
   ``spoofdet.calibration_protocol``, ``spoofdet.calibration`` (the map) and
   ``spoofdet.source_run_id``; the source version's descriptive tags (seed provenance) carried
   over, but not its evaluations (``eval.*``) or promotion records (``promotion.*``), which were
   about other scores; a version description saying what was done.

Exit codes: 0 done; 2 bad input or refused (one line on stderr, ``spoofdet calibrate: error:
...``); 1 unexpected (one line naming the log file with the traceback).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spoofdet.errors import json_stdout, run_command
from spoofdet.evaluation.calibration import (
    DEFAULT_P_BONAFIDE,
    Calibration,
    check_calibratable,
    fit_calibration,
)
from spoofdet.evaluation.fusion import dev_metrics
from spoofdet.evaluation.metrics import cllr
from spoofdet.evaluation.protocols import WINDOW, describe_protocol
from spoofdet.evaluation.sets import (
    check_ids,
    fingerprint,
    parse_eval_sets,
    read_metadata,
    select_rows,
)
from spoofdet.serve.registry import (
    model_files,
    read_calibration,
    resolve_model,
    set_version_tags,
    version_tags,
)
from spoofdet.serve.score_sets import (
    add_scoring_arguments,
    align_clips,
    score_clips,
    scoring_options,
)

#: Source version tags not carried to the calibrated version: results about other scores.
NOT_CARRIED = ("eval.", "promotion.", "spoofdet.calibrat", "mlflow.")
#: Model metadata that ``log_detector`` writes itself (the rest is carried over).
OWN_METADATA = ("sample_rate", "input", "score", "label_convention", "calibrated", "calibration")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="spoofdet calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 done, 2 bad input or refused (the message says what was measured "
        "and what to fix), 1 unexpected",
    )
    ap.add_argument(
        "--model",
        required=True,
        help="models:/NAME/VERSION or models:/NAME@ALIAS (needed for --register); with --out "
        "also runs:/RUN/model or a train run's final/ folder",
    )
    ap.add_argument(
        "--dev",
        required=True,
        metavar="SHARDS",
        help="labelled dev shard folder from `spoofdet prepare` (both classes)",
    )
    ap.add_argument(
        "--register",
        action="store_true",
        help="register the calibrated model as a new version of the same registered model",
    )
    ap.add_argument(
        "--out", default=None, help="write calibration.json and summary.json into this folder"
    )
    ap.add_argument(
        "--p-bonafide",
        type=float,
        default=DEFAULT_P_BONAFIDE,
        help=f"target prior of bona fide of the fit (default {DEFAULT_P_BONAFIDE:.4f}, the "
        "ASVspoof 5 effective prior, as in training)",
    )
    add_scoring_arguments(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``spoofdet calibrate ARGV``; returns the exit code (module docstring). Every error is one
    line on stderr (``spoofdet.errors.run_command``)."""
    from spoofdet.tracking import bounded_http

    bounded_http()  # bounded waits for a tracking server, before the first call
    return run_command("calibrate", _run, argv)


def _run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    with json_stdout(args.json) as stdout:  # --json: stdout holds the one object, nothing else
        return _calibrate(args, stdout)


def _calibrate(args: argparse.Namespace, stdout: Any) -> int:
    # 1. check everything and resolve the model before Ray is touched
    if not (args.out or args.register):
        raise ValueError(
            "give --out DIR (write calibration.json there) or --register (a new version of the "
            "registered model), or both"
        )
    opts = scoring_options(args)
    (dev,) = parse_eval_sets([args.dev])
    if dev.kind != "shards":
        raise ValueError(
            f"--dev {args.dev}: a folder of audio has no labels; give a labelled shard folder "
            "from `spoofdet prepare`"
        )
    check_ids([dev])
    ref = resolve_model(args.model, args.tracking_uri)
    if args.register and ref.kind != "registry":
        raise ValueError(
            f"--register makes a new version of a registered model, but --model {args.model} is "
            "not one: give models:/NAME/VERSION or models:/NAME@ALIAS, or use --out"
        )
    previous = read_calibration(ref)
    meta = read_metadata(dev)
    mask, selection = select_rows(meta, args.phase)
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:  # 2. raw scores of the dev clips
        clips = score_clips(dev, ref, length=args.length, hop=args.hop, opts=opts)
    finally:
        if started:
            ray.shutdown()
    # 3. check, fit, measure
    raw, labels, counts = dev_trials(dev, meta, mask, clips)
    bona, spoof = raw[labels == 1], raw[labels == 0]
    check_calibratable(bona, spoof)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = fit_calibration(bona, spoof, p_bonafide=args.p_bonafide)
    before = previous.apply(raw) if previous is not None else raw
    summary = {
        "model": ref.to_dict(),
        "dev": {
            "path": dev.path,
            "selection": selection,
            "fingerprint": fingerprint(meta),
            "protocol": describe_protocol(
                args.length, window=opts.get("window", WINDOW), hop=args.hop
            ),
            **counts,
        },
        "calibration": cal.to_dict(),
        "previous_calibration": previous.to_dict() if previous is not None else None,
        "recalibrated": previous is not None,
        "before": {
            "score_type": "llr" if previous is not None else "raw",
            **measure(before[labels == 1], before[labels == 0]),
        },
        "after": {"score_type": "llr", **measure(cal.apply(bona), cal.apply(spoof))},
        "warnings": [str(w.message) for w in caught],
    }
    # 4. write and/or register
    with tempfile.TemporaryDirectory(prefix="spoofdet-calibrate-") as tmp:
        folder = Path(args.out) if args.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        cal_path = cal.save(folder / "calibration.json")
        if args.out:
            summary["calibration_json"] = str(cal_path)
        if args.register:
            summary["registered"] = register_calibrated(ref, cal, cal_path, summary)
    if args.out:
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False))
    if args.json:
        print(json.dumps(summary, allow_nan=False), file=stdout)
    else:
        print_summary(summary)
    return 0


def dev_trials(
    dev: Any, meta: Any, mask: np.ndarray, clips: Any
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The raw scores and labels of the selected, scored, labelled dev rows, and the counts of
    every row left out (``n_rows``, ``n_selected``, ``n_failed``, ``n_unlabelled``, ``n_used``).

    Raises:
        SpoofdetError: the shards and metadata.parquet disagree
            (:func:`spoofdet.serve.score_sets.align_clips`).
    """
    scores = align_clips(dev, meta, clips)
    labels = np.asarray([-1 if v is None else v for v in meta["label"].to_pylist()])
    scored = np.isfinite(scores)
    use = mask & scored & (labels >= 0)
    counts = {
        "n_rows": len(scores),
        "n_selected": int(mask.sum()),
        "n_failed": int((mask & ~scored).sum()),
        "n_unlabelled": int((mask & scored & (labels < 0)).sum()),
        "n_used": int(use.sum()),
    }
    return scores[use], labels[use], counts


def measure(bonafide: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
    """Dev EER (%), minDCF, actDCF (``spoofdet.evaluation.fusion.dev_metrics``) and Cllr of
    scores taken as LLRs."""
    return {**dev_metrics(bonafide, spoof), "cllr": cllr(bonafide, spoof)}


def register_calibrated(
    ref: Any, cal: Calibration, cal_path: Path, summary: dict[str, Any]
) -> dict[str, Any]:
    """Log the source version's weights and config with ``cal_path`` in a new MLflow run and
    register them as a new version of ``ref.name`` with lineage tags and a description (module
    docstring, step 4); returns ``{"name", "version", "model_uri", "mlflow_run_id"}``."""
    from mlflow.tracking import MlflowClient

    from spoofdet.serve.model import log_detector
    from spoofdet.tracking import experiment_for

    uri, name, version = ref.tracking_uri, ref.name, ref.version
    client = MlflowClient(tracking_uri=uri)
    source = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory(prefix="spoofdet-calibrate-") as tmp:
        paths, metadata = model_files(ref, Path(tmp) / "source")
        work = Path(tmp) / "work"
        work.mkdir()
        weights = shutil.copy(paths["weights"], work / paths["weights"].name)
        shutil.copy(cal_path, work / "calibration.json")
        model_config = json.loads(paths["model_config"].read_text())
        experiment = (
            client.get_run(source.run_id).info.experiment_id
            if source.run_id
            else experiment_for(client, "spoofdet-calibrate", uri)
        )
        tags = {"spoofdet.kind": "calibration", "spoofdet.calibrated_from": f"{name}/{version}"}
        if source.run_id:
            tags["mlflow.parentRunId"] = source.run_id
        run = client.create_run(experiment, run_name=f"calibrate {name} v{version}", tags=tags)
        run_id = run.info.run_id
        try:
            for when in ("before", "after"):
                for k, v in summary[when].items():
                    if k != "score_type":
                        client.log_metric(run_id, f"calibration_dev_{when}_{k}", v)
            carried = {k: v for k, v in metadata.items() if k not in OWN_METADATA}
            carried.pop("decision", None)
            carried["calibrated_from"] = {
                "model": f"{name}/{version}",
                "dev": summary["dev"],
                "previous_calibration": summary["previous_calibration"],
            }
            info = log_detector(
                run_id=run_id,
                uri=uri,
                weights=str(weights),
                model_config=model_config,
                input_example=None,
                register_as=name,
                calibration=str(work / "calibration.json"),
                metadata=carried,
            )
            client.log_dict(run_id, summary, "calibration/summary.json")
            new = str(info.registered_model_version)
            set_version_tags(name, new, lineage_tags(ref, cal, source, summary, run_id), uri)
            client.update_model_version(
                name, new, description=version_description(ref, cal, source, summary)
            )
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id)
    return {"name": name, "version": new, "model_uri": info.model_uri, "mlflow_run_id": run_id}


def lineage_tags(
    ref: Any, cal: Calibration, source: Any, summary: dict[str, Any], run_id: str
) -> dict[str, str]:
    """The calibrated version's tags: the source version's descriptive ones (not
    :data:`NOT_CARRIED`; a ``score`` tag reworded for LLRs) and the lineage."""
    tags = {
        k: v
        for k, v in version_tags(ref.name, ref.version, ref.tracking_uri).items()
        if not k.startswith(NOT_CARRIED)
    }
    if "score" in tags:
        tags["score"] = (
            "calibrated LLR (bona fide vs spoof), higher = more bona fide; before calibration: "
            + tags["score"]
        )
    dev = summary["dev"]
    tags.update(
        {
            "spoofdet.calibrated_from": f"{ref.name}/{ref.version}",
            "spoofdet.calibration_dev": dev["path"],
            "spoofdet.calibration_dev_fingerprint": dev["fingerprint"],
            "spoofdet.calibration_dev_selection": dev["selection"],
            "spoofdet.calibration_protocol": dev["protocol"],
            "spoofdet.calibration": cal.to_json(),
            "spoofdet.calibration_run_id": run_id,
        }
    )
    if source.run_id:
        tags["spoofdet.source_run_id"] = source.run_id
    return tags


def version_description(ref: Any, cal: Calibration, source: Any, summary: dict[str, Any]) -> str:
    """What was done, in words: the source, the map, the dev set, the numbers before and after."""
    dev, before, after = summary["dev"], summary["before"], summary["after"]
    old = (
        "; it replaces the model's previous calibration (refitted on the raw scores)"
        if summary["recalibrated"]
        else ""
    )
    text = (
        f"Calibrated copy of {ref.name} v{ref.version} (spoofdet calibrate): the same weights, "
        f"LLR = {cal.slope:.6g} * score + {cal.offset:.6g} fitted at prior of bona fide "
        f"{cal.p_bonafide:.4f} on {cal.n_bonafide} bona fide + {cal.n_spoof} spoof clips of "
        f"{dev['path']} ({dev['selection']}, fingerprint {dev['fingerprint']}; "
        f"{dev['protocol']}){old}. Dev EER {after['eer']:.2f} %, minDCF {after['min_dcf']:.4f} "
        f"(unchanged); actDCF {before['act_dcf']:.4f} -> {after['act_dcf']:.4f}, Cllr "
        f"{before['cllr']:.4f} -> {after['cllr']:.4f} ({before['score_type']} -> llr). Output: "
        "calibrated LLRs, higher = more bona fide."
    )
    if source.description:
        text += f" Source version: {source.description}"
    return text[:5000]


def print_summary(summary: dict[str, Any]) -> None:
    cal, dev = summary["calibration"], summary["dev"]
    print(
        f"model {summary['model']['ref']}; dev {dev['path']} ({dev['selection']}, {dev['protocol']})"
    )
    print(
        f"  {dev['n_used']} trials used of {dev['n_selected']} selected rows "
        f"({dev['n_failed']} failed to decode, {dev['n_unlabelled']} unlabelled)"
    )
    if summary["recalibrated"]:
        prev = summary["previous_calibration"]
        print(
            f"  the model already had a calibration (LLR = {prev['slope']:.6g} * score + "
            f"{prev['offset']:.6g}): refitted on the raw scores, it is replaced"
        )
    print(
        f"  calibration: LLR = {cal['slope']:.6g} * score + {cal['offset']:.6g} "
        f"(prior of bona fide {cal['p_bonafide']:.4f})"
    )
    for when in ("before", "after"):
        m = summary[when]
        print(
            f"  {when:<6} ({m['score_type']}): EER {m['eer']:.2f} %  minDCF {m['min_dcf']:.4f}  "
            f"actDCF {m['act_dcf']:.4f}  Cllr {m['cllr']:.4f}"
        )
    for w in summary["warnings"]:
        print(f"  warning: {w}")
    if "calibration_json" in summary:
        print(f"written to {summary['calibration_json']}")
    if "registered" in summary:
        r = summary["registered"]
        print(f"registered models:/{r['name']}/{r['version']} (MLflow run {r['mlflow_run_id']})")


if __name__ == "__main__":
    raise SystemExit(main())
