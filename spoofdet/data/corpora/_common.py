"""What every corpus parser shares: line reading with file:line errors, path checks, the
missing-audio scan and the final validation step that every ``prepare_<corpus>`` ends with.

Two guarantees hold for every parser, because :func:`finish` enforces them on the whole table:

- Every ``source_path`` is absolute and normalised (:func:`corpus_root`: ``~`` expanded, ``.`` and
  ``..`` removed, symlinks kept as given), so one corpus named by any spelling of its root gives
  the same manifest (and ``prepare`` can resume it).
- No ``utt_id`` holds whitespace or control characters (score files are whitespace-separated
  text: ``a b.wav`` would become two fields after the whole set was scored), and no
  ``source_path`` holds control characters (newline, tab...) or undecodable bytes. Spaces in
  paths are fine. Parsers report such rows with file and line; :func:`finish` is the backstop.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from spoofdet.data.schema import BONAFIDE, SPOOF, SchemaError, TableBuilder, validate_table
from spoofdet.errors import MAX_LISTED, Problems, SpoofdetError


class ManifestError(SpoofdetError):
    """A protocol, key or manifest file is malformed. The message names file and line(s)."""

    def __init__(self, problems: Sequence[str], total: int | None = None, hint: str = "") -> None:
        problems = list(problems)
        total = len(problems) if total is None else total
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
        head = f"{total} problem(s) in corpus files:" if total > 1 else "problem in corpus file:"
        super().__init__(f"{head}\n  {shown}{more}" + (f"\n{hint}" if hint else ""), problems)


class ProblemLog(Problems):
    """The problems found in corpus files (every one kept), raised together as a ManifestError."""

    def raise_if_any(self, hint: str = "") -> None:
        if self:
            raise ManifestError(self.items, hint=hint)


def corpus_root(root: str | os.PathLike[str]) -> Path:
    """``root`` as every parser stores it: ``~`` expanded, absolute, ``.``/``..`` and doubled
    separators removed (``os.path.normpath``). Symlinks are not resolved: a corpus reached
    through a link keeps the link's path, in every parser alike."""
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(root)))))


#: Characters no path may hold: C0/C1 control characters (newline, tab, ...) and the Unicode
#: line/paragraph separators, which break the line-based lists and logs paths are written to.
_BAD_PATH = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BAD_PATH_RE2 = r"[\x{00}-\x{1f}\x{7f}-\x{9f}\x{2028}\x{2029}]"
#: Characters no utt_id may hold: any whitespace (what ``str.split`` splits on) and controls.
_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_BAD_ID_RE2 = r"[\p{Z}\x{00}-\x{1f}\x{7f}-\x{9f}]"
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _undecodable(text: str) -> bool:
    """True for file names that were not valid UTF-8 (Python keeps their bytes as surrogates)."""
    return _SURROGATE.search(text) is not None


def id_text_problem(utt_id: str) -> str | None:
    """Why ``utt_id`` cannot be written to a score file (whitespace, control characters or
    undecodable bytes), as a message saying what to do; None when it can."""
    if _undecodable(utt_id):
        return (
            f"utt_id {utt_id!r} is not valid UTF-8 (undecodable bytes in a file name): "
            "rename the file with a UTF-8 name"
        )
    bad = _BAD_ID.search(utt_id)
    if bad is None:
        return None
    what = "whitespace" if bad.group().isspace() else "a control character"
    return (
        f"utt_id {utt_id!r} contains {what} ({bad.group()!r}): score files are "
        "whitespace-separated, so an id cannot hold a space, tab, newline or control character; "
        "rename the file (e.g. spaces to '_') or give the row an id without them"
    )


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a ``source_path`` (control characters such as a newline or tab,
    or undecodable bytes), as a message saying what to do; None when it can. Spaces are fine."""
    if _undecodable(path):
        return (
            f"audio path {path!r} is not valid UTF-8 (undecodable bytes in a file or folder "
            "name): rename it with a UTF-8 name"
        )
    bad = _BAD_PATH.search(path)
    if bad is None:
        return None
    return (
        f"audio path {path!r} contains the control character {bad.group()!r} (newline, tab...): "
        "such names break every line-based list and score file; rename the file or folder"
    )


def require_file(path: Path, what: str, hint: str = "") -> Path:
    """Return ``path`` if it is a file, else raise a ManifestError saying what was expected there."""
    if not path.is_file():
        msg = f"{what} not found at {path}"
        raise ManifestError([msg], hint=hint)
    return path


def read_fields(path: Path, *, sep: str | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)`` for each non-blank line of a text protocol file.

    Fields are split on whitespace (``sep=None``) or on ``sep``. Handles a UTF-8 BOM and CRLF.
    """
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            yield lineno, (line.split() if sep is None else [f.strip() for f in line.split(sep)])


