"""The ``spoofdet`` command line.

    spoofdet manifest CORPUS --root DIR [--split S] [--out FILE.parquet] [--no-audio-check] [--json]
    spoofdet prepare CORPUS --root DIR --out DIR [--split S] [--shard-mb N] [--json]
    spoofdet synth CORPUS|all --out DIR [--per-split N] [--seed S] [--no-broken] [--json]
    spoofdet train --config FILE [key=value ...] [--storage DIR] [--tracking-uri URI]
                   [--validate] [--json] [--verbose]
    spoofdet evaluate --scores FILE [FILE ...] --key FILE --format FMT [--phase P]
                      [--asv-scores FILE [--asv-key FILE]] [--score-layout L] [--fuse mean|vote]
                      [--threshold T|eer] [--positive bonafide|spoof]
                      [--bootstrap N [--seed S] [--ci 0.95]] [--no-tables]
                      [--exclude-quarantined SHARDS_DIR ...]
                      [--plots DIR [--plot-name NAME ...]] [--json]
    spoofdet score --model URI --eval-set [NAME=]PATH [...] [--length 4s|full] [--out DIR] [--json]
    spoofdet predict PATH [PATH ...] --model URI [--out scores.csv] [--length full|4s] [--json]
    spoofdet features --shards DIR --out DIR --frontend NAME [--layer 5] [--num-gpus G] [--concurrency N]
    spoofdet promote --name NAME --version V --eval-set SHARDS [...] [--metric eer] [--margin 0.0] [--json]
    spoofdet import SEED --checkpoint FILE.pth [--frontend NAME|DIR] [--out DIR] [--register-as NAME] [--json]
    spoofdet calibrate --model URI --dev SHARDS [--length 4s|full] (--register | --out DIR) [--json]
    spoofdet fuse --scores DEV_A DEV_B ... --key DEV_KEY --format FMT [--phase P] [--score-layout L]
                  --apply EVAL_A EVAL_B ... --out FUSED.txt [--model FUSION.json] [--json]

Human-readable output goes to stdout; with ``--json`` stdout holds exactly one JSON object and
progress bars and notes go to stderr. Exit codes: 0 success, 2 bad input (one line on stderr,
``spoofdet <command>: error: ...``, naming the file, line or field), 1 anything unexpected (one
line naming the log file that holds the traceback; ``spoofdet --verbose COMMAND`` or
``SPOOFDET_DEBUG=1`` prints it), 130 interrupted; ``spoofdet promote`` also 3 (refused: the
candidate is not better than the champion). Every command bounds its waits for an MLflow
tracking server (``spoofdet.tracking.bounded_http``). ``train``, ``score``, ``features``,
``promote`` and ``calibrate`` are the Ray jobs of ``ray_jobs/`` and ``data_prep/features.py``
(``JOB_COMMANDS``; imported only when called); ``predict``, ``import`` and ``fuse`` never import
Ray.
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

    from spoofdet.evaluation.keys import (
        evaluate_files,
        exclude_quarantined,
        find_asv_files,
        format_report,
        load_asv,
        load_key,
    )

    if args.asv_key and not args.asv_scores:
        raise ValueError("--asv-key needs --asv-scores")
    if len(args.scores) == 1 and args.fuse:
        raise ValueError("--fuse needs at least two --scores files")
    boot = _bootstrap_spec(args)
    plot_names = _plot_names(args)
    key = load_key(args.format, args.key, args.phase)
    asv, form = (None, None)
    asv_files = find_asv_files(args.format, key, args.asv_scores, args.asv_key)
    if asv_files is not None:
        asv, form = load_asv(args.format, asv_files["scores"], asv_files["key"], args.phase)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        key = exclude_quarantined(key, args.exclude_quarantined)
        result, aligned = evaluate_files(
            args.scores,
            key,
            layout=args.score_layout,
            asv=asv,
            tdcf_form=form,
            fuse=args.fuse,
            return_aligned=True,
            asv_files=asv_files,
            threshold=args.threshold,
            positive=args.positive,
            bootstrap=boot,
            tables=not args.no_tables,
        )
    for w in caught:
        print(f"spoofdet evaluate: warning: {w.message}", file=sys.stderr)
    if args.plots:
        from spoofdet.evaluation.plots import evaluation_plots

        result["plots"] = evaluation_plots(
            aligned, key.selected, result, args.plots, names=plot_names
        )
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print(format_report(result))
        if "plots" in result:
            print(f"plots written to {args.plots}:")
            print("\n".join(f"  {k:<24} {p}" for k, p in result["plots"].items()))
    return 0


def _bootstrap_spec(args: argparse.Namespace) -> Any:
    """``evaluate --bootstrap N [--seed S] [--ci C]`` as a BootstrapSpec (None without
    ``--bootstrap`` or with 0); ValueError naming the flag on misuse."""
    from spoofdet.evaluation.bootstrap import BootstrapSpec

    if args.bootstrap is not None and args.bootstrap < 0:
        raise ValueError(
            f"--bootstrap must be a number of replicates (e.g. 1000), got {args.bootstrap}"
        )
    if not args.bootstrap:
        for flag, value in (("--seed", args.seed), ("--ci", args.ci)):
            if value is not None:
                raise ValueError(f"{flag} needs --bootstrap N (the number of replicates)")
        return None
    seed = 0 if args.seed is None else args.seed
    try:
        return BootstrapSpec(args.bootstrap, seed, 0.95 if args.ci is None else args.ci)
    except ValueError as exc:
        raise ValueError(f"--bootstrap/--seed/--ci: {exc}") from None


def _threshold_arg(text: str) -> float | str:
    """``--threshold``: a finite number or ``eer``."""
    import math

    if text.strip().lower() == "eer":
        return "eer"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number (e.g. -0.642) or 'eer', got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number or 'eer', got {text!r}")
    return value


def _plot_names(args: argparse.Namespace) -> list[str]:
    """The names of ``evaluate --plots``: ``--plot-name`` (one per score file), else each score
    file's stem (``<folder>/<stem>`` where stems repeat). ValueError naming the flag on misuse."""
    from spoofdet.evaluation.plots import safe_stem

    if args.plot_name and not args.plots:
        raise ValueError("--plot-name needs --plots DIR")
    if args.plot_name:
        names = list(args.plot_name)
        if len(names) != len(args.scores):
            raise ValueError(
                f"--plot-name: {len(names)} name(s) for {len(args.scores)} --scores file(s); "
                "give one name per score file, in the same order"
            )
    else:
        paths = [Path(p) for p in args.scores]
        names = [p.stem for p in paths]
        if len(set(map(safe_stem, names))) < len(names):
            names = [f"{p.parent.name}/{p.stem}" for p in paths]
        if len(set(map(safe_stem, names))) < len(names):
            names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
    if len(set(map(safe_stem, names))) < len(names):
        raise ValueError(f"--plot-name: {names} give the same file name twice; give distinct names")
    return names


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
        "object each),\nover_models (best/mean/std per metric) and fusion (with --fuse mean); "
        "with --plots: plots (name -> PNG path).\n"
        "Also, per score file: auc (ROC area, bona fide vs spoof, ties 1/2); at_threshold {threshold,\n"
        "threshold_source bayes_llr|eer|given (vote for --fuse vote), positive, accuracy, precision\n"
        "(null when nothing is decided positive), recall, f1, tp, fp, tn, fn, optimistic (true for\n"
        "eer: chosen on these scores), assumes_llr}; every breakdown group also has act_dcf, cllr,\n"
        "auc, and codec groups of 2021 LA with ASV scores min_tdcf (ASV trials of that codec, as\n"
        'the official package); breakdown_2d {"attack x codec"|"vocoder x codec": {row: {codec:\n'
        "{eer, min_dcf, n_bonafide, n_spoof, [min_tdcf]}}}} (spoof of the row in that codec vs bona\n"
        "fide of that codec; omitted with --no-tables); with --bootstrap N: bootstrap {n, seed, ci,\n"
        "unit trial|speaker, method} and ci {eer (percent), min_dcf, act_dcf, cllr, auc: [low,\n"
        "high], unit, n_units_bonafide, n_units_spoof}, pooled and in every breakdown group.\n"
        "Several files: over_models has best/mean/std/n of eer, min_dcf, act_dcf, cllr, min_tdcf,\n"
        "auc, accuracy, precision, recall, f1 (best = lowest; highest for auc and the at-threshold\n"
        "metrics); fusion has method mean|vote (vote: vote_thresholds, the threshold each model\n"
        "voted at).\n"
        "Speech-DF-Arena's accuracy/F1 columns: --threshold eer --positive bonafide.\n\n"
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
        "label file, ASVspoof 5 protocol or 'filename cm-label' key, CSV manifest) or the "
        "corpus root holding it; for ASVspoof 2021 also the keys/ folder the official "
        "evaluate.py takes (or keys/LA, keys/DF)",
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
        "eval); 2019 LA and ASVspoof 5 split (default: from the protocol's name, eval for a "
        "folder or an ASVspoof 5 key); Codecfake subset (C1..C7, A1..A3, test); csv subset",
    )
    e.add_argument(
        "--asv-scores",
        default=None,
        metavar="FILE",
        help="ASV scores for the t-DCF (2019 LA: ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt, "
        "used without this flag when it lies in LA/ASVspoof2019_LA_asv_scores/ or beside the "
        "protocol; 2021 LA: keys/LA/ASV/ASVTorch_Kaldi/score.txt, used without this flag when it "
        "and keys/LA/ASV/trial_metadata.txt lie beside the CM key)",
    )
    e.add_argument(
        "--asv-key",
        default=None,
        metavar="FILE",
        help="2021 LA only: keys/LA/ASV/trial_metadata.txt (default: found beside the CM key)",
    )
    e.add_argument(
        "--exclude-quarantined",
        default=[],
        nargs="+",
        action="extend",
        metavar="SHARDS_DIR",
        help="shard folder(s) of `spoofdet prepare`: key rows listed in their quarantine.parquet "
        "(clips that could not be used, so `spoofdet score` has no score for them) are left out "
        "of the rows to score and counted (excluded_quarantined); repeatable",
    )
    e.add_argument(
        "--score-layout",
        default="id-score",
        choices=list(LAYOUTS),
        metavar="L",
        help="score-file layout (default id-score: exactly two columns; a first line "
        "'filename<TAB>cm-score', the official ASVspoof 5 header, selects asvspoof5)",
    )
    e.add_argument(
        "--fuse",
        default=None,
        choices=FUSIONS,
        help="also evaluate fused scores: mean = the per-utterance mean of the scores; vote = "
        "the share of models voting bona fide (score >= --threshold; with eer each model's own "
        "EER threshold), a tie at exactly 1/2 going to bona fide when the mean score is at or "
        "above the (mean) threshold and otherwise scored 1/2 - 1/(2M), so the fused decision "
        "is fused >= 1/2",
    )
    e.add_argument(
        "--threshold",
        default=None,
        type=_threshold_arg,
        metavar="T|eer",
        help="decision threshold of at_threshold (accuracy, precision, recall, F1; bona fide "
        "when score >= T): a number, or eer (the EER threshold of these very scores: "
        "optimistic); default the Bayes LLR threshold -ln(beta) of the ASVspoof 5 costs "
        "(about -0.642), meant for calibrated LLR scores",
    )
    e.add_argument(
        "--positive",
        default="bonafide",
        choices=("bonafide", "spoof"),
        help="the class counted positive in precision/recall/F1 (default bonafide, as "
        "Speech-DF-Arena's F1; spoof: detection of fakes)",
    )
    e.add_argument(
        "--bootstrap",
        default=None,
        type=int,
        metavar="N",
        help="percentile confidence intervals of EER, minDCF, actDCF, Cllr and AUC from N "
        "replicates (e.g. 1000), pooled and per breakdown group; bona fide and spoof are "
        "resampled separately, by speaker when every key row has one (default: off)",
    )
    e.add_argument(
        "--seed",
        default=None,
        type=int,
        metavar="S",
        help="random seed of --bootstrap (default 0: a rerun gives the same interval)",
    )
    e.add_argument(
        "--ci",
        default=None,
        type=float,
        metavar="LEVEL",
        help="two-sided level of the --bootstrap intervals (default 0.95)",
    )
    e.add_argument(
        "--no-tables",
        action="store_true",
        help="skip the attack x codec (and vocoder x codec) tables (breakdown_2d)",
    )
    e.add_argument(
        "--plots",
        default=None,
        metavar="DIR",
        help="also write det.png, hist.png and det_by_<dim>.png per breakdown (attack, codec, ...) "
        "into DIR; several --scores: one det.png with a curve per file (and the --fuse curve), "
        "hist_<name>.png and det_by_<dim>_<name>.png per file. Paths in the output (plots)",
    )
    e.add_argument(
        "--plot-name",
        default=None,
        nargs="+",
        action="extend",
        metavar="NAME",
        help="model name(s) in the plots' titles and legends, one per score file "
        "(default: each score file's stem)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)


def _fuse(args: argparse.Namespace) -> int:
    import warnings

    from spoofdet.evaluation.fusion import Fusion, apply_files, fit_files, fusion_json_path
    from spoofdet.evaluation.scorefile import write_scores

    if args.model and (args.scores or args.key):
        raise ValueError(
            "--model applies an existing fusion: leave out --scores and --key (they fit a new one)"
        )
    if not args.model and not (args.scores and args.key and args.format):
        raise ValueError(
            "give --scores, --key and --format to fit a fusion, or --model FUSION.json"
        )
    if not args.model and len(args.scores) != len(args.apply):
        raise ValueError(
            f"{len(args.scores)} --scores file(s) but {len(args.apply)} --apply file(s): give the "
            "eval scores of the same systems, in the same order"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.model:
            fusion, written = Fusion.load(args.model), None
        else:
            from spoofdet.evaluation.keys import load_key

            key = load_key(args.format, args.key, args.phase)
            fusion = fit_files(args.scores, key, layout=args.score_layout)
        ids, llr = apply_files(fusion, args.apply, layout=args.score_layout)
    for w in caught:
        print(f"spoofdet fuse: warning: {w.message}", file=sys.stderr)
    if not args.model:
        written = str(fusion.save(fusion_json_path(args.out)))
    write_scores(args.out, ids, llr)
    summary = {
        "out": str(args.out),
        "n_scored": len(ids),
        "fusion_json": written,
        "model": args.model,
        "applied_to": dict(zip(fusion.names, map(str, args.apply))),
        "fusion": fusion.to_dict(),
    }
    if args.json:
        print(json.dumps(summary, allow_nan=False))
        return 0
    print(
        ("applied " + args.model)
        if args.model
        else f"fitted on {fusion.n_bonafide} bona fide "
        f"+ {fusion.n_spoof} spoof dev trials at prior {fusion.p_bonafide:.3f}"
    )
    for name, weight in zip(fusion.names, fusion.weights):
        print(f"  weight {weight:+.5g}  {name}")
    print(f"  offset {fusion.offset:+.5g}")
    for name, m in {**fusion.dev.get("inputs", {}), "FUSION": fusion.dev.get("fusion")}.items():
        if m:
            print(
                f"  dev EER {m['eer']:6.2f} %  minDCF {m['min_dcf']:.4f}  actDCF "
                f"{m['act_dcf']:.4f}  {name}"
            )
    print(
        f"{len(ids)} fused LLRs written to {args.out}"
        + (f"; fusion in {written}" if written else "")
    )
    return 0


def _add_fuse_parser(sub: argparse._SubParsersAction) -> None:
    from spoofdet.evaluation.keys import FORMATS
    from spoofdet.evaluation.scorefile import LAYOUTS

    f = sub.add_parser(
        "fuse",
        help="fuse several systems' score files into calibrated LLRs (logistic-regression fusion)",
        description="Fit a linear logistic-regression fusion (BOSARIS style, as the ASVspoof 5 "
        "organisers' score-fusion tool): LLR = sum_i w_i s_i + b, by the same prior-weighted "
        "cross-entropy as the calibration of spoofdet train (prior of bona fide 0.655, the ASVspoof "
        "5 cost model), on dev score files matched strictly to the dev key (as spoofdet evaluate: a "
        "missing, extra or duplicated id stops with exit code 2). Then apply it to the eval score "
        "files of the same systems (same number and order; every file must score the same ids) "
        "and write the fused LLRs as a score file, plus the fusion (weights per input, offset, "
        "prior, dev counts, dev EER/minDCF/actDCF of each input and of the fusion) as "
        "FUSED.fusion.json beside it. --model FUSION.json applies an existing fusion instead.",
        epilog="examples:\n"
        "  spoofdet fuse --scores dev/a.txt dev/b.txt --key LA/ASVspoof2019_LA_cm_protocols/"
        "ASVspoof2019.LA.cm.dev.trl.txt \\\n      --format asvspoof2019-la --apply eval/a.txt "
        "eval/b.txt --out fused.txt\n"
        "  spoofdet fuse --model fused.fusion.json --apply other/a.txt other/b.txt --out other.txt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument(
        "--scores",
        nargs="+",
        action="extend",
        default=[],
        metavar="DEV",
        help="dev score files, one per system ('<utt_id> <score>', higher = more bona fide)",
    )
    f.add_argument("--key", default=None, help="the dev key (as for spoofdet evaluate)")
    f.add_argument(
        "--format",
        default=None,
        choices=FORMATS,
        metavar="FMT",
        help="one of: " + ", ".join(FORMATS),
    )
    f.add_argument("--phase", default=None, help="dev key rows to use (as for spoofdet evaluate)")
    f.add_argument(
        "--score-layout",
        default="id-score",
        choices=list(LAYOUTS),
        metavar="L",
        help="layout of every score file (default id-score)",
    )
    f.add_argument(
        "--apply",
        required=True,
        nargs="+",
        action="extend",
        metavar="EVAL",
        help="eval score files of the same systems, in the --scores order",
    )
    f.add_argument(
        "--out", required=True, metavar="FUSED.txt", help="the fused score file (LLRs) to write"
    )
    f.add_argument(
        "--model",
        default=None,
        metavar="FUSION.json",
        help="apply this fusion (written by an earlier spoofdet fuse) without refitting",
    )
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=_fuse)


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
    "calibrate": "ray_jobs.calibrate",
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
    "calibrate": "fit a calibration (raw scores -> LLRs) of a model on a labelled dev shard folder "
    "and register it as a new version; see 'spoofdet calibrate --help'",
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
    _add_job_parser(sub, "calibrate")
    _add_fuse_parser(sub)
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
