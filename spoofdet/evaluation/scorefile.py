"""Score files: ``<utt_id> <score>`` lines, read strictly, written whole, matched to a key loudly.

* :func:`read_scores` reads two whitespace-separated columns per line (blank lines skipped).
  Other layouts written by the seed repositories are read only when named explicitly
  (``layout=``, see :data:`LAYOUTS`). Every malformed line is reported at once as ``file:line``.
* :func:`write_scores` writes a whole file through a temporary file and a rename, so a reader
  never sees half a file and a re-run never appends duplicates.
* :func:`match_scores` aligns scores with key ids. Missing, extra and duplicated ids are counted
  and shown in one error, with a hint when a simple renaming (``0`` vs ``0.wav``, a missing
  ``C1/`` prefix) would fix them. Nothing is ever intersected silently.
* ASV scores for the t-DCF (``read_asv_scores_2019`` / ``_2021``) are read by
  :mod:`spoofdet.evaluation.asv_scores`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spoofdet.errors import MAX_LISTED, Problems, SpoofdetError

#: How many examples an error message shows per kind of problem.
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Layout:
    """Where the id and the score sit in a score-file line, whether to negate the score, and
    the header line the file must start with (``()``: none; a header is required when given)."""

    n_columns: int
    id_col: int
    score_col: int
    negate: bool
    doc: str
    header: tuple[str, ...] = ()


#: Score-file layouts. ``id-score`` is the project's format and the default; the others are
#: those the seed repositories write, accepted only when asked for by name (except the official
#: ASVspoof 5 file, whose exact header line :func:`read_scores` recognises, see there).
LAYOUTS: dict[str, Layout] = {
    "id-score": Layout(
        2, 0, 1, False, "<utt_id> <score> (spoofdet, SSL_Anti-spoofing, XLSR-Mamba, SLS, Nes2Net)"
    ),
    "aasist": Layout(4, 0, 3, False, "<utt_id> <attack|-> <key> <score> (AASIST 2019)"),
    "codecfake": Layout(3, 0, 1, False, "<file> <P(real)> <real|fake> (Codecfake)"),
    "fake-mamba-itw": Layout(3, 0, 2, False, "<file> <label> <score> (Fake-Mamba In-the-Wild)"),
    "amsdf": Layout(
        3, 0, 1, True, "<file> <fake_logit> <0|1> (AMSDF; the fake logit is negated on reading)"
    ),
    "asvspoof5": Layout(
        2,
        0,
        1,
        False,
        "header 'filename<TAB>cm-score', then <filename> <score> (ASVspoof 5 official, "
        "tab- or space-separated)",
        header=("filename", "cm-score"),
    ),
}


class ScoreFileError(SpoofdetError):
    """A score file is malformed or does not match its key. The message names file and line(s)."""


@dataclass(frozen=True)
class Scores:
    """The rows of one score file, in file order (duplicated ids are kept, see :meth:`duplicates`)."""

    path: str
    ids: list[str]
    scores: np.ndarray
    lines: list[int]
    #: The :data:`LAYOUTS` key it was read with (renaming hints keep its columns).
    layout: str = "id-score"

    def __len__(self) -> int:
        return len(self.ids)

    def duplicates(self) -> dict[str, list[int]]:
        """Id -> line numbers, for every id that occurs more than once."""
        where: dict[str, list[int]] = {}
        for utt, line in zip(self.ids, self.lines):
            where.setdefault(utt, []).append(line)
        return {k: v for k, v in where.items() if len(v) > 1}


def _Problems() -> Problems:  # noqa: N802 - the score-file collector: first MAX_LISTED kept
    return Problems(limit=MAX_LISTED)


def _raise_problems(path: Path | str, problems: Problems, what: str, hint: str = "") -> None:
    raise ScoreFileError(
        f"{problems.total} malformed line(s) in {what} {path}:\n  {problems.listing()}"
        + (f"\n{hint}" if hint else ""),
        list(problems),
    )


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_scores(path: str | os.PathLike, *, layout: str = "id-score") -> Scores:
    """Read a score file.

    Args:
        path: the file.
        layout: a key of :data:`LAYOUTS`; the default is strictly two columns ``<utt_id> <score>``.
            A layout with a header (``asvspoof5``: ``filename<TAB>cm-score``) requires it as the
            first non-blank line. With the default, a first line that is exactly the header of
            such a layout switches to it (so ``spoofdet evaluate --format asvspoof5`` reads the
            official score TSV without ``--score-layout``): that line can never be a score line,
            its second field not being a number, so nothing is guessed; the returned
            :class:`Scores` names the layout used. Any other header line is an error.

    Raises:
        ScoreFileError: missing or empty file, a missing or different header line, a line with
            the wrong number of columns, a score that is not a finite number; all malformed
            lines are listed as ``file:line``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown score-file layout {layout!r}: expected one of {list(LAYOUTS)}")
    lay = LAYOUTS[layout]
    path = Path(path)
    if not path.is_file():
        raise ScoreFileError(f"score file not found: {path}")
    ids: list[str] = []
    values: list[float] = []
    lines: list[int] = []
    problems = _Problems()
    first_line = None  # the first non-blank line's number
    header_like = False  # the default layout's first line had a non-number score (a header?)
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            cols = line.split()
            if not cols:
                continue
            if first_line is None:
                first_line = lineno
                if layout == "id-score":
                    layout = next(
                        (n for n, la in LAYOUTS.items() if la.header and tuple(cols) == la.header),
                        layout,
                    )
                    lay = LAYOUTS[layout]
                if lay.header:
                    if tuple(cols) != lay.header:
                        want = "\t".join(lay.header)
                        problems.append(
                            f"{path}:{lineno}: a score file of layout {layout} starts with the "
                            f"header line {want!r}, got {line.strip()[:80]!r}; "
                            "put that header line first (in place of any other), or read a "
                            "headerless '<utt_id> <score>' file with --score-layout id-score "
                            "(the default)"
                        )
                    continue
            if len(cols) != lay.n_columns:
                problems.append(
                    f"{path}:{lineno}: expected {lay.n_columns} columns {lay.doc.split(' (')[0]}, "
                    f"got {len(cols)}: {line.strip()[:80]!r}"
                )
                continue
            value = _parse_float(cols[lay.score_col])
            if value is None:
                header_like = header_like or (lineno == first_line and layout == "id-score")
                problems.append(
                    f"{path}:{lineno}: score {cols[lay.score_col]!r} (column {lay.score_col + 1}) "
                    "is not a finite number"
                )
                continue
            ids.append(cols[lay.id_col])
            values.append(-value if lay.negate else value)
            lines.append(lineno)
    if problems:
        hint = (
            (
                "spoofdet score files have two columns '<utt_id> <score>'; for a seed "
                f"repository's layout pass layout= (--score-layout) one of {list(LAYOUTS)}"
            )
            if layout == "id-score"
            else ""
        )
        if header_like:
            hint += (
                f"\nline {first_line} looks like a header: the only header read is the official "
                "ASVspoof 5 one, 'filename<TAB>cm-score' (recognised by itself, or pass "
                "--score-layout asvspoof5); remove any other header line"
            )
        _raise_problems(path, problems, "score file", hint)
    if not ids:
        raise ScoreFileError(f"score file {path} holds no scores")
    return Scores(str(path), ids, np.asarray(values, dtype=np.float64), lines, layout)