def open_text(path: Path):
    """Open a protocol/key/manifest text file (UTF-8, BOM allowed, newlines kept for ``csv``);
    an OS error (permission denied, EIO) becomes a ManifestError naming the file."""
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ManifestError(
            [f"cannot read {path}: {exc.strerror or exc}"],
            hint="Make the file readable (permissions, mount) and run again.",
        ) from None


def safe_join(root: Path, relative: str) -> Path | None:
    """Join ``relative`` under ``root``; None if the result escapes ``root`` (``..``, absolute)."""
    root_norm = os.path.normpath(os.path.abspath(root))
    joined = os.path.normpath(os.path.join(root_norm, relative))
    if joined != root_norm and not joined.startswith(root_norm + os.sep):
        return None
    return Path(joined)


def outside_root(paths: pa.ChunkedArray, root: Path) -> list[str]:
    """The paths that do not lie under ``root`` once normalised (vectorised pre-filter: only
    paths lacking the root prefix or containing ``..`` are normalised in Python)."""
    prefix = os.path.normpath(os.path.abspath(root)) + os.sep
    suspect = pc.or_(pc.invert(pc.starts_with(paths, prefix)), pc.match_substring(paths, ".."))
    candidates = paths.filter(pc.fill_null(suspect, False)).to_pylist()
    return [p for p in candidates if safe_join(root, p) is None]


def find_missing(paths: Sequence[str], *, progress: bool = False) -> list[str]:
    """Return the paths that are not existing files, preserving input order (see
    :func:`scan_audio`, which also tells non-regular files and unreadable folders apart)."""
    missing, _, _ = scan_audio(paths, progress=progress)
    return missing


def scan_audio(
    paths: Sequence[str], *, progress: bool = False
) -> tuple[list[str], list[str], list[str]]:
    """Check that every path is an existing regular file: ``(missing, not_regular, unreadable)``.

    ``missing``: nothing there (input order). ``not_regular``: ``"path (a FIFO)"`` for folders,
    FIFOs, devices and sockets, which the shard job will quarantine as ``not_regular_file``
    without opening them. ``unreadable``: ``"folder: OS error"`` for each folder that can be
    neither listed nor searched, whose files cannot be told present or missing.

    Lists each parent directory once (one ``scandir`` instead of one ``stat`` per file), which
    is what makes checking 600k files in a few flat ``flac/`` folders take seconds. A folder
    that cannot be listed (no read permission) falls back to one ``stat`` per file.
    """
    by_dir: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_dir.setdefault(os.path.dirname(p), []).append(i)
    state = ["missing"] * len(paths)
    unreadable: list[str] = []
    dirs = by_dir.items()
    if progress and len(paths) > 20_000:
        from tqdm import tqdm

        dirs = tqdm(
            dirs, total=len(by_dir), desc="checking audio files", unit="dir", file=sys.stderr
        )
    for directory, idxs in dirs:
        try:
            files: set[str] = set()
            others: dict[str, os.DirEntry] = {}
            with os.scandir(directory or ".") as it:
                for e in it:  # is_file() needs no stat call (d_type) except for symlinks
                    if e.is_file():
                        files.add(e.name)
                    else:
                        others[e.name] = e
            for i in idxs:
                name = os.path.basename(paths[i])
                state[i] = "file" if name in files else _entry_kind(others.get(name))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            failed = None
            for i in idxs:
                try:
                    state[i] = _kind(os.stat(paths[i]).st_mode)
                except (FileNotFoundError, NotADirectoryError):
                    state[i] = "missing"
                except OSError as err:
                    failed = err
                    state[i] = "unknown"
            if failed is not None:
                unreadable.append(f"{directory}: {exc.strerror or exc}")
    missing = [p for p, st in zip(paths, state) if st == "missing"]
    odd = [f"{p} ({st})" for p, st in zip(paths, state) if st not in ("file", "missing", "unknown")]
    return missing, odd, unreadable


