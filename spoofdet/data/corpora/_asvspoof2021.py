"""Key discovery shared by the ASVspoof 2021 LA and DF parsers (the two keys differ only in
their columns; each parser module owns its own column mapping)."""

from __future__ import annotations

from pathlib import Path

from spoofdet.data.corpora._common import ManifestError

PHASES = ("eval", "progress", "hidden")


def find_key(root: Path, track: str, key_file: str | Path | None) -> Path:
    """Locate ``keys/<TRACK>/CM/trial_metadata.txt`` under ``root``.

    Accepts the layouts the keys are shipped in: ``ROOT/keys/...`` (``LA-keys-full.tar.gz``
    extracted into the root) and ``ROOT/<TRACK>-keys-full/keys/...`` or ``ROOT/<TRACK>-keys-stage-1/keys/...``.
    ``key_file`` overrides the search.
    """
    if key_file is not None:
        path = Path(key_file).expanduser().absolute()
        if not path.is_file():
            raise ManifestError([f"ASVspoof 2021 {track} key not found at {path}"])
        return path
    rel = Path("keys") / track / "CM" / "trial_metadata.txt"
    candidates = [
        root / rel,
        root / f"{track}-keys-full" / rel,
        root / f"{track}-keys-stage-1" / rel,
    ]
    for c in candidates:
        if c.is_file():
            return c
    tried = "\n  ".join(str(c) for c in candidates)
    raise ManifestError(
        [f"ASVspoof 2021 {track} CM key (trial_metadata.txt) not found; tried:\n  {tried}"],
        hint=f"Download {track}-keys-full.tar.gz from asvspoof.org and extract it into --root "
        f"(it creates keys/{track}/CM/trial_metadata.txt).",
    )


def check_phases(phase: str | None) -> None:
    if phase is not None and phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}: expected one of {list(PHASES)}")
