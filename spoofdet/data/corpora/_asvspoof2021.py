"""Key discovery and the key loop shared by the ASVspoof 2021 LA and DF parsers (the two keys
differ only in their columns; each parser module owns its own column mapping)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from spoofdet.data.corpora._common import (
    DuplicateTracker,
    ManifestError,
    ProblemLog,
    check_id,
    corpus_root,
    read_fields,
)
from spoofdet.data.schema import BONAFIDE_ATTACK

PHASES = ("eval", "progress", "hidden")


def find_key(
    root: Path, track: str, key_file: str | Path | None, *, option: str = "--root"
) -> Path:
    """Locate ``keys/<TRACK>/CM/trial_metadata.txt`` under ``root``.

    Accepts the layouts the keys are shipped in: ``ROOT/keys/...`` (``LA-keys-full.tar.gz``
    extracted into the root) and ``ROOT/<TRACK>-keys-full/keys/...`` or
    ``ROOT/<TRACK>-keys-stage-1/keys/...``. ``key_file`` overrides the search.

    ``option`` names the command-line option that gave ``root`` in the error message:
    ``--root`` (``manifest``/``prepare``: the corpus root) or ``--key`` (``evaluate``), which
    also takes the ``keys/`` folder itself (``ROOT/<TRACK>/CM/...``, what the official
    ``evaluate.py`` is given) and ``keys/<TRACK>`` (``ROOT/CM/...``).
    """
    if key_file is not None:
        path = corpus_root(key_file)
        if not path.is_file():
            raise ManifestError([f"ASVspoof 2021 {track} key not found at {path}"])
        return path
    root = corpus_root(root)
    cm = Path("CM") / "trial_metadata.txt"
    rel = Path("keys") / track / cm
    candidates = [
        root / rel,
        root / f"{track}-keys-full" / rel,
        root / f"{track}-keys-stage-1" / rel,
    ]
    if option == "--key":
        candidates.append(root / track / cm)
        if root.name == track:
            candidates.append(root / cm)
    for c in candidates:
        if c.is_file():
            return c
    tried = "\n  ".join(str(c) for c in candidates)
    other = next(
        (t for t in ("LA", "DF") if t != track and ((root / t / cm).is_file() or root.name == t)),
        None,
    )
    if option == "--key":
        hint = (
            f"Download {track}-keys-full.tar.gz from asvspoof.org and extract it (it creates "
            f"keys/{track}/CM/trial_metadata.txt); --key takes that keys/ folder (as the official "
            f"evaluate.py does), keys/{track}, the folder holding keys/, or the "
            "trial_metadata.txt file itself."
        )
    else:
        hint = (
            f"Download {track}-keys-full.tar.gz from asvspoof.org and extract it into {option} "
            f"(it creates keys/{track}/CM/trial_metadata.txt)."
        )
    if other is not None:
        hint += f" {root} holds the {other} keys, not the {track} ones: check --format."
    raise ManifestError(
        [f"ASVspoof 2021 {track} CM key (trial_metadata.txt) not found; tried:\n  {tried}"],
        hint=hint,
    )


def check_phases(phase: str | None) -> None:
    if phase is not None and phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}: expected one of {list(PHASES)}")


def key_rows(
    key: Path,
    phase: str | None,
    log: ProblemLog,
    *,
    n_columns: int,
    columns: str,
    condition: tuple[str, Mapping[str, str]],
    check: Callable[[list[str]], str | None] | None = None,
) -> Iterator[list[str]]:
    """The valid rows of a 2021 CM key, of ``phase`` (None: every phase), as column lists.

    A row is logged with file and line and skipped at the first failed check, in this order: the
    column count (``columns`` names them in the message), the label (column 6), the phase
    (column 8), the condition (column 3, a key of ``condition = (what, conditions)``),
    ``check(cols)`` (a message, or None when fine), an attack id on spoof rows (column 5), the
    trial id (column 2) and its uniqueness over every phase.
    """
    dups = DuplicateTracker(log)
    what, conditions = condition
    for lineno, cols in read_fields(key):
        if len(cols) != n_columns:
            log.add(key, lineno, f"expected {n_columns} columns {columns}, got {len(cols)}")
            continue
        trial, cond, attack, label, subset = cols[1], cols[2], cols[4], cols[5], cols[7]
        if label not in ("bonafide", "spoof"):
            log.add(
                key, lineno, f"unknown label {label!r} in column 6: expected 'bonafide' or 'spoof'"
            )
            continue
        if subset not in PHASES:
            log.add(
                key, lineno, f"unknown phase {subset!r} in column 8: expected one of {list(PHASES)}"
            )
            continue
        if cond not in conditions:
            log.add(
                key,
                lineno,
                f"unknown {what} {cond!r} in column 3: expected one of {list(conditions)}",
            )
            continue
        problem = check(cols) if check is not None else None
        if problem is not None:
            log.add(key, lineno, problem)
            continue
        if label == "spoof" and attack in ("-", BONAFIDE_ATTACK):
            log.add(key, lineno, f"spoof row without an attack id (column 5 is {attack!r})")
            continue
        if not check_id(trial, key, lineno, log) or not dups.check(trial, key, lineno):
            continue
        if phase is not None and subset != phase:
            continue
        yield cols
