"""Codecfake (Xie et al. 2024): neural-codec resynthesis, 740,747 training files.

Layout::

    ROOT/label/train.txt, dev.txt, C1.txt .. C7.txt, A1.txt .. A3.txt
    ROOT/train/*.wav   ROOT/dev/*.wav
    ROOT/test/C1/*.wav .. ROOT/test/C7/*.wav, ROOT/test/A1/*.wav .. ROOT/test/A3/*.wav

(A test folder directly under ROOT, ``ROOT/C1/``, is accepted too, as some archives extract that way.)
Label lines have 3 whitespace columns ``<wav_name> <real|fake> <type_tag>``; ``real`` = bona fide.
The subset is the label file's stem (``train``, ``dev``, ``C1``, ``C3-1``, ``A2``...). Real clips
recur across test sets, so ``utt_id`` is ``<subset>/<wav_name>`` (unique in the corpus); the type
tag of fake rows (the codec) becomes ``attack``, and every tag is kept in ``extra['tag']``.
Files come at mixed sample rates: the shard job resamples them once to 16 kHz (reading them at
the wrong rate is what made one subset score 0 % detection in Codecfake issue #10).
"""

from __future__ import annotations

import os
from pathlib import Path

from spoofdet.data.corpora._common import (
    DuplicateTracker,
    Manifest,
    ManifestError,
    ProblemLog,
    check_id,
    check_text,
    corpus_root,
    finish,
    read_fields,
)
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "codecfake"
LABELS = {"real": BONAFIDE, "fake": SPOOF}
TRAIN_DEV = ("train", "dev")


def audio_dir(root: Path, subset: str) -> Path:
    if subset in TRAIN_DEV:
        return root / subset
    nested = root / "test" / subset
    if nested.is_dir() or not (root / subset).is_dir():
        return nested
    return root / subset


def label_files(root: Path) -> dict[str, Path]:
    """Subset name -> label file, train and dev first then test sets in name order.

    Raises:
        ManifestError: ``root/label`` exists but cannot be listed (its label files would be
            silently missing).
    """
    folder = root / "label"
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if e.name.endswith(".txt") and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        names = []
    except OSError as exc:
        raise ManifestError(
            [f"cannot list the label folder {folder}: {exc.strerror or exc}"],
            hint="Make it readable (e.g. chmod -R a+rX FOLDER) and run again.",
        ) from None
    files = {n[: -len(".txt")]: folder / n for n in names}
    order = [s for s in TRAIN_DEV if s in files] + [s for s in files if s not in TRAIN_DEV]
    return {s: files[s] for s in order}


def prepare_codecfake(
    root: str | Path,
    split: str | None = None,
    *,
    label_file: str | Path | None = None,
    check_audio: bool = True,
    progress: bool = False,
) -> Manifest:
    """Parse Codecfake label files into schema rows.

    Args:
        split: ``train``, ``dev``, ``test`` (every test set) or one subset (``C1``, ``A3``...);
            None parses every ``label/*.txt``.
        label_file: parse this one label file instead of ``root/label/*.txt``; its subset is
            ``split`` or, when None, the file's stem (``C1.txt`` -> ``C1``). Audio paths still
            point under ``root``.

    Raises:
        ManifestError: no ``label/`` folder, a requested subset without label file, a line
            without 3 columns, an unknown label, a duplicate wav name within a subset.
    """
    root = corpus_root(root)
    if label_file is not None:
        label_file = corpus_root(label_file)
        if not label_file.is_file():
            raise ManifestError([f"Codecfake label file not found at {label_file}"])
        if split == "test":
            raise ValueError(
                "with a single label file, split names its subset (e.g. C1), not 'test'"
            )
        split = split or label_file.stem
        files = {split: label_file}
    else:
        files = label_files(root)
    if not files:
        raise ManifestError(
            [f"no label files found in {root / 'label'}"],
            hint="--root must be the Codecfake folder holding label/*.txt, train/, dev/ and test/.",
        )
    if split == "test":
        wanted = [s for s in files if s not in TRAIN_DEV]
    elif split is not None:
        if split not in files:
            raise ManifestError(
                [f"no label file for subset {split!r} in {root / 'label'}; found {list(files)}"]
            )
        wanted = [split]
    else:
        wanted = list(files)
    builder = TableBuilder()
    log = ProblemLog()
    for subset in wanted:
        path = files[subset]
        folder = str(audio_dir(root, subset))
        dups = DuplicateTracker(log)
        for lineno, cols in read_fields(path):
            if len(cols) != 3:
                log.add(
                    path,
                    lineno,
                    f"expected 3 columns '<wav_name> <real|fake> <type_tag>', got {len(cols)}",
                )
                continue
            name, label, tag = cols
            if label not in LABELS:
                log.add(path, lineno, f"unknown label {label!r}: expected 'real' or 'fake'")
                continue
            if not check_id(name, path, lineno, log) or not dups.check(name, path, lineno):
                continue
            if not check_text(f"{subset}/{name}", f"{folder}/{name}", path, lineno, log):
                continue
            builder.append(
                utt_id=f"{subset}/{name}",
                corpus=CORPUS,
                subset=subset,
                label=LABELS[label],
                attack=BONAFIDE_ATTACK if label == "real" else tag,
                source_path=f"{folder}/{name}",
                extra={"tag": tag},
            )
    log.raise_if_any()
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