def write_scores(
    path: str | os.PathLike, ids: Sequence[str], scores: Sequence[float] | np.ndarray
) -> Path:
    """Write ``<utt_id> <score>`` lines as a whole file (temporary file + atomic rename).

    Scores are written with ``repr`` precision, so reading the file back gives the same floats.

    Raises:
        ValueError: lengths differ, an id is empty or holds whitespace, an id repeats, or a
            score is not finite. Nothing is written then.
    """
    path = Path(path)
    values = np.asarray(scores, dtype=np.float64).ravel()
    if len(ids) != values.size:
        raise ValueError(f"{len(ids)} ids but {values.size} scores")
    seen: set[str] = set()
    for i, utt in enumerate(ids):
        if not utt or utt.split() != [utt]:
            raise ValueError(
                f"id #{i} {utt!r} is empty or contains whitespace; score-file ids must be single tokens"
            )
        if utt in seen:
            raise ValueError(
                f"id {utt!r} occurs more than once (again at position {i}); write each utterance once"
            )
        seen.add(utt)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"{bad.size} score(s) are NaN or infinite, e.g. for id {ids[int(bad[0])]!r}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(f"{utt} {float(v)!r}\n" for utt, v in zip(ids, values))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _awk_fix(new_id: str, layout: str, score_path: str) -> str:
    """An awk command that writes ``fixed.txt`` with the id column replaced by the awk expression
    ``new_id`` (of ``$1``) and every other column of ``layout`` kept as it was."""
    if layout == "id-score":
        return f"awk '{{print {new_id}, $2}}' {score_path} > fixed.txt"
    return _awk_edit_ids(f"$1={new_id}", layout, score_path)