def _entry_kind(entry: os.DirEntry | None) -> str:
    """What a listed non-file entry is; ``missing`` for none or a broken symlink."""
    if entry is None:
        return "missing"
    try:
        return _kind(entry.stat().st_mode)
    except OSError:
        return "missing"


def _kind(mode: int) -> str:
    """``file`` for a regular file, else what it is (as the shard job's detail names it)."""
    if stat.S_ISREG(mode):
        return "file"
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


@dataclass(frozen=True)
class Manifest:
    """What a ``prepare_<corpus>`` returns.

    Attributes:
        table: metadata rows conforming to :data:`spoofdet.data.schema.UTTERANCE_SCHEMA` (``audio`` null).
        missing_audio: ``source_path`` of rows whose audio file does not exist. Those rows stay
            in ``table`` (the shard job quarantines them with reason ``missing_file``); they are
            never dropped silently.
        not_regular: ``"path (a FIFO)"`` for rows whose path is a folder, FIFO, device or
            socket. Those rows stay too: the shard job quarantines them as ``not_regular_file``
            without opening them (a FIFO would block it forever).
        audio_checked: False when built with ``check_audio=False``.
    """

    corpus: str
    root: str
    table: pa.Table
    missing_audio: tuple[str, ...] = field(default=())
    audio_checked: bool = True
    not_regular: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return self.table.num_rows

    def summary(self) -> dict[str, Any]:
        """Counts: ``rows``, ``bonafide``, ``spoof``, ``unlabelled``, ``by_attack``, ``by_subset``
        (each with its own rows/bonafide/spoof/by_attack), ``by_phase``, missing audio and
        paths that are not regular files."""
        out = {"corpus": self.corpus, "root": self.root, **_counts(self.table)}
        out["by_subset"] = {
            subset: _counts(self.table.filter(pc.equal(self.table["subset"], subset)))
            for subset in _ordered_values(self.table["subset"])
        }
        phases = _ordered_values(self.table["phase"])
        if phases:
            out["by_phase"] = {
                p: _counts(self.table.filter(pc.equal(self.table["phase"], p))) for p in phases
            }
        out["audio_checked"] = self.audio_checked
        out["missing_audio"] = len(self.missing_audio)
        out["missing_audio_examples"] = list(self.missing_audio[:MAX_LISTED])
        out["not_regular_files"] = len(self.not_regular)
        out["not_regular_examples"] = list(self.not_regular[:MAX_LISTED])
        return out


def _ordered_values(column: pa.ChunkedArray) -> list[str]:
    """Distinct non-null values in first-seen order."""
    return [v for v in pc.unique(column).to_pylist() if v is not None]


def _counts(table: pa.Table) -> dict[str, Any]:
    labels = table["label"]
    labelled = table.filter(pc.is_valid(labels))
    attacks = Counter(v if v is not None else "unknown" for v in labelled["attack"].to_pylist())
    return {
        "rows": table.num_rows,
        "bonafide": pc.sum(pc.equal(labels, BONAFIDE)).as_py() or 0,
        "spoof": pc.sum(pc.equal(labels, SPOOF)).as_py() or 0,
        "unlabelled": labels.null_count,
        "by_attack": dict(sorted(attacks.items())),
    }


