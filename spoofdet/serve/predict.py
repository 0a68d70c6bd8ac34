"""Score your own audio: ``spoofdet predict PATH... --model URI [--out scores.csv] [--json]``. No Ray.

Each PATH is a file or a folder (searched recursively for ``.wav .flac .ogg .mp3 .opus .aiff .aif
.au``, case-insensitive; hidden and ``__x`` folders skipped). Every file is decoded with
libsndfile (:func:`spoofdet.data.audio.load_16k`: any sample rate, mixed to mono, band-limited
resampling to 16 kHz) and scored under ``--length`` (:mod:`spoofdet.evaluation.protocols`): ``full`` by
default (the mean over 64,600-sample windows covering the whole file, so a long recording is
judged on all of it), or ``4s`` (the first 64,600 samples, as papers).

A file the model cannot judge gets no score (checks of :func:`spoofdet.data.audio.check_wave`):
``too_short`` under the shortest length judged, the model's receptive field or 0.1 s
(:data:`MIN_SECONDS`), whichever is longer (400 samples = 25 ms for the XLS-R and log-spectrogram
front-ends, so 0.1 s; raw AASIST needs 2,315 samples, about 0.145 s); ``silent`` when its RMS level
is below the silence limit (-60 dBFS). A clipped file is scored, with a ``warning``.

Output: CSV with one row per file, ``path,score,llr,decision,error,warning``:

* ``score``: the raw detector score, higher = more bona fide;
* ``llr``: the calibrated log-likelihood ratio (bona fide vs spoof), empty when the model stores no
  calibration;
* ``decision``: ``bonafide`` if ``llr >= threshold`` else ``spoof``; the default threshold is the
  Bayes threshold ``-ln(beta) ~= -0.642`` of the ASVspoof 5 costs (Pspoof 0.05, Cmiss 1, Cfa 10),
  ``--threshold`` sets another; empty without calibration (a raw score has no meaningful threshold);
* ``error``: why a file could not be scored (``decode_error: ...``, ``empty_file``, ``missing_file``,
  ``non_finite``, ``too_short``, ``silent``, ...), empty otherwise. Such files keep their row
  (score empty) and are also listed on stderr with a count per reason: nothing disappears silently;
* ``warning``: a scored file whose score may mislead: ``clipped: ...`` when more than 0.1 % of its
  samples sit at full scale (distortion the detector may take for an artefact); empty otherwise.

Exit codes: 0 when at least one file was scored (even if others failed: they are in the CSV and
on stderr); 2 when nothing could be scored, or for a bad option or model reference; 1 unexpected.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from spoofdet.data.corpora.folder import AUDIO_EXTENSIONS

#: ``spoofdet predict --help``: the docstring above, without its title and reST markup.
DESCRIPTION = re.sub(r":\w+:`([^`]+)`", r"\1", __doc__.split("\n\n", 1)[1]).replace("``", "")
EPILOG = (
    "examples:\n"
    "  spoofdet predict ~/clips --model models:/spoofdet-demo@champion "
    "--tracking-uri sqlite:///runs/demo/train/mlflow.db\n"
    "  spoofdet predict a.mp3 b.wav --model runs/demo/train/demo/final --out scores.csv --json\n"
    "  spoofdet predict --model models:/spoofdet-demo@champion --show-model   "
    "# metadata, calibration, eval tags"
)
COLUMNS = ("path", "score", "llr", "decision", "error", "warning")
EXIT_OK, EXIT_NOTHING_SCORED = 0, 2
#: Shortest audio predict judges (seconds), unless the model's receptive field is longer: a
#: shorter clip repeat-padded to a window is a few samples over and over, not speech.
MIN_SECONDS = 0.1
#: Receptive field assumed for front-ends that declare none (samples at 16 kHz): one frame of
#: XLS-R's conv feature encoder and of the log-spectrogram front-end, 400 samples = 25 ms.
DEFAULT_RECEPTIVE_FIELD = 400


@dataclass
class Prediction:
    """One file's row: raw score, LLR and decision (None when not available), or an error."""

    path: str
    score: float | None = None
    llr: float | None = None
    decision: str | None = None
    error: str = ""
    n_windows: int = 0
    orig_sample_rate: int | None = None
    warning: str = ""


