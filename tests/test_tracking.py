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


def test_bounded_http_sets_spoofdet_defaults_where_unset_and_keeps_the_users():
    from spoofdet.tracking import HTTP_DEFAULTS, _worst_case_seconds, bounded_http

    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "45", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": " "}
    assert bounded_http(env) == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "45",  # the user's own setting wins
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # blank counts as unset
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    assert bounded_http({}) == HTTP_DEFAULTS
    # one failing call under the defaults: 3 attempts of 10 s + 2 s backoff + 2 s jitter
    assert _worst_case_seconds(HTTP_DEFAULTS) == 34.0 < 60


def test_reach_a_closed_port_fails_at_once_naming_the_uri(monkeypatch, capsys):
    import socket

    from spoofdet.tracking import HTTP_DEFAULTS, TrackingUnreachable, is_remote, reach

    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(TrackingUnreachable, match="Connection refused") as exc:
        reach(uri)
    assert str(exc.value).startswith(f"the MLflow tracking server at {uri} did not answer")
    assert f"contacting the MLflow tracking server at {uri}" in capsys.readouterr().err
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"  # applied for the calls that follow
    assert not is_remote("sqlite:///x.db") and is_remote("https://mlflow.example.org")
    reach("sqlite:////nonexistent/x.db")  # local stores are not contacted
    assert capsys.readouterr().err == ""
