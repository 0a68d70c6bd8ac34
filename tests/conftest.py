"""Shared fixtures: the real ASVspoof 2019 LA protocols from ../shared (skipped, saying why, in
a user's clone that has no ../shared) and synthetic corpora written once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from spoofdet.testing.synthetic import LAYOUTS, write_corpus

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPOOFDET_SHARED", REPO.parent / "shared"))
SHARED_2019 = SHARED / "data" / "asvspoof2019_la"
PUBLISHED = SHARED / "data" / "published-checkpoints"
PROTOCOL_NAMES = (
    "ASVspoof2019.LA.cm.train.trn.txt",
    "ASVspoof2019.LA.cm.dev.trl.txt",
    "ASVspoof2019.LA.cm.eval.trl.txt",
)


@pytest.fixture(autouse=True)
def _no_tracking_uri_leak():
    """Fail (and clean up after) any test that leaves MLFLOW_TRACKING_URI changed: ``mlflow.set_tracking_uri``
    writes it into ``os.environ``, and every later run, Ray job or head started from this process would then
    log into that test's store (the cause of a red CI once)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        if "mlflow" in sys.modules:
            sys.modules["mlflow"].set_tracking_uri(before)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        pytest.fail(
            f"this test left MLFLOW_TRACKING_URI={after!r} (was {before!r}); "
            "use spoofdet.tracking.using_tracking_uri or monkeypatch"
        )


@pytest.fixture(scope="session")
def shared_2019() -> Path:
    """Folder with the real ASVspoof 2019 LA CM protocols and ASV score files."""
    if not all((SHARED_2019 / n).is_file() for n in PROTOCOL_NAMES):
        pytest.skip(
            f"real ASVspoof 2019 LA protocols not found in {SHARED_2019} "
            "(they live in the project's ../shared; set SPOOFDET_SHARED to point elsewhere)"
        )
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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: on a shared 2-core machine two threads
    spend more time waiting for each other than computing (6x slower measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def published_checkpoint(name: str) -> Path:
    """A real published checkpoint from ../shared (never copied into the repository), or a skip
    saying where it was looked for."""
    path = PUBLISHED / name
    if not path.is_file():
        pytest.skip(
            f"the published checkpoint {name} is not in {PUBLISHED} (it lives in the project's "
            "../shared; set SPOOFDET_SHARED to point elsewhere)"
        )
    return path


def published_sha256() -> dict[str, str]:
    """File name -> sha256 from ../shared/data/published-checkpoints/SHA256SUMS."""
    lines = (PUBLISHED / "SHA256SUMS").read_text().splitlines()
    return {line.split()[1].lstrip("*"): line.split()[0] for line in lines if line.strip()}


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip themselves, saying why, where no CUDA device is usable."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marker gpu); none is usable here")
    for item in gpu_tests:
        item.add_marker(skip)