def _awk_edit_ids(statement: str, layout: str, score_path: str) -> str:
    """An awk command that runs ``statement`` (which edits ``$1``) on every score line of a file
    of ``layout`` and writes ``fixed.txt`` with the other columns, and a header line, as they
    were; the output is read with the same ``--score-layout``."""
    keep_header = "NR==1{print; next} " if LAYOUTS[layout].header else ""
    return (
        f"awk '{keep_header}{{{statement}; print}}' {score_path} > fixed.txt "
        f"(then pass fixed.txt with --score-layout {layout})"
    )


def _rename_hint(
    missing: Sequence[str], extra: Sequence[str], score_path: str, layout: str = "id-score"
) -> str:
    """Suggest a fix when a simple renaming maps the extra score ids onto the missing key ids.

    A suggested command rewrites the id (first) column only and keeps the other columns of
    ``layout``, so its output is read with the same ``--score-layout``.
    """
    if not missing or not extra:
        return ""
    missing_set = set(missing)
    sample = list(extra[:1000])

    def covers(fn) -> bool:
        return sum(fn(e) in missing_set for e in sample) >= max(1, len(sample) // 2)

    for ext in (".wav", ".flac"):
        if covers(lambda e: e + ext):
            fix = _awk_fix(f'$1"{ext}"', layout, score_path)
            return (
                f"hint: the key's ids are file names with '{ext}' (e.g. {missing[0]!r}) but the "
                f"score file has them without it (e.g. {extra[0]!r}); In-the-Wild ids are file "
                f"names like '0.wav'. Fix: {fix}"
            )
    if covers(lambda e: os.path.splitext(e)[0]):
        fix = (
            f"sed -E 's/^([^ ]+)\\.[A-Za-z0-9]+ /\\1 /' {score_path} > fixed.txt"
            if layout == "id-score"
            else _awk_edit_ids('sub(/\\.[A-Za-z0-9]+$/, "", $1)', layout, score_path)
        )
        return (
            f"hint: the score file's ids carry a file extension (e.g. {extra[0]!r}) but the key's "
            f"do not (e.g. {missing[0]!r}). Fix: {fix}"
        )
    prefixes = {m.rsplit("/", 1)[0] for m in missing if "/" in m}
    if prefixes and covers(
        lambda e: next((f"{p}/{e}" for p in prefixes if f"{p}/{e}" in missing_set), None)
    ):
        p = sorted(prefixes)[0]
        fix = _awk_fix(f'"{p}/"$1', layout, score_path)
        return (
            f"hint: the key's ids are '<subset>/<name>' (e.g. {missing[0]!r}; Codecfake real clips "
            f"recur across test sets) but the score file has bare names (e.g. {extra[0]!r}). Fix, "
            f"per subset: {fix}"
        )
    return ""


def match_scores(
    scores: Scores,
    key_ids: Sequence[str],
    *,
    required: np.ndarray | None = None,
    key_name: str = "the key",
) -> np.ndarray:
    """Align scores with key ids.

    Args:
        scores: a read score file.
        key_ids: the ids of the key rows (unique).
        required: boolean mask over the key rows that must be scored (default: all). A row
            outside the mask may be scored or not (a 2021 score file covering every phase while
            only ``eval`` is evaluated); an id absent from the whole key is always an error.
        key_name: how error messages name the key (its path).

    Returns:
        One score per key row, NaN for rows outside ``required`` that have no score.

    Raises:
        ScoreFileError: naming the counts of missing, extra and duplicated ids with up to
            :data:`MAX_EXAMPLES` examples of each (extra and duplicated with their lines).
    """
    index = {utt: i for i, utt in enumerate(key_ids)}
    req = (
        np.ones(len(key_ids), dtype=bool) if required is None else np.asarray(required, dtype=bool)
    )
    aligned = np.full(len(key_ids), np.nan)
    extra: list[tuple[str, int]] = []
    for utt, value, line in zip(scores.ids, scores.scores, scores.lines):
        i = index.get(utt)
        if i is None:
            extra.append((utt, line))
        else:
            aligned[i] = value
    dups = scores.duplicates()
    missing = [key_ids[i] for i in np.flatnonzero(req & np.isnan(aligned))]
    if not (missing or extra or dups):
        return aligned
    raise _mismatch_error(scores, key_name, int(req.sum()), missing, extra, dups)


def _mismatch_error(
    scores: Scores,
    key_name: str,
    n_req: int,
    missing: list[str],
    extra: list[tuple[str, int]],
    dups: dict[str, list[int]],
) -> ScoreFileError:
    """The one error of :func:`match_scores`: counts and examples of each kind, a renaming hint."""
    parts = [
        f"score file {scores.path} does not match {key_name} ({n_req:,} key rows to score, "
        f"{len(scores):,} score lines):"
    ]
    if missing:
        ex = ", ".join(repr(m) for m in missing[:MAX_EXAMPLES])
        parts.append(f"  missing: {len(missing):,} key id(s) have no score, e.g. {ex}")
    if extra:
        ex = ", ".join(f"{u!r} (line {ln})" for u, ln in extra[:MAX_EXAMPLES])
        parts.append(f"  extra: {len(extra):,} score id(s) are not in the key, e.g. {ex}")
    if dups:
        ex = ", ".join(
            f"{u!r} (lines {', '.join(map(str, ln))})"
            for u, ln in list(dups.items())[:MAX_EXAMPLES]
        )
        parts.append(f"  duplicated: {len(dups):,} id(s) occur more than once, e.g. {ex}")
    hint = _rename_hint(missing, [u for u, _ in extra], scores.path, scores.layout)
    if hint:
        parts.append(hint)
    if dups:
        parts.append(
            "Duplicates usually come from a score file opened in append mode and written twice; "
            "re-score into a fresh file."
        )
    parts.append(
        "Nothing was dropped or intersected: fix the score file, or pass the key it was made for."
    )
    return ScoreFileError("\n".join(parts))


#: Names that moved to spoofdet.evaluation.asv_scores in 0.2 (importable from here for this
#: release only; imported on first use, since asv_scores imports this module).
_MOVED_TO_ASV_SCORES = (
    "read_asv_scores_2019",
    "read_asv_scores_2021",
    "_read_asv_key_2021",
    "_read_asv_trials_2021",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_ASV_SCORES or name == "AsvScores":  # AsvScores was imported here
        from spoofdet.evaluation import asv_scores

        return getattr(asv_scores, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
