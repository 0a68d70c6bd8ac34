"""Scoring protocols, eval-set handling and `spoofdet predict` without Ray or MLflow (a local
model folder)."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from spoofdet.cli import main as cli_main
from spoofdet.data.shards import ShardError, resolve_out, write_file_list
from spoofdet.evaluation import protocols as scoring
from spoofdet.evaluation import sets as eval_sets
from spoofdet.serve.predict import Prediction, collect_files, failure_report
from spoofdet.testing import tone_or_noise, write_detector_dir


@pytest.mark.parametrize("n", [1, 400, 64_599, 64_600, 64_601, 96_900, 129_200, 160_000, 1_000_003])
@pytest.mark.parametrize("hop", [1_000, 32_300, 64_600])
def test_full_length_windows_cover_every_sample_and_stay_inside(n, hop):
    starts = scoring.window_starts(n, scoring.WINDOW, hop)
    assert starts[0] == 0 and starts == sorted(set(starts))
    if n <= scoring.WINDOW:
        assert starts == [0]
        return
    covered = np.zeros(n, bool)
    for s in starts:
        assert (
            0 <= s and s + scoring.WINDOW <= n
        )  # no window runs past the end (no padding of long clips)
        covered[s : s + scoring.WINDOW] = True
    assert covered.all()
    assert all(b - a <= hop for a, b in zip(starts, starts[1:]))


def test_4s_keeps_the_first_window_and_full_uses_the_rest():
    wave = np.arange(200_000, dtype=np.float32)
    first = scoring.clip_windows(wave, "4s")
    assert first.shape == (1, 64_600) and first[0, -1] == 64_599
    full = scoring.clip_windows(wave, "full", hop=32_300)
    assert full.shape == (6, 64_600)  # 0, 32300, ..., 129200 and the end-aligned 135400
    assert full[-1, -1] == 199_999 and full[-1, 0] == 200_000 - 64_600


def test_short_clips_are_repeat_padded_identically_under_both_protocols():
    wave = np.arange(1, 30_001, dtype=np.float32)
    a, b = scoring.clip_windows(wave, "4s"), scoring.clip_windows(wave, "full")
    assert np.array_equal(a, b) and a.shape == (1, 64_600)
    assert a[0, 30_000] == 1 and a[0, 60_000] == 1  # repeated from the start, not zero-padded


def test_protocol_errors_name_the_option():
    with pytest.raises(ValueError, match="--length"):
        scoring.check_length("10s")
    with pytest.raises(ValueError, match="--hop"):
        scoring.check_length("full", hop=0)
    with pytest.raises(ValueError, match="empty"):
        scoring.clip_windows(np.zeros(0, np.float32), "full")
    assert scoring.describe_protocol("full")["hop"] == scoring.DEFAULT_HOP
    assert scoring.describe_protocol("4s")["hop"] is None


def test_mean_by_id():
    out = scoring.mean_by_id(["a", "b", "a", "a"], [1.0, 5.0, 2.0, 3.0])
    assert out == {"a": (2.0, 3), "b": (5.0, 1)}


def test_eval_set_names_and_errors(tmp_path):
    shards = tmp_path / "asvspoof2019-la" / "eval"
    (shards / "shards").mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"utt_id": ["x"]}), shards / "metadata.parquet")
    with pytest.raises(ShardError, match="no files.json"):  # a folder is checked before it is used
        eval_sets.parse_eval_set(str(shards))
    fs, base = resolve_out(str(shards))
    write_file_list(fs, base, ["metadata.parquet"])
    es = eval_sets.parse_eval_set(str(shards))
    assert (es.name, es.kind) == ("asvspoof2019-la-eval", "shards")
    assert eval_sets.parse_eval_set(f"la19={shards}").name == "la19"
    assert eval_sets.parse_eval_set(str(tmp_path)).kind == "folder"
    with pytest.raises(ValueError, match="not a folder"):
        eval_sets.parse_eval_set(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="NAME may hold"):
        eval_sets.parse_eval_set(f"a b={shards}")
    with pytest.raises(ValueError, match="two eval sets are named"):
        eval_sets.parse_eval_sets([str(shards), f"asvspoof2019-la-eval={tmp_path}"])
    (shards / "metadata.parquet").unlink()
    with pytest.raises(ValueError, match="metadata.parquet is missing"):
        eval_sets.parse_eval_set(str(shards))


def test_phase_selection_follows_the_phase_column():
    t = pa.table({"utt_id": ["a", "b", "c"], "phase": ["eval", "progress", "eval"]})
    mask, what = eval_sets.select_rows(t, None)
    assert mask.tolist() == [True, False, True] and what == "phase eval"
    assert eval_sets.select_rows(t, "all")[0].all()
    with pytest.raises(ValueError, match="phases present"):
        eval_sets.select_rows(t, "hidden")
    no_phase = pa.table({"utt_id": ["a"], "phase": pa.array([None], pa.string())})
    assert eval_sets.select_rows(no_phase, None)[1] == "all rows"
    with pytest.raises(ValueError, match="no phase column"):
        eval_sets.select_rows(no_phase, "eval")


def test_cross_dataset_table_states_the_protocol():
    metrics = {
        "eer": 12.5,
        "min_dcf": 0.3,
        "act_dcf": None,
        "cllr": None,
        "n_bonafide": 3,
        "n_spoof": 4,
    }
    results = [
        {"eval_set": "a", "selection": "all rows", "n_scored": 7, "metrics": metrics},
        {
            "eval_set": "b",
            "selection": "phase eval",
            "n_scored": 7,
            "metrics": dict(metrics, eer=7.5),
        },
        {"eval_set": "folder", "selection": "all files", "n_scored": 2, "metrics": None},
    ]
    md, table = eval_sets.cross_dataset_table(results, scoring.describe_protocol("4s"), "m v1")
    assert "Protocol: 4s" in md and "| a | all rows | scored 7 of 7 | 3 | 4 | 12.50 |" in md
    assert "| folder | all files | scored 2 of 2 |" in md and "Not every row" not in md
    assert table["mean_over_sets"]["eer"] == 10.0 and table["mean_over_sets"]["act_dcf"] is None
    assert table["protocol"]["length"] == "4s" and table["complete"]


def test_cross_dataset_table_states_rows_that_failed_to_decode():
    """2 of 200 clips failed to decode: the table says so, in markdown and JSON, never 'all rows'
    alone."""
    metrics = {"eer": 5.0, "min_dcf": 0.1, "act_dcf": None, "cllr": None}
    results = [
        {
            "eval_set": "itw",
            "selection": "all rows",
            "n_scored": 198,
            "n_failed": 2,
            "n_evaluated_rows": 200,
            "n_evaluated_scored": 198,
            "n_evaluated_failed": 2,
            "metrics": dict(metrics, n_bonafide=98, n_spoof=100),
        },
        {"eval_set": "clips", "selection": "all files", "n_scored": 1, "n_failed": 1},
    ]
    md, table = eval_sets.cross_dataset_table(results, scoring.describe_protocol("4s"), "m v1")
    assert "| itw | all rows | scored 198 of 200 (2 failed to decode) | 98 | 100 | 5.00 |" in md
    assert "| clips | all files | scored 1 of 2 (1 failed to decode) |" in md
    assert "Not every row was scored: itw: scored 198 of 200 (2 failed to decode)" in md
    itw = table["sets"][0]
    assert (itw["n_rows"], itw["n_scored"], itw["n_failed"]) == (200, 198, 2)
    assert itw["scored"] == "scored 198 of 200 (2 failed to decode)" and not table["complete"]
    assert eval_sets.coverage(1_000, 1_000, 0) == "scored 1,000 of 1,000"


def test_collect_files_walks_folders_and_reports_empty_ones(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    for name in ("a/x.WAV", "a/y.flac", "a/notes.txt", "a/.hidden/z.wav"):
        (tmp_path / name).write_bytes(b"")
    files, problems = collect_files(
        [tmp_path / "a", tmp_path / "a" / "x.WAV", tmp_path / "empty", tmp_path / "c.xyz"]
    )
    assert files == [
        str(tmp_path / "a" / "x.WAV"),
        str(tmp_path / "a" / "y.flac"),
        str(tmp_path / "c.xyz"),
    ]
    assert [p.path for p in problems] == [str(tmp_path / "empty")] and problems[0].error.startswith(
        "no_audio"
    )
    report = failure_report([Prediction("ok", 1.0), Prediction("bad", error="decode_error: x")])
    assert (
        report.startswith("1 of 2 path(s) could not be scored (decode_error 1)")
        and "bad: decode_error" in report
    )


@pytest.fixture(scope="module")
def user_audio(tmp_path_factory):
    """A folder as a user has it: 16 kHz and 44.1 kHz files, a long one, a corrupt one, an empty one."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    sf.write(root / "a_16k.wav", tone_or_noise("noise", 2.0, 16_000, rng), 16_000)
    sf.write(root / "b_44k.flac", tone_or_noise("tone", 3.0, 44_100, rng), 44_100)
    (root / "sub").mkdir()
    sf.write(
        root / "sub" / "c_long.ogg", tone_or_noise("noise", 9.0, 22_050, rng), 22_050, format="OGG"
    )
    (root / "broken.wav").write_bytes(b"RIFF....not really a wav")
    (root / "empty.mp3").write_bytes(b"")
    return root