def finish(
    builder: TableBuilder, *, corpus: str, root: Path, check_audio: bool, progress: bool = False
) -> Manifest:
    """The last step of every parser: build the table, validate it, check ids, paths and audio.

    Raises:
        ManifestError: duplicate ``utt_id`` (naming both occurrences is the parser's job; this
            is the backstop), an ``utt_id`` with whitespace or control characters, a
            ``source_path`` with control characters or outside ``root``, any schema violation,
            or (with ``check_audio``) audio folders that cannot be read, whose files would
            otherwise be reported missing or silently dropped.
    """
    table = builder.to_table()
    try:
        validate_table(table, where=f"{corpus} manifest from {root}")
    except SchemaError as exc:
        raise ManifestError([str(exc)]) from exc
    bad_text = _bad_text_rows(table)
    if bad_text:
        raise ManifestError(bad_text, hint="Rename the files (or fix the ids) and run again.")
    escaped = outside_root(table["source_path"], root)
    if escaped:
        raise ManifestError(
            [f"audio path {p} is outside the corpus root {root}" for p in escaped],
            hint="Paths in protocols and manifests must stay inside --root.",
        )
    missing: list[str] = []
    odd: list[str] = []
    if check_audio:
        paths = table["source_path"].drop_null().to_pylist()
        missing, odd, unreadable = scan_audio(paths, progress=progress)
        if unreadable:
            raise ManifestError(
                [f"cannot list audio folder {u}" for u in unreadable],
                hint="Their files could be neither found nor read: make the folders readable "
                "(e.g. chmod -R a+rX FOLDER) and run again.",
            )
    return Manifest(
        corpus=corpus,
        root=str(root),
        table=table,
        missing_audio=tuple(missing),
        audio_checked=check_audio,
        not_regular=tuple(odd),
    )


def _bad_text_rows(table: pa.Table) -> list[str]:
    """One message per row whose ``utt_id`` or ``source_path`` could not be written to a score
    file or list (vectorised pre-filter; the few suspects are explained in Python)."""
    out = []
    for column, pattern, explain in (
        ("utt_id", _BAD_ID_RE2, id_text_problem),
        ("source_path", _BAD_PATH_RE2, path_problem),
    ):
        values = table[column]
        suspect = pc.fill_null(pc.match_substring_regex(values, pattern), False)
        for value in values.filter(suspect).to_pylist():
            problem = explain(value)
            if problem is not None:
                out.append(problem)
    return out


class DuplicateTracker:
    """Reports a repeated ``utt_id`` with the line of its first occurrence."""

    def __init__(self, log: ProblemLog) -> None:
        self._seen: dict[str, str] = {}
        self._log = log

    def check(self, utt_id: str, path: Path, lineno: int) -> bool:
        first = self._seen.get(utt_id)
        if first is not None:
            self._log.add(path, lineno, f"duplicate utt_id {utt_id!r} (first seen at {first})")
            return False
        self._seen[utt_id] = f"{path}:{lineno}"
        return True


def check_id(utt_id: str, path: Path, lineno: int, log: ProblemLog) -> bool:
    """An id becomes a file name and a score-file field: it must not be empty, contain a path
    separator, whitespace or control characters (:func:`id_text_problem`)."""
    if not utt_id or "/" in utt_id or "\\" in utt_id or utt_id in (".", ".."):
        log.add(
            path,
            lineno,
            f"invalid utterance id {utt_id!r}: ids become file names and may not contain '/' or '\\'",
        )
        return False
    return check_text(utt_id, None, path, lineno, log)


def check_text(
    utt_id: str | None, source: str | None, path: Path, lineno: int | None, log: ProblemLog
) -> bool:
    """Log (at ``path:lineno``) the first of: an ``utt_id`` with whitespace or control
    characters, a ``source`` path with control characters; False if one was logged."""
    problem = id_text_problem(utt_id) if utt_id is not None else None
    if problem is None and source is not None:
        problem = path_problem(source)
    if problem is None:
        return True
    log.add(path, lineno, problem)
    return False
