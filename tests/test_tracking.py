"""MLflow helpers that must not leak state between runs in one process."""

import os

import pytest

mlflow = pytest.importorskip("mlflow")

from spoofdet.tracking import tracking_uri, using_tracking_uri  # noqa: E402


@pytest.mark.parametrize("before", [None, "sqlite:////tmp/elsewhere.db"])
def test_using_tracking_uri_restores_the_environment(monkeypatch, tmp_path, before):
    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    mlflow.set_tracking_uri(before)
    inner = f"sqlite:///{tmp_path / 'run.db'}"
    with using_tracking_uri(inner):
        assert os.environ["MLFLOW_TRACKING_URI"] == inner and mlflow.get_tracking_uri() == inner
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    # the next run in this process finds its own store, not the previous run's
    assert tracking_uri(None, str(tmp_path / "next")) == (
        before or f"sqlite:///{tmp_path / 'next' / 'mlflow.db'}"
    )


def test_configured_uri_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server:5000")
    assert tracking_uri("sqlite:////x.db", str(tmp_path)) == "sqlite:////x.db"
    assert tracking_uri(None, str(tmp_path)) == "http://server:5000"