def _rows(path):
    with open(path, newline="") as fh:
        return {Path(r["path"]).name: r for r in csv.DictReader(fh)}


def test_predict_scores_a_folder_lists_broken_files_and_exits_0(user_audio, tmp_path, capsys):
    model = write_detector_dir(tmp_path / "final", seed=1, slope=2.0, offset=-0.5)
    out = tmp_path / "scores.csv"
    assert (
        cli_main(["predict", str(user_audio), "--model", str(model), "--out", str(out), "--json"])
        == 0
    )
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["n_paths"] == 5 and summary["n_scored"] == 3 and summary["n_failed"] == 2
    assert {Path(f["path"]).name for f in summary["failed"]} == {"broken.wav", "empty.mp3"}
    assert "2 of 5 path(s) could not be scored" in captured.err and "broken.wav" in captured.err
    rows = _rows(out)
    assert set(rows) == {"a_16k.wav", "b_44k.flac", "c_long.ogg", "broken.wav", "empty.mp3"}
    assert (
        rows["broken.wav"]["error"].startswith("decode_error") and rows["broken.wav"]["score"] == ""
    )
    assert rows["empty.mp3"]["error"].startswith("empty_file")
    for name in ("a_16k.wav", "b_44k.flac", "c_long.ogg"):
        r = rows[name]
        llr = float(r["llr"])
        assert r["error"] == "" and llr == pytest.approx(2.0 * float(r["score"]) - 0.5)
        assert r["decision"] == ("bonafide" if llr >= -np.log(1.9) else "spoof")


