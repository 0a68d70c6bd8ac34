"""Every CLI error is one line on stderr and a pinned exit code: bad input 2, a bug 1 (its
traceback in a log file), an unreachable tracking server 2 within bounded time, naming its URI.
Eval sets whose ids cannot be written are refused before anything is scored."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from spoofdet.cli import main as cli_main
from spoofdet.data.schema import TableBuilder
from spoofdet.data.shards import resolve_out, write_file_list
from spoofdet.errors import SpoofdetError, one_line, run_command, unwrap

REPO = Path(__file__).resolve().parents[1]


def _shard_folder(root: Path, ids: list[str]) -> Path:
    """A finished shard folder (metadata.parquet, its file list, shards/) with these utt_ids, as an old
    `spoofdet prepare` could leave it."""
    root.mkdir(parents=True)
    (root / "shards").mkdir()
    b = TableBuilder()
    for i, _ in enumerate(ids):
        b.append(utt_id=f"u{i}", corpus="csv", subset="eval", label=i % 2)
    table = b.to_table()
    table = table.set_column(
        table.schema.get_field_index("utt_id"), "utt_id", pa.array(ids, pa.string())
    )
    pq.write_table(table, root / "metadata.parquet")
    write_file_list(*resolve_out(str(root)), ["metadata.parquet"])
    return root


@pytest.fixture()
def model(tmp_path):
    from spoofdet.testing import write_detector_dir

    return write_detector_dir(tmp_path / "final", seed=1)


@pytest.fixture()
def wav(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(16_000), 16_000)
    return path


def _error_line(capsys, command):
    """stderr's last line, checked to be the one-line error of ``command``, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"spoofdet {command}: error: "), err
    return last


def _bad_inputs(tmp_path, model, wav):
    good_shards = _shard_folder(tmp_path / "shards", ["a", "b"])
    (tmp_path / "empty").mkdir()
    bad_scores = tmp_path / "scores.txt"
    bad_scores.write_text("a 1.0\nb nan\nc\n")
    key = tmp_path / "key.csv"
    key.write_text("path,utt_id,label\na.wav,a,bonafide\nb.wav,b,spoof\nc.wav,c,spoof\n")
    return [
        ("predict", [str(wav), "--model", str(model), "--window", "10"], "--window must be"),
        ("predict", [str(wav), "--model", str(tmp_path / "nowhere")], "does not exist"),
        ("predict", ["--model", str(model)], "give at least one PATH"),
        ("evaluate", ["--scores", str(bad_scores), "--key", str(key), "--format", "csv"], "nan"),
        (
            "evaluate",
            ["--scores", str(tmp_path / "none.txt"), "--key", str(key), "--format", "csv"],
            "none.txt",
        ),
        (
            "score",
            ["--model", str(tmp_path / "nowhere"), "--eval-set", str(good_shards)],
            "nowhere",
        ),
        ("score", ["--model", str(model), "--eval-set", str(tmp_path / "missing")], "missing"),
        ("score", ["--model", str(model), "--eval-set", str(tmp_path / "empty")], "no audio files"),
        (
            "score",
            ["--model", str(model), "--eval-set", str(good_shards), "--window", "10"],
            "--window",
        ),
        (
            "promote",
            ["--name", "x", "--version", "1", "--eval-set", str(tmp_path / "empty")],
            "labelled shard folders",
        ),
        (
            "promote",
            ["--name", "x", "--version", "1", "--eval-set", str(good_shards), "--margin", "-1"],
            "--margin must be >= 0",
        ),
    ]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, model, wav, capsys, monkeypatch):
    monkeypatch.setenv("SPOOFDET_LOG_DIR", str(tmp_path / "logs"))
    for command, args, words in _bad_inputs(tmp_path, model, wav):
        assert cli_main([command, *args]) == 2, (command, args)
        last = _error_line(capsys, command)
        assert words in last, (command, last)
    assert not (tmp_path / "logs").exists()  # bad input is not a bug: no traceback log
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()  # refused before Ray was started