def receptive_field(model: Any) -> int:
    """Samples one output frame of ``model`` sees: the largest of :data:`DEFAULT_RECEPTIVE_FIELD`,
    any sub-module's ``min_samples()`` (raw AASIST: 2,315) and the conv feature encoder of a
    wav2vec 2.0 / WavLM front-end (its config's ``conv_kernel`` / ``conv_stride``)."""
    sizes = [DEFAULT_RECEPTIVE_FIELD]
    for module in model.modules():
        declared = getattr(module, "min_samples", None)
        if callable(declared):
            sizes.append(int(declared()))
        config = getattr(module, "config", None)
        kernels, strides = (
            getattr(config, "conv_kernel", None),
            getattr(config, "conv_stride", None),
        )
        if kernels and strides:
            field, jump = 1, 1
            for k, st in zip(kernels, strides):
                field, jump = field + (int(k) - 1) * jump, jump * int(st)
            sizes.append(field)
    return max(sizes)


def min_seconds(model: Any) -> float:
    """Shortest audio ``predict`` scores with ``model``: its :func:`receptive_field` or
    :data:`MIN_SECONDS`, whichever is longer."""
    from spoofdet.data.schema import SAMPLE_RATE

    return max(MIN_SECONDS, receptive_field(model) / SAMPLE_RATE)


def collect_files(paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[Prediction]]:
    """Expand PATHs into audio files (folders recursively, sorted; duplicates once).

    Returns:
        ``(files, problems)``: ``problems`` holds a row for a folder without audio files. A
        named file is always kept, whatever its extension (decoding decides).
    """
    files: list[str] = []
    problems: list[Prediction] = []
    exts = tuple(e.lower() for e in AUDIO_EXTENSIONS)
    for p in map(str, paths):
        if os.path.isdir(p):
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
                found += [
                    os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(exts)
                ]
            if not found:
                problems.append(
                    Prediction(p, error=f"no_audio: no {'/'.join(exts)} files under this folder")
                )
            files += found
        else:
            files.append(p)
    return list(dict.fromkeys(files)), problems


def decide(llr: float, threshold: float) -> str:
    """``bonafide`` if ``llr >= threshold`` else ``spoof`` (the ASVspoof rule: ties accepted)."""
    return "bonafide" if llr >= threshold else "spoof"


def predict_files(
    detector: Any,
    files: Sequence[str],
    *,
    length: str = "full",
    hop: int | None = None,
    batch_size: int = 16,
    threshold: float | None = None,
    progress: bool | None = None,
    window: int | None = None,
) -> list[Prediction]:
    """Score ``files`` with a loaded detector (:func:`spoofdet.serve.registry.load_detector`).

    Args:
        detector: the loaded detector (model, calibration, device).
        files: audio file paths.
        length: ``full`` or ``4s`` (:mod:`spoofdet.evaluation.protocols`).
        hop: window hop for ``full`` (default half a window).
        window: samples per window (default 64,600; 66,800 for the Mamba seeds' checkpoints).
        batch_size: windows per forward pass.
        threshold: LLR decision threshold (default the ASVspoof 5 Bayes threshold).
        progress: tqdm bar on stderr (None: only on a terminal).

    Returns:
        One :class:`Prediction` per file, in order; files that cannot be decoded or judged
        (too short for the model, silent: see the module docstring) carry ``error``, scored
        files that may mislead (clipped) a ``warning``.
    """
    from tqdm import tqdm

    from spoofdet.serve.registry import DECISION_THRESHOLD

    threshold = DECISION_THRESHOLD if threshold is None else threshold
    bar = tqdm(
        files,
        desc="scoring",
        unit="file",
        file=sys.stderr,
        disable=None if progress is None else not progress,
    )
    min_secs = min_seconds(detector.model)
    return [
        _predict_file(detector, path, length, hop, window, batch_size, threshold, min_secs)
        for path in bar
    ]


