"""The ``prepare`` command over :mod:`spoofdet.data.shard_writer`: its arguments, the run from
parsed arguments, and the human-readable summary.

Shared by ``spoofdet prepare`` (:mod:`spoofdet.cli`) and ``python -m data_prep.shard``, so the
library never imports the entry point. Exit codes: 0 success, 2 bad input (``prepare: error: ...``
on stderr); with ``--json`` stdout holds exactly one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spoofdet.data.corpora import CORPORA, ManifestError, prepare
from spoofdet.data.shard_writer import ShardError, run
from spoofdet.data.shards import QUARANTINE_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "corpus", choices=list(CORPORA), metavar="CORPUS", help="one of: " + ", ".join(CORPORA)
    )
    parser.add_argument("--root", required=True, help="corpus root (as for `spoofdet manifest`)")
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: local path or a pyarrow URI (s3://..., gs://...)",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="restrict to one split/phase/subset (as for `spoofdet manifest`)",
    )
    parser.add_argument(
        "--shard-mb", type=float, default=192.0, help="target shard size in MiB (default 192)"
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=None,
        help="fix rows per shard instead (overrides --shard-mb)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.1,
        help="quarantine clips shorter than this (default 0.1 s)",
    )
    parser.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray Data tasks, one per shard (default); local: one process, no Ray",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs for a Ray started in-process (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{s['corpus']} -> {s['out']}",
        f"  rows in {s['rows_in']:,} = written {s['rows_written']:,} "
        f"+ quarantined {s['quarantined']:,}"
        f"   ({s['shards']} shard(s), {s['audio_hours']} h of audio)",
    ]
    if s["by_reason"]:
        lines.append(
            "  quarantined by reason: "
            + ", ".join(f"{k} {v}" for k, v in s["by_reason"].items())
            + f"  (see {s['out']}/{QUARANTINE_FILE})"
        )
    if s.get("shards_done_before") == s["shards"]:
        lines.append("  already complete: nothing to do")
    elif s.get("shards_done_before"):
        lines.append(f"  resumed: {s['shards_done_before']} shard(s) were already written")
    lines.append(f"  {s['seconds']} s")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    try:
        manifest = prepare(args.corpus, args.root, args.split, check_audio=False)
        summary = run(
            manifest.table,
            args.out,
            corpus=args.corpus,
            shard_mb=args.shard_mb,
            shard_rows=args.shard_rows,
            min_seconds=args.min_seconds,
            executor=args.executor,
            num_cpus=args.num_cpus,
        )
    except (ManifestError, ShardError, ValueError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0
