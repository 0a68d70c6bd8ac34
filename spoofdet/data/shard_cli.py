"""The ``prepare`` command over :mod:`spoofdet.data.shard_writer` (``--verify``/``--repair``:
:mod:`spoofdet.data.shard_verify`): its arguments, the run from parsed arguments, and the
human-readable summary.

Shared by ``spoofdet prepare`` (:mod:`spoofdet.cli`) and ``python -m data_prep.shard``, so the
library never imports the entry point. Three modes:

    prepare CORPUS --root R --out O     write (or resume) the shard job
    prepare --verify --out O            check O fully (file list, checksums, every row); no writes
    prepare --repair --out O [CORPUS --root R]
                                        delete what is broken or stray, rewrite it, finish again

Exit codes: 0 success (``--verify``: the folder is clean), 2 bad input or problems found
(``prepare: error: ...`` on stderr, or the named problems); with ``--json`` stdout holds exactly
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spoofdet.data.corpora import CORPORA, ManifestError, prepare
from spoofdet.data.shard_verify import repair, verify
from spoofdet.data.shard_writer import ShardError, run
from spoofdet.data.shards import FILES_FILE, QUARANTINE_FILE, RETRY_REASONS, problem_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "corpus",
        nargs="?",
        choices=list(CORPORA),
        metavar="CORPUS",
        help="one of: " + ", ".join(CORPORA) + " (not needed for --verify; for --repair only "
        "when OUT/_work/ is gone)",
    )
    parser.add_argument(
        "--root", default=None, help="corpus root (as for `spoofdet manifest`); with CORPUS"
    )
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
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--verify",
        action="store_true",
        help=f"check OUT fully: {FILES_FILE}, every checksum, every row decodes, metadata equals "
        "the shards; print every problem; exit 2 if any (writes nothing)",
    )
    mode.add_argument(
        "--repair",
        action="store_true",
        help="delete broken or stray shard files of OUT, rewrite them from the saved plan "
        "(OUT/_work/, else CORPUS --root as for the original run) and finish OUT again",
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
    retry = s.get("retry_on_rerun", 0)
    if retry:
        lines.append(
            f"  {retry:,} file(s) could not be read ({', '.join(RETRY_REASONS)}: permissions, "
            "I/O errors, timeouts); re-running the same command retries them"
        )
    if s.get("finished_again"):
        lines.append(
            "  every shard was already written; finished the folder again (metadata.parquet, "
            f"quarantine.parquet, summary.json, {FILES_FILE})"
        )
    elif s.get("shards_done_before") == s["shards"]:
        lines.append("  already complete: nothing to do")
    elif s.get("shards_done_before"):
        lines.append(f"  resumed: {s['shards_done_before']} shard(s) were already written")
    lines.append(f"  {s['seconds']} s")
    return "\n".join(lines)


def format_verify(report: dict[str, Any]) -> str:
    """The ``--verify`` report: one line when clean, else every problem (file, row) and the fix."""
    out = report["out"]
    if report["ok"]:
        return (
            f"verify {out}: ok ({report['files']} file(s) match their sha256 in {FILES_FILE}, "
            f"{report['rows']:,} row(s) decoded)"
        )
    lines = [f"verify {out}: {len(report['problems'])} problem(s)"]
    lines += [f"  {problem_line(p)}" for p in report["problems"]]
    lines.append(
        f"fix: spoofdet prepare --repair --out {out}   (add CORPUS --root ROOT if {out}/_work/ "
        "is gone; a feature folder is extracted again instead)"
    )
    return "\n".join(lines)


def format_repair(result: dict[str, Any]) -> str:
    """The ``--repair`` report: what was deleted and rewritten, the summary, the check after."""
    lines = [format_summary(result)]
    lines.append(
        f"  repaired: {len(result['found'])} problem(s) found; deleted "
        f"{', '.join(result['deleted']) or 'nothing'}; rewrote "
        f"{', '.join(result['rewritten']) or 'no shard'}; metadata, quarantine, summary and "
        f"{FILES_FILE} written again"
    )
    lines.append(format_verify(result["verify"]))
    return "\n".join(lines)


def _manifest_table(args: argparse.Namespace):
    """The input manifest from CORPUS --root (None when neither is given, for --verify/--repair)."""
    if args.corpus is None and args.root is None:
        if args.verify or args.repair:
            return None
        raise ShardError(
            "CORPUS and --root are required (only --verify and --repair --out DIR can do without "
            "them); e.g. `spoofdet prepare codecfake --root ~/data/Codecfake --out DIR`"
        )
    if args.corpus is None or args.root is None:
        raise ShardError("CORPUS and --root go together: give both or (for --repair) neither")
    return prepare(args.corpus, args.root, args.split, check_audio=False).table


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``prepare`` in the mode ``args`` ask for; print the result; the exit code."""
    try:
        if getattr(args, "verify", False):
            report = verify(args.out)
            print(json.dumps(report) if args.json else format_verify(report))
            return 0 if report["ok"] else 2
        table = _manifest_table(args)
        settings = {
            "shard_mb": args.shard_mb,
            "shard_rows": args.shard_rows,
            "min_seconds": args.min_seconds,
            "executor": args.executor,
            "num_cpus": args.num_cpus,
        }
        if getattr(args, "repair", False):
            result = repair(args.out, table, corpus=args.corpus, **settings)
            print(json.dumps(result) if args.json else format_repair(result))
            return 0 if result["verify"]["ok"] else 2
        summary = run(table, args.out, corpus=args.corpus, **settings)
    except (ManifestError, ShardError, ValueError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0
