"""The ``spoofdet`` command line.

    spoofdet manifest CORPUS --root DIR [--split S] [--out FILE.parquet] [--no-audio-check] [--json]
    spoofdet prepare CORPUS --root DIR --out DIR [--split S] [--shard-mb N] [--json]
    spoofdet synth CORPUS|all --out DIR [--per-split N] [--seed S] [--no-broken] [--json]
    spoofdet train --config FILE [key=value ...] [--storage DIR] [--tracking-uri URI]
                   [--validate] [--json] [--verbose]
    spoofdet evaluate --scores FILE [FILE ...] --key FILE --format FMT [--phase P]
                      [--asv-scores FILE [--asv-key FILE]] [--score-layout L] [--fuse mean] [--json]
    spoofdet score --model URI --eval-set [NAME=]PATH [...] [--length 4s|full] [--out DIR] [--json]
    spoofdet predict PATH [PATH ...] --model URI [--out scores.csv] [--length full|4s] [--json]
    spoofdet features --shards DIR --out DIR --frontend NAME [--layer 5] [--num-gpus G] [--concurrency N]
    spoofdet promote --name NAME --version V --eval-set SHARDS [...] [--metric eer] [--margin 0.0] [--json]
    spoofdet import SEED --checkpoint FILE.pth [--frontend NAME|DIR] [--out DIR] [--register-as NAME] [--json]

Human-readable output goes to stdout; with ``--json`` stdout holds exactly one JSON object and
progress bars and notes go to stderr. Exit codes: 0 success, 2 bad input (one line on stderr,
``spoofdet <command>: error: ...``, naming the file, line or field), 1 anything unexpected (one
line naming the log file that holds the traceback; ``spoofdet --verbose COMMAND`` or
``SPOOFDET_DEBUG=1`` prints it), 130 interrupted; ``spoofdet promote`` also 3 (refused: the
candidate is not better than the champion). Every command bounds its waits for an MLflow
tracking server (``spoofdet.tracking.bounded_http``). ``train``, ``score``, ``features`` and
``promote`` are the Ray jobs of ``ray_jobs/`` and ``data_prep/features.py`` (``JOB_COMMANDS``;
imported only when called); ``predict`` and ``import`` never import Ray.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from spoofdet.errors import (  # noqa: F401 - EXIT_BAD_INPUT: the public exit code
    EXIT_BAD_INPUT,
    bad_input,
    run_command,
    set_verbose,
)


def _manifest(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from spoofdet.data.corpora import prepare

    manifest = prepare(
        args.corpus,
        args.root,
        args.split,
        check_audio=not args.no_audio_check,
        progress=not args.json and sys.stderr.isatty(),
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
    lines = [
        f"{s['corpus']} at {s['root']}",
        f"  rows {s['rows']:,}   bona fide {s['bonafide']:,}   spoof {s['spoof']:,}"
        + (f"   unlabelled {s['unlabelled']:,}" if s.get("unlabelled") else ""),
    ]
    lines.append("  by subset:")
    for name, c in s["by_subset"].items():
        lines.append(
            f"    {name:<10} rows {c['rows']:>9,}  bona fide {c['bonafide']:>9,}  spoof {c['spoof']:>9,}"
        )
    for name, c in s.get("by_phase", {}).items():
        if name == next(iter(s["by_phase"])):
            lines.append("  by phase:")
        lines.append(
            f"    {name:<10} rows {c['rows']:>9,}  bona fide {c['bonafide']:>9,}  spoof {c['spoof']:>9,}"
        )
    attacks = {k: v for k, v in s["by_attack"].items() if k != "bonafide"}
    if attacks:
        lines.append("  spoof by attack: " + ", ".join(f"{k} {v:,}" for k, v in attacks.items()))
    if not s["audio_checked"]:
        lines.append("  audio files not checked (--no-audio-check)")
    elif s["missing_audio"]:
        lines.append(
            f"  MISSING AUDIO: {s['missing_audio']:,} file(s) listed in the protocol do not exist, e.g.:"
        )
        lines.extend(f"    {p}" for p in s["missing_audio_examples"])
        lines.append(
            "  (rows kept; the shard job quarantines them)"
            + (f"; full list in {s['missing_audio_list']}" if "missing_audio_list" in s else "")
        )
    else:
        lines.append("  all audio files present")
    if s.get("not_regular_files"):
        lines.append(
            f"  NOT REGULAR FILES: {s['not_regular_files']:,} path(s) are folders, FIFOs, devices "
            "or sockets (never opened; the shard job quarantines them as not_regular_file), e.g.:"
        )
        lines.extend(f"    {p}" for p in s.get("not_regular_examples", []))
    if "out" in s:
        lines.append(f"  written to {s['out']}")
    return "\n".join(lines)


def _add_manifest_parser(sub: argparse._SubParsersAction) -> None:
    from spoofdet.data.corpora import CORPORA, SPLIT_HELP

    corpora_help = "\n".join(f"  {name:<16} --split: {SPLIT_HELP[name]}" for name in CORPORA)
    m = sub.add_parser(
        "manifest",
        help="parse a corpus' protocols into a metadata table and print its counts",
        description="Parse a corpus' protocol/key/meta files into schema rows, check that every "
        "audio file exists, and print counts per subset and attack. Missing audio files are "
        "listed and counted (rows are kept); malformed protocol lines stop with file:line errors.",
        epilog=f"corpora:\n{corpora_help}\n\nexample:\n"
        "  spoofdet manifest asvspoof2019-la --root ~/data/LA --split train --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument(
        "corpus", choices=list(CORPORA), metavar="CORPUS", help="one of: " + ", ".join(CORPORA)
    )
    m.add_argument(
        "--root", required=True, help="corpus root folder (for csv: the .csv file or its folder)"
    )
    m.add_argument("--split", default=None, help="restrict to one split/phase/subset (see below)")
    m.add_argument(
        "--out",
        default=None,
        metavar="FILE.parquet",
        help="write the metadata table (no audio) here",
    )
    m.add_argument(
        "--no-audio-check",
        action="store_true",
        help="parse protocols only; do not look for audio files",
    )
    m.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (rows, bonafide, spoof, by_attack, by_subset, ...)",
    )
    m.set_defaults(func=_manifest)


def _add_prepare_parser(sub: argparse._SubParsersAction) -> None:
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
    from spoofdet.data.shard_cli import add_arguments, run_from_args

    add_arguments(p)
    p.set_defaults(func=run_from_args)


def _synth(args: argparse.Namespace) -> int:
    from spoofdet.testing.synthetic import LAYOUTS, write_corpus

    names = list(LAYOUTS) if args.corpus == "all" else [args.corpus]
    results = {}
    for name in names:
        out = Path(args.out) / name if args.corpus == "all" else Path(args.out)
        info = write_corpus(
            name, out, per_split=args.per_split, seed=args.seed, broken=not args.no_broken
        )
        results[name] = info
        if not args.json:
            print(
                f"{name}: {info['rows']} rows ({len(info['broken'])} deliberately broken) in {out}"
            )
    if args.json:
        print(json.dumps(results if args.corpus == "all" else results[args.corpus]))
    return 0


def _add_synth_parser(sub: argparse._SubParsersAction) -> None:
    from spoofdet.testing.synthetic import LAYOUTS

    s = sub.add_parser(
        "synth",
        help="write a small synthetic corpus in a real corpus layout (for tests and the demo)",
        description="Generate audio plus protocol/key/meta files in the exact layout of a real "
        "corpus. Bona fide clips are voiced speech-like signals with natural jitter; spoof clips "
        "are vocoded/resynthesised copies; both share length, loudness and sample-rate "
        "distributions. A few deliberately broken files (missing, empty, corrupt, too short, NaN) "
        "are included unless --no-broken.",
    )
    s.add_argument(
        "corpus",
        choices=[*LAYOUTS, "all"],
        metavar="CORPUS",
        help="one of: " + ", ".join([*LAYOUTS, "all"]),
    )
    s.add_argument(
        "--out", required=True, help="output folder (with 'all': one sub-folder per corpus)"
    )
    s.add_argument("--per-split", type=int, default=12, help="clips per split/subset (default 12)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-broken", action="store_true", help="do not add broken files")
    s.add_argument("--json", action="store_true", help="print what was written as JSON")
    s.set_defaults(func=_synth)


def _evaluate(args: argparse.Namespace) -> int:
    import warnings

    from spoofdet.evaluation.keys import evaluate_files, format_report, load_asv, load_key

    if args.asv_key and not args.asv_scores:
        raise ValueError("--asv-key needs --asv-scores")
    if len(args.scores) == 1 and args.fuse:
        raise ValueError("--fuse needs at least two --scores files")
    key = load_key(args.format, args.key, args.phase)
    asv, form = (None, None)
    if args.asv_scores:
        asv, form = load_asv(args.format, args.asv_scores, args.asv_key, args.phase)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_files(
            args.scores, key, layout=args.score_layout, asv=asv, tdcf_form=form, fuse=args.fuse
        )
    for w in caught:
        print(f"spoofdet evaluate: warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_report(result))
    return 0


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    from spoofdet.evaluation.scorefile import LAYOUTS

    layouts = "\n".join(f"  {name:<15} {lay.doc}" for name, lay in LAYOUTS.items())
    e = sub.add_parser(
        "evaluate",
        help="score files + a corpus key -> EER, minDCF, actDCF, Cllr, t-DCF and breakdowns",
        description="Match score files ('<utt_id> <score>' lines, higher = more bona fide) to a corpus key, "
        "row by row: a missing, extra or duplicated id stops with exit code 2 and counts plus examples "
        "(nothing is intersected silently). Reports pooled EER (official ASVspoof definition, percent), "
        "minDCF and actDCF (ASVspoof 5 costs: Pspoof 0.05, Cmiss 1, Cfa 10), Cllr, min t-DCF with ASV "
        "scores (2019 LA: legacy form; 2021 LA: revised form), and breakdowns by attack and vocoder "
        "group (spoof of each vs all bona fide), codec condition, subset and corpus. actDCF and Cllr are "
        "always computed but mean something only for calibrated LLR scores. A polarity check warns when "
        "negated scores give a much lower EER; scores are never flipped.",
        epilog="score-file layouts (--score-layout):\n" + layouts + "\n\n"
        "JSON (--json): one object; for one score file: eer, threshold, min_dcf, act_dcf, cllr, n_bonafide, "
        "n_spoof,\npolarity_warning, eer_negated, breakdown, [min_tdcf, tdcf]; for several: models (one such "
        "object each),\nover_models (best/mean/std per metric) and fusion (with --fuse mean).\n\n"
        "examples:\n"
        "  spoofdet evaluate --scores scores.txt --key keys/LA/CM/trial_metadata.txt "
        "--format asvspoof2021-la\n"
        "  spoofdet evaluate --scores s.txt "
        "--key LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt "
        "\\\n      --format asvspoof2019-la --asv-scores ASVspoof2019.LA.asv.eval.gi.trl.scores.txt --json\n"
        "  spoofdet evaluate --scores m1.txt m2.txt m3.txt --key release_in_the_wild/meta.csv "
        "--format in-the-wild --fuse mean",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_evaluate_arguments(e)


def _add_evaluate_arguments(e: argparse.ArgumentParser) -> None:
    from spoofdet.evaluation.keys import FORMATS, FUSIONS
    from spoofdet.evaluation.scorefile import LAYOUTS

    e.add_argument(
        "--scores",
        required=True,
        nargs="+",
        action="extend",
        metavar="FILE",
        help="score file(s); repeat or list several to compare models",
    )
    e.add_argument(
        "--key",
        required=True,
        help="the key file (protocol, trial_metadata.txt, meta.csv, Codecfake "
        "label file, CSV manifest) or the corpus root holding it",
    )
    e.add_argument(
        "--format",
        required=True,
        choices=FORMATS,
        metavar="FMT",
        help="one of: " + ", ".join(FORMATS),
    )
    e.add_argument(
        "--phase",
        default=None,
        help="rows to score: 2021 LA/DF phase eval|progress|hidden|all (default "
        "eval); 2019 LA split (default: from the protocol's name); Codecfake subset (C1..C7, A1..A3, test); "
        "csv subset",
    )
    e.add_argument(
        "--asv-scores",
        default=None,
        metavar="FILE",
        help="ASV scores for the t-DCF (2019 LA: "
        "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt; 2021 LA: keys/LA/ASV/ASVTorch_Kaldi/score.txt)",
    )
    e.add_argument(
        "--asv-key",
        default=None,
        metavar="FILE",
        help="2021 LA only: keys/LA/ASV/trial_metadata.txt",
    )
    e.add_argument(
        "--score-layout",
        default="id-score",
        choices=list(LAYOUTS),
        metavar="L",
        help="score-file layout (default id-score: exactly two columns)",
    )
    e.add_argument(
        "--fuse",
        default=None,
        choices=FUSIONS,
        help="also evaluate the per-utterance mean of the scores",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    from spoofdet.serve import predict

    p = sub.add_parser(
        "predict",
        help="score your own audio files or folders with a detector -> path,score,llr,decision (no Ray)",
        description=predict.DESCRIPTION,
        epilog=predict.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_arguments(p)
    p.set_defaults(func=predict.run)


def _add_import_parser(sub: argparse._SubParsersAction) -> None:
    from spoofdet.serve import import_cli

    p = sub.add_parser(
        "import",
        add_help=False,
        help="turn a seed system's published checkpoint (.pth) into a spoofdet model folder or "
        "registered version; see 'spoofdet import --help'",
        description=import_cli.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    import_cli.add_arguments(p)
    # this sub-command's own parser words its usage errors, unknown options included
    p.set_defaults(func=_import, parser=p)


def _import(args: argparse.Namespace) -> int:
    from spoofdet.serve.import_cli import run

    return run(args, args.parser)


#: Sub-commands that are whole jobs: ``spoofdet CMD ARGS`` runs ``python -m MODULE ARGS``
#: in-process (the jobs own their arguments; train: config + key=value overrides).
JOB_COMMANDS = {
    "train": "ray_jobs.train",
    "score": "ray_jobs.score",
    "features": "data_prep.features",
    "promote": "ray_jobs.promote",
}
#: Their line in ``spoofdet --help``; ``spoofdet CMD --help`` is the job's own help.
JOB_HELP = {
    "train": "train a detector from a recipe (Ray Train + DeepSpeed, MLflow); "
    "see 'spoofdet train --help'",
    "score": "evaluate a model on eval sets with Ray Data: score files, metrics, DET/histogram "
    "plots, MLflow; see 'spoofdet score --help'",
    "features": "run a frozen front-end once over shards and cache one layer's features "
    "(Codecfake's trick); see 'spoofdet features --help'",
    "promote": "move @champion to a model version only if it beats the champion; "
    "see 'spoofdet promote --help'",
}


def _add_job_parser(sub: argparse._SubParsersAction, name: str) -> None:
    # listed in `spoofdet --help` only: main() hands a job its arguments before parsing
    sub.add_parser(name, add_help=False, help=JOB_HELP[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spoofdet",
        description="Train, evaluate and ship speech-deepfake detectors. "
        "Labels: 1 = bona fide, 0 = spoof. Scores: higher = more bona fide.",
        epilog="exit codes: 0 success, 2 bad input (one line on stderr), 1 unexpected (one line "
        "naming the log file with the traceback), 3 promote refused",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print the full traceback of an error (also SPOOFDET_DEBUG=1); give it before COMMAND",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_manifest_parser(sub)
    _add_prepare_parser(sub)
    _add_synth_parser(sub)
    _add_evaluate_parser(sub)
    _add_job_parser(sub, "train")
    _add_job_parser(sub, "score")
    _add_predict_parser(sub)
    _add_job_parser(sub, "features")
    _add_import_parser(sub)
    _add_job_parser(sub, "promote")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``spoofdet ARGV``; returns the exit code (module docstring). Every error is one line
    on stderr (:func:`spoofdet.errors.run_command`)."""
    from spoofdet.tracking import bounded_http

    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = bool(argv[:1]) and argv[0] == "--verbose"
    if verbose:
        argv = argv[1:]
    before = set_verbose(verbose or _debug_env())
    bounded_http()  # before any command's first tracking call; the user's own settings win
    try:
        if argv[:1] and argv[0] in JOB_COMMANDS:
            job = importlib.import_module(JOB_COMMANDS[argv[0]])
            return run_command(argv[0], job.main, argv[1:])
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # worded by the sub-command's own parser where it has one (import)
            getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
        return run_command(args.command, args.func, args)
    finally:
        set_verbose(before)


def _debug_env() -> bool:
    import os

    from spoofdet.errors import DEBUG_ENV

    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false")


if __name__ == "__main__":
    sys.exit(main())