def test_predict_resamples_and_windows_like_the_library(user_audio, tmp_path, capsys):
    from spoofdet.data.audio import load_16k
    from spoofdet.serve.registry import load_detector

    model = write_detector_dir(tmp_path / "final", seed=1)  # no calibration
    assert (
        cli_main(
            [
                "predict",
                str(user_audio / "b_44k.flac"),
                str(user_audio / "sub"),
                "--model",
                str(model),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    preds = {Path(p["path"]).name: p for p in summary["predictions"]}
    assert (
        preds["b_44k.flac"]["orig_sample_rate"] == 44_100
        and preds["c_long.ogg"]["orig_sample_rate"] == 22_050
    )
    assert preds["c_long.ogg"]["n_windows"] == len(scoring.window_starts(9 * 16_000)) == 4
    assert all(
        p["llr"] is None and p["decision"] is None for p in preds.values()
    )  # no calibration: no LLR
    det = load_detector(str(model))
    wave, _ = load_16k(str(user_audio / "sub" / "c_long.ogg"))
    expected = scoring.score_waves(det.model, scoring.clip_windows(wave, "full")).mean()
    assert preds["c_long.ogg"]["score"] == pytest.approx(expected, rel=1e-5)


def test_predict_exit_codes_when_nothing_can_be_scored(user_audio, tmp_path, capsys):
    model = write_detector_dir(tmp_path / "final", seed=1)
    assert cli_main(["predict", str(user_audio / "broken.wav"), "--model", str(model)]) == 2
    out = capsys.readouterr()
    assert "broken.wav" in out.out and "1 of 1 path(s) could not be scored" in out.err
    assert cli_main(["predict", str(user_audio), "--model", str(tmp_path / "nowhere")]) == 2
    assert "not a model reference" in capsys.readouterr().err


def test_predict_never_imports_ray(user_audio, tmp_path):
    import subprocess

    model = write_detector_dir(tmp_path / "final", seed=1)
    code = (
        "import sys; from spoofdet.cli import main;"
        f"rc = main(['predict', {str(user_audio / 'a_16k.wav')!r}, '--model', {str(model)!r}, "
        f"'--out', {str(tmp_path / 's.csv')!r}]);"
        "print(rc, 'ray' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[-3:] == ["0", "False", "True"]
