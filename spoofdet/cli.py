"""The ``spoofdet`` command line.

    spoofdet manifest CORPUS --root DIR [--split S] [--out FILE.parquet] [--no-audio-check] [--json]
    spoofdet prepare CORPUS --root DIR --out DIR [--split S] [--shard-mb N] [--json]
    spoofdet synth CORPUS|all --out DIR [--per-split N] [--seed S] [--no-broken] [--json]

Human-readable output goes to stdout; with ``--json`` stdout holds exactly one JSON object and
progress bars and notes go to stderr. Exit codes: 0 success, 2 bad input (the message names the
file and line), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2


def _manifest(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from spoofdet.corpora import prepare

    manifest = prepare(
        args.corpus, args.root, args.split,
        check_audio=not args.no_audio_check, progress=not args.json and sys.stderr.isatty(),
    )
    summary = manifest.summary()
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(manifest.table, out)
        summary["out"] = str(out)
        if manifest.missing_audio:
            missing_list = out.with_suffix(".missing.txt")
            missing_list.write_text("".join(p + "\n" for p in manifest.missing_audio))
            summary["missing_audio_list"] = str(missing_list)
    if args.json:
        print(json.dumps(summary, indent=None))
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    """Render a manifest summary as a short report."""
    lines = [f"{s['corpus']} at {s['root']}",
             f"  rows {s['rows']:,}   bona fide {s['bonafide']:,}   spoof {s['spoof']:,}"
             + (f"   unlabelled {s['unlabelled']:,}" if s.get("unlabelled") else "")]
    lines.append("  by subset:")
    for name, c in s["by_subset"].items():
        lines.append(f"    {name:<10} rows {c['rows']:>9,}  bona fide {c['bonafide']:>9,}  spoof {c['spoof']:>9,}")
    for name, c in s.get("by_phase", {}).items():
        if name == next(iter(s["by_phase"])):
            lines.append("  by phase:")
        lines.append(f"    {name:<10} rows {c['rows']:>9,}  bona fide {c['bonafide']:>9,}  spoof {c['spoof']:>9,}")
    attacks = {k: v for k, v in s["by_attack"].items() if k != "bonafide"}
    if attacks:
        lines.append("  spoof by attack: " + ", ".join(f"{k} {v:,}" for k, v in attacks.items()))
    if not s["audio_checked"]:
        lines.append("  audio files not checked (--no-audio-check)")
    elif s["missing_audio"]:
        lines.append(f"  MISSING AUDIO: {s['missing_audio']:,} file(s) listed in the protocol do not exist, e.g.:")
        lines.extend(f"    {p}" for p in s["missing_audio_examples"])
        lines.append("  (rows kept; the shard job quarantines them)"
                     + (f"; full list in {s['missing_audio_list']}" if "missing_audio_list" in s else ""))
    else:
        lines.append("  all audio files present")
    if "out" in s:
        lines.append(f"  written to {s['out']}")
    return "\n".join(lines)


def _synth(args: argparse.Namespace) -> int:
    from spoofdet.synthetic import LAYOUTS, write_corpus

    names = list(LAYOUTS) if args.corpus == "all" else [args.corpus]
    results = {}
    for name in names:
        out = Path(args.out) / name if args.corpus == "all" else Path(args.out)
        info = write_corpus(name, out, per_split=args.per_split, seed=args.seed, broken=not args.no_broken)
        results[name] = info
        if not args.json:
            print(f"{name}: {info['rows']} rows ({len(info['broken'])} deliberately broken) in {out}")
    if args.json:
        print(json.dumps(results if args.corpus == "all" else results[args.corpus]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from spoofdet.corpora import CORPORA, SPLIT_HELP

    parser = argparse.ArgumentParser(
        prog="spoofdet",
        description="Train, evaluate and ship speech-deepfake detectors. "
        "Labels: 1 = bona fide, 0 = spoof. Scores: higher = more bona fide.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpora_help = "\n".join(f"  {name:<16} --split: {SPLIT_HELP[name]}" for name in CORPORA)
    m = sub.add_parser(
        "manifest",
        help="parse a corpus' protocols into a metadata table and print its counts",
        description="Parse a corpus' protocol/key/meta files into schema rows, check that every "
        "audio file exists, and print counts per subset and attack. Missing audio files are "
        "listed and counted (rows are kept); malformed protocol lines stop with file:line errors.",
        epilog=f"corpora:\n{corpora_help}\n\nexample:\n  spoofdet manifest asvspoof2019-la --root ~/data/LA --split train --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("corpus", choices=list(CORPORA), metavar="CORPUS", help="one of: " + ", ".join(CORPORA))
    m.add_argument("--root", required=True, help="corpus root folder (for csv: the .csv file or its folder)")
    m.add_argument("--split", default=None, help="restrict to one split/phase/subset (see below)")
    m.add_argument("--out", default=None, metavar="FILE.parquet", help="write the metadata table (no audio) here")
    m.add_argument("--no-audio-check", action="store_true", help="parse protocols only; do not look for audio files")
    m.add_argument("--json", action="store_true", help="print one JSON object (rows, bonafide, spoof, by_attack, by_subset, ...)")
    m.set_defaults(func=_manifest)

    p = sub.add_parser(
        "prepare",
        help="shard a corpus into Parquet (16 kHz FLAC) with Ray Data; resumable, nothing lost",
        description="Decode every file of a corpus once (mono, band-limited resampling to 16 kHz), "
        "store it as FLAC bytes in Parquet shards of about --shard-mb MiB, and write metadata.parquet "
        "(no audio) and quarantine.parquet (every file that could not be used, with its reason) "
        "beside them. Re-running the same command resumes an interrupted job; a finished job is a no-op.",
        epilog="output layout: OUT/shards/part-NNNNN.parquet, OUT/metadata.parquet, "
        "OUT/quarantine.parquet, OUT/summary.json, OUT/_work/\n\n"
        "example:\n  spoofdet prepare codecfake --root ~/data/Codecfake --out runs/shards/codecfake --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from data_prep.shard import add_arguments, run_from_args

    add_arguments(p)
    p.set_defaults(func=run_from_args)

    from spoofdet.synthetic import LAYOUTS

    s = sub.add_parser(
        "synth",
        help="write a small synthetic corpus in a real corpus layout (for tests and the demo)",
        description="Generate audio plus protocol/key/meta files in the exact layout of a real "
        "corpus. Bona fide clips are voiced speech-like signals with natural jitter; spoof clips "
        "are vocoded/resynthesised copies; both share length, loudness and sample-rate "
        "distributions. A few deliberately broken files (missing, empty, corrupt, too short, NaN) "
        "are included unless --no-broken.",
    )
    s.add_argument("corpus", choices=[*LAYOUTS, "all"], metavar="CORPUS", help="one of: " + ", ".join([*LAYOUTS, "all"]))
    s.add_argument("--out", required=True, help="output folder (with 'all': one sub-folder per corpus)")
    s.add_argument("--per-split", type=int, default=12, help="clips per split/subset (default 12)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-broken", action="store_true", help="do not add broken files")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    from spoofdet.corpora import ManifestError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ManifestError, ValueError, FileNotFoundError) as exc:
        print(f"spoofdet {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
