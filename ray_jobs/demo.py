"""The demo pipeline on embedded defaults: what ``make demo`` runs.

    python -m ray_jobs.demo [--out runs/demo] [--per-split 24] [--train-per-split 300] [--seed 0]

No download, no GPU, no cluster. On a Ray started in-process it:

1. writes synthetic corpora in the real layouts (ASVspoof 2019 LA, 2021 LA/DF, In-the-Wild,
   Codecfake), with deliberately broken files;
2. parses each into a manifest (``spoofdet manifest``);
3. shards each into Parquet with Ray Data (``spoofdet prepare``), quarantining the broken files;
   2019 LA per split (``shards/asvspoof2019-la/{train,dev,eval}``), the others whole;
4. trains ``ray_jobs/configs/demo.yaml`` (log-spectrogram front-end + Nes2Net-X head) with
   Ray Train, 2 workers, DeepSpeed on CPU, MLflow tracking and registration (``ray_jobs.train``);
5. evaluates the registered, calibrated version on the 2019 LA eval shards with Ray Data
   (``spoofdet score``: score file, metrics JSON, DET and histogram PNGs, an MLflow evaluation run);
6. promotes it (``spoofdet promote``): the first version becomes ``@champion``; a later version
   (``make demo`` again) replaces it only if its EER is lower, otherwise the refusal is printed.

It ends by printing the champion, its metrics and where the run, model, scores and plots are.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from data_prep import shard
from spoofdet.cli import format_summary
from spoofdet.data.corpora import prepare
from spoofdet.testing.synthetic import write_corpus

DEMO_CORPORA = ("asvspoof2019-la", "asvspoof2021-la", "asvspoof2021-df", "in-the-wild", "codecfake")
TRAIN_CORPUS = "asvspoof2019-la"
TRAIN_SPLITS = ("train", "dev", "eval")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    parser.add_argument(
        "--per-split", type=int, default=24, help="synthetic clips per split (default 24)"
    )
    parser.add_argument(
        "--train-per-split",
        type=int,
        default=300,
        help="synthetic clips per split of ASVspoof 2019 LA, the training corpus (default 300)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-train", action="store_true", help="stop after sharding")
    parser.add_argument(
        "--config",
        default=str(Path(__file__).parent / "configs" / "demo.yaml"),
        help="train recipe (default ray_jobs/configs/demo.yaml)",
    )
    parser.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs for the in-process Ray (default: all)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary at the end")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="training shows Ray's own logs and progress bars too (default: one line per epoch)",
    )
    return parser.parse_args(argv)


def write_corpora(args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Step 1: synthetic audio in the exact on-disk layouts of the real corpora."""
    corpora = {}
    for i, name in enumerate(DEMO_CORPORA):
        per_split = args.train_per_split if name == TRAIN_CORPUS else args.per_split
        corpora[name] = write_corpus(
            name, out / "corpora" / name, per_split=per_split, seed=args.seed + i
        )
        print(
            f"[demo] wrote {corpora[name]['rows']:>4} clips of {name} to {corpora[name]['root']}",
            file=sys.stderr,
        )
    return corpora


def write_manifests(corpora: dict[str, dict], out: Path, as_json: bool) -> dict[str, dict]:
    """Step 2: protocols -> schema rows (metadata only), missing audio listed."""
    summaries = {}
    for name, info in corpora.items():
        manifest = prepare(name, info["root"])
        path = out / "manifests" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(manifest.table, path)
        summaries[name] = {
            **manifest.summary(),
            "out": str(path),
            "deliberately_broken": info["broken"],
        }
        if not as_json:
            print(format_summary(summaries[name]))
            print(f"  deliberately broken: {info['broken']}\n")
    return summaries


def write_shards(corpora: dict[str, dict], out: Path, as_json: bool) -> dict[str, dict]:
    """Step 3: decode once, 16 kHz mono FLAC in Parquet, broken files quarantined (Ray Data)."""
    shards = {}
    for name, info in corpora.items():
        for split in TRAIN_SPLITS if name == TRAIN_CORPUS else (None,):
            key = f"{name}/{split}" if split else name
            table = prepare(name, info["root"], split, check_audio=False).table
            shards[key] = shard.run(
                table, str(out / "shards" / key), corpus=name, shard_mb=1.0, executor="ray"
            )
            if not as_json:
                print(shard.format_summary(shards[key]))
    return shards


