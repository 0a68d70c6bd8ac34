"""The demo pipeline on embedded defaults: what ``make demo`` runs.

    python -m ray_jobs.demo [--out runs/demo] [--per-split 24] [--seed 0]

No download, no GPU, no cluster. It writes synthetic corpora in the real layouts, parses each
into a manifest (``spoofdet manifest``), then shards each into Parquet with Ray Data on a Ray
started in-process (``spoofdet prepare``), quarantining the deliberately broken files. Stages are
added here as they land: train (Ray Train + DeepSpeed) -> evaluate -> register (MLflow).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from data_prep import shard
from spoofdet.cli import format_summary
from spoofdet.corpora import prepare
from spoofdet.synthetic import write_corpus

DEMO_CORPORA = ("asvspoof2019-la", "asvspoof2021-la", "asvspoof2021-df", "in-the-wild", "codecfake")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="working folder (default runs/demo)")
    parser.add_argument("--per-split", type=int, default=24, help="synthetic clips per split (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the in-process Ray (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary at the end")
    args = parser.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()

    # 1. corpora: synthetic audio in the exact on-disk layouts of the real ones
    corpora = {}
    for i, name in enumerate(DEMO_CORPORA):
        corpora[name] = write_corpus(name, out / "corpora" / name, per_split=args.per_split, seed=args.seed + i)
        print(f"[demo] wrote {corpora[name]['rows']:>4} clips of {name} to {corpora[name]['root']}", file=sys.stderr)

    # 2. manifests: protocols -> schema rows (metadata only), missing audio listed
    summaries = {}
    for name, info in corpora.items():
        manifest = prepare(name, info["root"])
        path = out / "manifests" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet as pq

        pq.write_table(manifest.table, path)
        summaries[name] = {**manifest.summary(), "out": str(path), "deliberately_broken": info["broken"]}
        if not args.json:
            print(format_summary(summaries[name]))
            print(f"  deliberately broken: {info['broken']}\n")

    # 3. shards: decode once, 16 kHz mono FLAC in Parquet, broken files quarantined (Ray Data)
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    shards = {}
    try:
        for name, info in corpora.items():
            table = prepare(name, info["root"], check_audio=False).table
            shards[name] = shard.run(table, str(out / "shards" / name), corpus=name, shard_mb=1.0, executor="ray")
            if not args.json:
                print(shard.format_summary(shards[name]))
    finally:
        ray.shutdown()

    elapsed = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"corpora": summaries, "shards": shards, "seconds": round(elapsed, 2)}))
    else:
        print(f"[demo] done in {elapsed:.1f} s; manifests in {out / 'manifests'}, shards in {out / 'shards'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
