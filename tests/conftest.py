"""Shared fixtures: the real ASVspoof 2019 LA protocols from ../shared (skipped, saying why, in
a user's clone that has no ../shared) and synthetic corpora written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spoofdet.synthetic import LAYOUTS, write_corpus

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPOOFDET_SHARED", REPO.parent / "shared"))
SHARED_2019 = SHARED / "data" / "asvspoof2019_la"
PROTOCOL_NAMES = ("ASVspoof2019.LA.cm.train.trn.txt", "ASVspoof2019.LA.cm.dev.trl.txt", "ASVspoof2019.LA.cm.eval.trl.txt")


@pytest.fixture(scope="session")
def shared_2019() -> Path:
    """Folder with the real ASVspoof 2019 LA CM protocols and ASV score files."""
    if not all((SHARED_2019 / n).is_file() for n in PROTOCOL_NAMES):
        pytest.skip(f"real ASVspoof 2019 LA protocols not found in {SHARED_2019} "
                    "(they live in the project's ../shared; set SPOOFDET_SHARED to point elsewhere)")
    return SHARED_2019


@pytest.fixture(scope="session")
def official_2019_root(shared_2019: Path, tmp_path_factory) -> Path:
    """A corpus root in the official layout whose protocol folder links to the real protocols."""
    root = tmp_path_factory.mktemp("LA")
    proto = root / "ASVspoof2019_LA_cm_protocols"
    proto.mkdir()
    for name in PROTOCOL_NAMES:
        (proto / name).symlink_to(shared_2019 / name)
    return root


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> dict[str, dict]:
    """Every synthetic corpus layout, written once: name -> info (root, rows, broken)."""
    base = tmp_path_factory.mktemp("synth")
    return {name: write_corpus(name, base / name, per_split=9, seed=7) for name in LAYOUTS}