def test_multi_line_messages_become_one_line(capsys):
    err = SpoofdetError(
        "3 problems in scores.txt:\n  scores.txt:2: nan\n  scores.txt:3: one column"
    )
    assert one_line(err) == "3 problems in scores.txt: scores.txt:2: nan; scores.txt:3: one column"
    assert run_command("evaluate", lambda: (_ for _ in ()).throw(err)) == 2
    assert capsys.readouterr().err == (
        "spoofdet evaluate: error: 3 problems in scores.txt: scores.txt:2: nan; "
        "scores.txt:3: one column\n"
    )


def test_a_ray_task_error_is_reported_by_its_cause(capsys):
    class RayTaskError(RuntimeError):  # what Ray raises around a task's own exception
        def __init__(self, cause):
            super().__init__(f"ray::task failed\nTraceback (most recent call last):\n  {cause}")
            self.cause = cause

    wrapped = RayTaskError(SpoofdetError("--model m: weights do not fit"))
    assert isinstance(unwrap(wrapped), SpoofdetError)
    assert run_command("score", lambda: (_ for _ in ()).throw(wrapped)) == 2
    assert capsys.readouterr().err == "spoofdet score: error: --model m: weights do not fit\n"


def test_a_bug_is_one_line_naming_its_traceback_log(tmp_path, model, wav, capsys, monkeypatch):
    from spoofdet.serve import predict

    def boom(paths):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(predict, "collect_files", boom)
    monkeypatch.setenv("SPOOFDET_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("SPOOFDET_DEBUG", raising=False)
    assert cli_main(["predict", str(wav), "--model", str(model)]) == 1
    last = _error_line(capsys, "predict")
    assert last.startswith("spoofdet predict: error: unexpected RuntimeError: boom; second line")
    (log,) = (tmp_path / "logs").glob("spoofdet-predict-*.log")
    assert f"full traceback in {log}" in last
    assert "Traceback (most recent call last)" in log.read_text() and "boom" in log.read_text()

    assert cli_main(["--verbose", "predict", str(wav), "--model", str(model)]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("spoofdet predict: error: unexpected")
    monkeypatch.setenv("SPOOFDET_DEBUG", "1")
    assert cli_main(["predict", str(wav), "--model", str(model)]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_score_refuses_unwritable_ids_before_scoring(tmp_path, model, capsys):
    ids = ["ok", "has space", "new\nline", "tab\there", "", "dup", "dup"]
    old = _shard_folder(tmp_path / "old", ids)
    good = _shard_folder(tmp_path / "good", ["a", "b"])
    out = tmp_path / "out"
    args = ["--model", str(model), "--eval-set", f"good={good}", f"old={old}", "--out", str(out)]
    assert cli_main(["score", *args, "--no-mlflow"]) == 2
    last = _error_line(capsys, "score")
    assert "nothing was scored" in last and f"eval set old ({old}/metadata.parquet)" in last
    assert "4 utt_id(s) cannot be written" in last
    assert "'has space' (holds whitespace ' ')" in last and "'new\\nline'" in last
    assert (
        "1 utt_id(s) occur more than once, e.g. 'dup'" in last and "good" not in last.split(":")[1]
    )
    assert not out.exists()  # nothing was written
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


# ---- an unreachable tracking server: a child process, so that a regression fails, not hangs ----


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spoofdet(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["SPOOFDET_LOG_DIR"] = str(tmp_path / "logs")
    return subprocess.run(
        [sys.executable, "-m", "spoofdet.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )


@pytest.mark.integration
def test_predict_with_an_unreachable_tracking_server_exits_2_naming_it(tmp_path, wav):
    uri = f"http://127.0.0.1:{_closed_port()}"
    run = _spoofdet(
        ["predict", wav, "--model", "models:/x@champion", "--tracking-uri", uri], tmp_path
    )
    assert run.returncode == 2, run.stderr
    assert f"contacting the MLflow tracking server at {uri}" in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("spoofdet predict: error: the MLflow tracking server at ")
    assert uri in last and "Traceback" not in run.stderr


@pytest.mark.integration
def test_promote_with_an_unreachable_tracking_server_exits_2_naming_it(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    shards = _shard_folder(tmp_path / "shards", ["a", "b"])
    run = _spoofdet(
        ["promote", "--name", "x", "--version", "1", "--eval-set", shards, "--tracking-uri", uri],
        tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert f"contacting the MLflow tracking server at {uri}" in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("spoofdet promote: error: the MLflow tracking server at ")
    assert uri in last and "Traceback" not in run.stderr
