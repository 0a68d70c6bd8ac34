"""A generic CSV manifest: bring any corpus without writing a parser.

The file (``--root FILE.csv``, or a folder holding ``manifest.csv``) has a header with at least
``path``; paths are relative to the CSV's folder and may not leave it. Known optional columns:
``label`` (``bonafide``/``bona-fide``/``real``/``1`` or ``spoof``/``fake``/``0``; empty or
absent = unlabelled), ``utt_id`` (default: the path; never whitespace, since score files are
whitespace-separated: give an ``utt_id`` column when paths hold spaces), ``subset`` (default
``all``), ``attack``, ``speaker``, ``codec``, ``transmission``, ``vocoder``, ``phase``. Any other
column goes into ``extra``. Paths may hold spaces, not control characters (newline, tab).
A key for ``spoofdet evaluate`` (``require_path=False``, which never opens audio) may lack the
``path`` column: its rows then need an ``utt_id`` and get no ``source_path``.
Example::

    path,label,attack,subset
    audio/a.wav,bonafide,,train
    audio/b.flac,spoof,tts-x,train
"""

from __future__ import annotations

import csv
from pathlib import Path

from spoofdet.data.corpora._common import (
    DuplicateTracker,
    Manifest,
    ManifestError,
    ProblemLog,
    check_text,
    corpus_root,
    finish,
    open_text,
    safe_join,
)
from spoofdet.data.schema import BONAFIDE, BONAFIDE_ATTACK, SPOOF, TableBuilder

CORPUS = "csv"
LABELS = {
    "bonafide": BONAFIDE,
    "bona-fide": BONAFIDE,
    "bona fide": BONAFIDE,
    "real": BONAFIDE,
    "1": BONAFIDE,
    "spoof": SPOOF,
    "fake": SPOOF,
    "0": SPOOF,
}
OPTIONAL = (
    "utt_id",
    "label",
    "subset",
    "attack",
    "speaker",
    "codec",
    "transmission",
    "vocoder",
    "phase",
)


def resolve_csv(root: Path) -> Path:
    if root.is_dir():
        root = root / "manifest.csv"
    if not root.is_file():
        raise ManifestError(
            [f"CSV manifest not found at {root}"],
            hint="Give --root a .csv file, or a folder holding manifest.csv.",
        )
    return root


def prepare_csv(
    root: str | Path,
    split: str | None = None,
    *,
    check_audio: bool = True,
    progress: bool = False,
    require_path: bool = True,
) -> Manifest:
    """Parse a CSV manifest into schema rows; ``split`` keeps only rows of that subset.

    ``require_path=False`` (with ``check_audio=False``: a key for evaluation, which never opens
    audio) accepts a header without ``path``; every row then needs an ``utt_id``. A manifest to
    prepare or train from keeps requiring ``path`` (the default).

    Raises:
        ManifestError: no ``path`` column (without it, no ``utt_id`` column or an empty
            ``utt_id``), a row with the wrong number of fields, an unknown label, a path
            outside the CSV's folder or with control characters, an ``utt_id`` with whitespace
            or control characters, a duplicate ``utt_id``; each with line.
    """
    csv_path = resolve_csv(corpus_root(root))
    base = csv_path.parent
    builder = TableBuilder()
    log = ProblemLog()
    dups = DuplicateTracker(log)
    with open_text(csv_path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        has_path = "path" in header
        if not has_path and (require_path or check_audio):
            raise ManifestError([f"{csv_path}:1: header needs a 'path' column, got {header!r}"])
        if not has_path and "utt_id" not in header:
            raise ManifestError(
                [
                    f"{csv_path}:1: a key without a 'path' column needs an 'utt_id' column, "
                    f"got {header!r}"
                ]
            )
        if len(set(header)) != len(header):
            raise ManifestError([f"{csv_path}:1: repeated column name in header {header!r}"])
        for row in reader:
            lineno = reader.line_num
            if not row or not any(f.strip() for f in row):
                continue
            if len(row) != len(header):
                log.add(
                    csv_path,
                    lineno,
                    f"expected {len(header)} fields like the header, got {len(row)}",
                )
                continue
            rec = {h: v.strip() for h, v in zip(header, row)}
            rel = rec.pop("path") if has_path else ""
            path = safe_join(base, rel) if rel else None
            if has_path and path is None:
                log.add(csv_path, lineno, f"path {rel!r} is empty or leads outside {base}")
                continue
            if not has_path and not rec.get("utt_id"):
                log.add(csv_path, lineno, "empty utt_id (a key without 'path' needs one per row)")
                continue
            label_text = rec.pop("label", "")
            label = None
            if label_text:
                label = LABELS.get(label_text.lower())
                if label is None:
                    log.add(
                        csv_path,
                        lineno,
                        f"unknown label {label_text!r}: expected one of {sorted(LABELS)} or empty",
                    )
                    continue
            utt_id = rec.pop("utt_id", "") or rel.replace("\\", "/")
            if not check_text(utt_id, None if path is None else str(path), csv_path, lineno, log):
                continue
            if not dups.check(utt_id, csv_path, lineno):
                continue
            subset = rec.pop("subset", "") or "all"
            attack = rec.pop("attack", "") or None
            if label == BONAFIDE:
                attack = BONAFIDE_ATTACK
            elif label == SPOOF and attack == BONAFIDE_ATTACK:
                log.add(csv_path, lineno, "spoof row with attack 'bonafide'")
                continue
            fields = {k: (rec.pop(k, "") or None) for k in OPTIONAL[4:]}
            if split is not None and subset != split:
                continue
            builder.append(
                utt_id=utt_id,
                corpus=CORPUS,
                subset=subset,
                label=label,
                attack=attack,
                source_path=None if path is None else str(path),
                extra={k: v for k, v in rec.items() if v} or None,
                **fields,
            )
    log.raise_if_any()
    return finish(builder, corpus=CORPUS, root=base, check_audio=check_audio, progress=progress)
