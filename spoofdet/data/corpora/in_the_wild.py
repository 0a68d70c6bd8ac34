"""In-the-Wild (Mueller et al. 2022, ``release_in_the_wild``): an evaluation corpus.

Layout::

    ROOT/meta.csv          header 'file,speaker,label', e.g. '0.wav,Alec Guinness,spoof'
    ROOT/0.wav ... ROOT/31778.wav

Labels are ``bona-fide`` (with a hyphen) and ``spoof``. Counts: 19,963 bona fide, 11,816 spoof.
``utt_id`` is the file name (``0.wav``), as in the score files the seed repositories write.
"""

from __future__ import annotations

import csv
from pathlib import Path

from spoofdet.data.corpora._common import (
    DuplicateTracker,
    Manifest,
    ManifestError,
    ProblemLog,
    check_id,
    corpus_root,
    finish,
    open_text,
    require_file,
)
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "in-the-wild"
HEADER = ["file", "speaker", "label"]
LABELS = {"bona-fide": BONAFIDE, "spoof": SPOOF}


def prepare_in_the_wild(
    root: str | Path,
    split: str | None = None,
    *,
    meta_file: str | Path | None = None,
    check_audio: bool = True,
    progress: bool = False,
) -> Manifest:
    """Parse ``meta.csv`` into schema rows (``subset`` = ``eval``; the corpus has no other split).

    Args:
        meta_file: read this file (same format) instead of ``root/meta.csv``; audio paths
            still point under ``root``.

    Raises:
        ManifestError: missing ``meta.csv``, wrong header or column count, unknown label,
            duplicate file name; each with file and line.
    """
    root = corpus_root(root)
    if split not in (None, "eval"):
        raise ValueError(f"{CORPUS} has a single split 'eval', not {split!r}")
    meta_path = root / "meta.csv" if meta_file is None else corpus_root(meta_file)
    meta = require_file(
        meta_path,
        "In-the-Wild meta.csv",
        hint="--root must be the release_in_the_wild folder holding meta.csv and the wav files.",
    )
    builder = TableBuilder()
    log = ProblemLog()
    dups = DuplicateTracker(log)
    with open_text(meta) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != HEADER:
            raise ManifestError(
                [f"{meta}:1: header must be {','.join(HEADER)!r}, got {','.join(header or [])!r}"]
            )
        for row in reader:
            lineno = reader.line_num
            if not row or not any(f.strip() for f in row):
                continue
            if len(row) != 3:
                log.add(
                    meta,
                    lineno,
                    f"expected 3 columns 'file,speaker,label', got {len(row)}: {row!r}",
                )
                continue
            name, speaker, label = (f.strip() for f in row)
            if label not in LABELS:
                log.add(meta, lineno, f"unknown label {label!r}: expected 'bona-fide' or 'spoof'")
                continue
            if not check_id(name, meta, lineno, log) or not dups.check(name, meta, lineno):
                continue
            builder.append(
                utt_id=name,
                corpus=CORPUS,
                subset="eval",
                label=LABELS[label],
                attack=BONAFIDE_ATTACK if LABELS[label] == BONAFIDE else None,
                speaker=speaker,
                source_path=str(root / name),
            )
    log.raise_if_any()
    return finish(builder, corpus=CORPUS, root=root, check_audio=check_audio, progress=progress)