def train_demo(args: argparse.Namespace, out: Path) -> dict | None:
    """Step 4: Ray Train + DeepSpeed (2 CPU workers), MLflow tracking, final model registered;
    returns the run's summary, or None if training failed."""
    from ray_jobs import train

    shard_root = out / "shards" / TRAIN_CORPUS
    overrides = [
        f"data.train.0.shards={shard_root / 'train'}",
        f"data.dev.shards={shard_root / 'dev'}",
    ]
    argv = ["--config", args.config, "--storage", str(out / "train"), *overrides]
    argv += ["--verbose"] if args.verbose else []  # default: one `epoch N/M ...` line per epoch
    print(f"[demo] training: python -m ray_jobs.train {' '.join(argv)}", file=sys.stderr)
    # --json: one object on stdout
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        if train.main(argv) != 0:
            return None
    return json.loads((out / "train" / "demo" / "final" / "summary.json").read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ray_jobs.train import json_stdout

    # --json: stdout holds the one JSON object, whatever Ray prints meanwhile goes to stderr
    with json_stdout(args.json) as emit:
        return run(args, emit)


def run(args: argparse.Namespace, emit: Callable[[str], None]) -> int:
    """The demo's steps (see the module docstring); ``emit`` prints the --json object."""
    out = Path(args.out)
    t0 = time.perf_counter()
    corpora = write_corpora(args, out)
    summaries = write_manifests(corpora, out, args.json)
    import ray

    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    shards, trained, evaluation, promotion = {}, None, None, None
    try:
        shards = write_shards(corpora, out, args.json)
        if not args.no_train:
            trained = train_demo(args, out)
            if trained is None:
                return 1
            # 5.-6. evaluate the registered model on the 2019 LA eval shards, then promote it
            if trained.get("registered"):
                eval_shards = out / "shards" / TRAIN_CORPUS / "eval"
                evaluation, promotion = evaluate_and_promote(trained, eval_shards, out)
    finally:
        ray.shutdown()

    elapsed = time.perf_counter() - t0
    if args.json:
        found = {"corpora": summaries, "shards": shards, "train": trained}
        found.update(evaluation=evaluation, promotion=promotion, seconds=round(elapsed, 2))
        emit(json.dumps(found))
    else:
        print(
            f"[demo] done in {elapsed:.1f} s; manifests in {out / 'manifests'}, "
            f"shards in {out / 'shards'}"
            + (f", run in {out / 'train' / 'demo'}" if trained else "")
        )
        if promotion:
            print(champion_report(trained, evaluation, promotion))
    return 0


def _job(main, argv: list[str]) -> tuple[int, dict]:
    """Run a job's ``main(argv + ["--json"])``, returning its exit code and its one JSON object."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([*argv, "--json"])
    return rc, json.loads(buf.getvalue() or "null")


def evaluate_and_promote(trained: dict, eval_shards: Path, out: Path) -> tuple[dict, dict]:
    """Steps 5-6: ``spoofdet score`` then ``spoofdet promote`` of the version just registered."""
    from ray_jobs import promote, score

    name, version, uri = (
        trained["registered"]["name"],
        str(trained["registered"]["version"]),
        trained["tracking_uri"],
    )
    common = ["--eval-set", str(eval_shards), "--tracking-uri", uri]
    print(
        f"[demo] evaluating: spoofdet score --model models:/{name}/{version} {' '.join(common)}",
        file=sys.stderr,
    )
    rc, evaluation = _job(
        score.main, ["--model", f"models:/{name}/{version}", *common, "--out", str(out / "eval")]
    )
    if rc != 0:
        raise RuntimeError(
            f"evaluation of models:/{name}/{version} failed (exit code {rc}); see the messages above"
        )
    print(
        f"[demo] promoting: spoofdet promote --name {name} --version {version} {' '.join(common)}",
        file=sys.stderr,
    )
    rc, promotion = _job(
        promote.main, ["--name", name, "--version", version, *common, "--out", str(out / "promote")]
    )
    if rc not in (0, promote.EXIT_REFUSED):
        raise RuntimeError(
            f"promotion of {name} v{version} failed (exit code {rc}); see the messages above"
        )
    return evaluation, promotion


def champion_report(trained: dict, evaluation: dict, promotion: dict) -> str:
    """What `make demo` ends with: the champion, its metrics, and where everything is."""
    name, uri = promotion["name"], trained["tracking_uri"]
    champion = promotion["champion"] if promotion["result"] == "refused" else promotion["candidate"]
    verdict = {
        "first champion": "the first version, so it becomes champion",
        "promoted": f"it beat v{promotion['champion']}, so it becomes champion",
        "already champion": "it already was champion",
        "refused": f"it did not beat v{champion} on {promotion['metric']}, so v{champion} stays champion",
    }
    calibrated = (promotion["evaluations"].get(f"v{champion}") or {}).get(
        "calibrated", evaluation["calibrated"]
    )
    lines = [
        f"[demo] v{promotion['candidate']} of {name}: {verdict[promotion['result']]}",
        f"[demo] champion: models:/{name}@champion = v{champion}"
        + (
            " (calibrated: scores are LLRs, decision threshold -0.642)"
            if calibrated
            else " (not calibrated)"
        ),
    ]
    sets = (promotion["evaluations"].get(f"v{champion}") or {}).get("sets") or {
        r["eval_set"]: r["metrics"] for r in evaluation["sets"]
    }
    for set_name, m in sets.items():
        act = "" if m["act_dcf"] is None else f", actDCF {m['act_dcf']:.4f}, Cllr {m['cllr']:.4f}"
        lines.append(
            f"[demo]   {set_name} ({promotion['protocol']}): EER {m['eer']:.2f} %, "
            f"minDCF {m['min_dcf']:.4f}{act}"
        )
    s = evaluation["sets"][0]
    lines += [
        f"[demo] MLflow store {uri}: training run {trained['mlflow_run_id']}, evaluation run "
        f"{evaluation['mlflow']['run_id']}, model {trained['model_uri']}",
        f"[demo] browse it: mlflow ui --backend-store-uri {uri}",
        f"[demo] scores of v{promotion['candidate']}: {s['scores']}; "
        f"plots: {s.get('det_png')}, {s.get('hist_png')}; "
        f"metrics: {Path(s['scores']).with_name('metrics.json')}",
        f"[demo] promotion record: {promotion['record']}",
        "[demo] score your own audio: "
        f"spoofdet predict FOLDER --model models:/{name}@champion --tracking-uri {uri}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