def _predict_file(
    detector: Any,
    path: str,
    length: str,
    hop: int | None,
    window: int | None,
    batch_size: int,
    threshold: float,
    min_secs: float,
) -> Prediction:
    """One file's row (arguments as :func:`predict_files`'s, ``threshold`` resolved,
    ``min_secs`` the model's :func:`min_seconds`)."""
    from spoofdet.evaluation.protocols import WINDOW, clip_windows, score_waves

    loaded = load_checked(path, min_secs)
    if isinstance(loaded, Prediction):
        return loaded
    wave, sr, warning = loaded
    win = window or WINDOW
    windows = clip_windows(wave, length, window=win, hop=hop or win // 2)
    score = float(
        score_waves(detector.model, windows, device=detector.device, batch_size=batch_size).mean()
    )
    if not math.isfinite(score):
        return Prediction(path, error="non_finite: the model gave a NaN/Inf score", warning=warning)
    cal = detector.calibration
    llr = float(cal.apply(score)) if cal is not None else None
    decision = None if llr is None else decide(llr, threshold)
    return Prediction(path, score, llr, decision, "", len(windows), sr, warning)


def load_checked(path: str, min_secs: float) -> tuple[Any, int, str] | Prediction:
    """``(wave at 16 kHz, original rate, warning)`` of a file fit to score, or a
    :class:`Prediction` carrying why not (see the module docstring).

    The checks are :func:`spoofdet.data.audio.load_16k`'s (``check_wave``), with ``min_secs``;
    a file refused only for clipping is decoded anyway and scored with a ``clipped`` warning, as
    is one whose clipped share is over ``CLIPPED_WARN_SHARE`` but under the refusal limit.
    """
    from spoofdet.data import audio

    try:
        wave, sr = audio.load_16k(path, min_seconds=min_secs)
    except audio.AudioError as exc:
        if exc.reason != "clipped":
            return Prediction(path, error=f"{exc.reason}: {exc.detail}")
        import soundfile as sf

        raw, sr = sf.read(path, dtype="float32", always_2d=True)  # every other check passed
        warning = (
            f"clipped: {audio.clipped_share(raw):.2%} of the samples at full scale (over "
            f"{audio.CLIPPED_MAX_SHARE:.0%}: heavy distortion, the score may mislead)"
        )
        return audio.resample(audio.to_mono(raw), sr), sr, warning
    share = audio.clipped_share(wave)
    warning = ""
    if share > audio.CLIPPED_WARN_SHARE:
        warning = (
            f"clipped: {share:.2%} of the samples at full scale (warned above "
            f"{audio.CLIPPED_WARN_SHARE:.1%}): distortion may move the score"
        )
    return wave, sr, warning


def _value(v: Any) -> str:
    return "" if v is None else repr(float(v)) if isinstance(v, float) else str(v)


def write_csv(predictions: Sequence[Prediction], dest: str | os.PathLike | TextIO) -> None:
    """Write ``path,score,llr,decision,error`` rows: to a file as a whole (temporary file +
    rename), or to a stream."""

    def rows(fh: TextIO) -> None:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for p in predictions:
            w.writerow([_value(getattr(p, c)) for c in COLUMNS])

    if hasattr(dest, "write"):
        rows(dest)  # type: ignore[arg-type]
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            rows(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _report(listed: list[tuple[str, str]], head: str, column: str, limit: int) -> str:
    """``head`` with a count per kind (the text before ``:``), then each ``(path, text)``."""
    if not listed:
        return ""
    kinds = Counter(text.split(":", 1)[0] for _, text in listed)
    counts = ", ".join(f"{k} {v}" for k, v in kinds.most_common())
    lines = [f"{head} ({counts}); their rows have {column}:"]
    lines += [f"  {path}: {text}" for path, text in listed[:limit]]
    if len(listed) > limit:
        lines.append(f"  ... and {len(listed) - limit} more (see the CSV)")
    return "\n".join(lines)


def failure_report(predictions: Sequence[Prediction], limit: int = 50) -> str:
    """The files that could not be scored: a count per reason, then each file with its reason."""
    failed = [(p.path, p.error) for p in predictions if p.error]
    head = f"{len(failed)} of {len(predictions)} path(s) could not be scored"
    return _report(failed, head, "an error column", limit)


def warning_report(predictions: Sequence[Prediction], limit: int = 20) -> str:
    """The files scored with a warning: a count per kind, then each file with its warning."""
    warned = [(p.path, p.warning) for p in predictions if p.warning and not p.error]
    return _report(
        warned, f"{len(warned)} scored file(s) have a warning", "a warning column", limit
    )


def model_card(detector: Any) -> dict[str, Any]:
    """What the model is: reference, score definition, calibration, threshold, metadata, version tags."""
    card = detector.describe()
    ref = detector.ref
    if ref.kind == "registry":
        from spoofdet.serve.registry import version_tags

        card["version_tags"] = version_tags(ref.name, ref.version, ref.tracking_uri)
    return card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spoofdet predict``, which :func:`run` reads."""
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="audio files and/or folders (searched recursively)"
    )
    parser.add_argument(
        "--model",
        required=True,
        help="models:/NAME@champion, models:/NAME/VERSION, runs:/RUN/model, a train run's "
        "final/ folder or a downloaded spoofdet MLflow model folder (rebuilt from its files: "
        "no code from the model runs)",
    )
    parser.add_argument(
        "--out", default=None, metavar="FILE.csv", help="write the CSV here (default: stdout)"
    )
    parser.add_argument(
        "--length",
        choices=("full", "4s"),
        default="full",
        help="full: mean over --window-sample windows covering each file (default); "
        "4s: the first --window samples",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=64_600,
        help="samples per window (default 64,600; XLSR-Mamba and "
        "Fake-Mamba checkpoints were trained and evaluated on 66,800)",
    )
    parser.add_argument(
        "--hop",
        type=int,
        default=None,
        help="window hop for --length full (default half the window, 32,300)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="LLR decision threshold (default -ln(1.9) ~= -0.642, the ASVspoof 5 Bayes threshold)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="windows per forward pass (default 16)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store for registry URIs (default $MLFLOW_TRACKING_URI, "
        "else sqlite:///<$SPOOFDET_STORAGE or runs/train>/mlflow.db)",
    )
    parser.add_argument(
        "--show-model",
        action="store_true",
        help="print what the model is (metadata, calibration, threshold, version tags) as JSON and exit",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON summary (with the predictions unless --out)",
    )


def run(args: Any) -> int:
    """``spoofdet predict`` (arguments from :func:`add_arguments`); see the module docstring."""
    from spoofdet.evaluation.protocols import check_length
    from spoofdet.serve.registry import DECISION_THRESHOLD, load_detector

    if args.window < 400:
        raise ValueError(f"--window must be at least 400 samples, got {args.window}")
    if args.hop is None:
        args.hop = args.window // 2
    check_length(args.length, args.hop, args.window)
    if not args.paths and not args.show_model:
        raise ValueError("give at least one PATH (file or folder) to score, or --show-model")
    detector = load_detector(args.model, device=args.device, tracking_uri=args.tracking_uri)
    if args.show_model:
        print(json.dumps(model_card(detector), indent=2, default=str))
        return EXIT_OK
    files, problems = collect_files(args.paths)
    threshold = DECISION_THRESHOLD if args.threshold is None else args.threshold
    if detector.calibration is None:
        print(
            f"spoofdet predict: note: {detector.ref.label} stores no calibration: llr and decision "
            "stay empty (the score is raw, higher = more bona fide)",
            file=sys.stderr,
        )
    preds = (
        predict_files(
            detector,
            files,
            length=args.length,
            hop=args.hop,
            batch_size=args.batch_size,
            threshold=threshold,
            window=args.window,
        )
        + problems
    )
    for report in (failure_report(preds), warning_report(preds)):
        if report:
            print(f"spoofdet predict: {report}", file=sys.stderr)
    if args.out:
        write_csv(preds, args.out)
    elif not args.json:
        write_csv(preds, sys.stdout)
    scored = [p for p in preds if not p.error]
    if args.json:
        print(json.dumps(_json_summary(args, detector, preds, threshold), allow_nan=False))
    elif args.out:
        print(
            f"scored {len(scored)} of {len(preds)} file(s) with {detector.ref.label} -> {args.out}"
        )
    return EXIT_OK if scored else EXIT_NOTHING_SCORED


def _json_summary(
    args: Any, detector: Any, preds: list[Prediction], threshold: float
) -> dict[str, Any]:
    """The ``--json`` object: model, protocol, counts, failures, decisions (and the predictions
    when they are not written to ``--out``)."""
    from spoofdet.evaluation.protocols import describe_protocol

    scored = [p for p in preds if not p.error]
    summary = {
        "model": {**detector.ref.to_dict(), "calibrated": detector.calibration is not None},
        "protocol": describe_protocol(args.length, window=args.window, hop=args.hop),
        "threshold_llr": threshold if detector.calibration is not None else None,
        "n_paths": len(preds),
        "n_scored": len(scored),
        "n_failed": len(preds) - len(scored),
        "failed": [{"path": p.path, "error": p.error} for p in preds if p.error],
        "min_seconds": min_seconds(detector.model),
        "n_warnings": sum(bool(p.warning) for p in scored),
        "warnings": [{"path": p.path, "warning": p.warning} for p in scored if p.warning],
        "out": args.out,
        "decisions": dict(Counter(p.decision for p in scored if p.decision)),
    }
    if not args.out:
        summary["predictions"] = [asdict(p) for p in preds]
    return summary
