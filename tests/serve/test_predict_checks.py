"""``spoofdet predict`` refuses what it cannot judge: files shorter than the model's receptive field
or 0.1 s, and silent files, get no score and an error; clipped files are scored with a warning."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from spoofdet.cli import main as cli_main
from spoofdet.serve import predict
from spoofdet.testing import tone_or_noise, write_detector_dir

SR = 16_000


@pytest.fixture(scope="module")
def clips(tmp_path_factory, one_thread):
    """Files as users have them: speech-like noise, 1 sample, 10 ms, 0.09 s and 0.1 s of it,
    digital silence, hiss at -70 dBFS, and two clipped files (hard: 20 %; mild: 0.5 %)."""
    root = tmp_path_factory.mktemp("checks")
    rng = np.random.default_rng(0)
    speech = tone_or_noise("noise", 1.0, SR, rng)

    def write(name, wave, sr=SR, subtype="FLOAT"):
        sf.write(root / name, np.asarray(wave, np.float32), sr, subtype=subtype)

    write("ok.wav", speech)
    write("one_sample.wav", speech[:1])
    write("ten_ms.wav", speech[:160])
    write("short_090ms.wav", speech[:1_440])
    write("exactly_100ms.wav", speech[:1_600])
    write("silence.wav", np.zeros(SR))
    write("hiss.wav", 10 ** (-70 / 20) * rng.standard_normal(SR))  # -70 dBFS RMS
    hard = np.clip(4 * speech / np.abs(speech).max(), -1, 1)  # ~20 % of samples at full scale
    write("clipped_hard.wav", hard, subtype="PCM_16")
    mild = 0.5 * speech / np.abs(speech).max()
    mild[::200] = 1.0  # 0.5 % of samples at full scale: above the warning, below the refusal
    write("clipped_mild.wav", mild, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_detector_dir(tmp_path_factory.mktemp("m") / "final", seed=1, slope=1.0)


def _predict(capsys, *args):
    rc = cli_main(["predict", *map(str, args), "--json"])
    captured = capsys.readouterr()
    return rc, json.loads(captured.out), captured.err


def test_short_and_silent_files_get_no_score_clipped_ones_a_warning(clips, model, capsys):
    rc, summary, err = _predict(capsys, clips, "--model", model)
    assert rc == 0
    rows = {p["path"].rsplit("/", 1)[1]: p for p in summary["predictions"]}
    for name in ("one_sample.wav", "ten_ms.wav", "short_090ms.wav"):
        assert rows[name]["score"] is None and rows[name]["error"].startswith("too_short: "), name
        assert "< 0.1 s" in rows[name]["error"]
    for name in ("silence.wav", "hiss.wav"):
        assert rows[name]["score"] is None and rows[name]["error"].startswith("silent: "), name
    for name in ("ok.wav", "exactly_100ms.wav"):
        assert rows[name]["error"] == "" and rows[name]["warning"] == "", name
        assert np.isfinite(rows[name]["score"]) and rows[name]["decision"] in ("bonafide", "spoof")
    for name in ("clipped_hard.wav", "clipped_mild.wav"):
        assert rows[name]["error"] == "" and np.isfinite(rows[name]["score"]), name
        assert rows[name]["warning"].startswith("clipped: "), name
    assert summary["n_scored"] == 4 and summary["n_failed"] == 5 and summary["n_warnings"] == 2
    assert summary["min_seconds"] == 0.1
    assert {w["path"].rsplit("/", 1)[1] for w in summary["warnings"]} == {
        "clipped_hard.wav",
        "clipped_mild.wav",
    }
    assert "5 of 9 path(s) could not be scored (too_short 3, silent 2)" in err
    assert "2 scored file(s) have a warning (clipped 2)" in err


def test_the_csv_has_a_warning_column(clips, model, tmp_path, capsys):
    out = tmp_path / "s.csv"
    files = [clips / "clipped_mild.wav", clips / "ten_ms.wav", clips / "ok.wav"]
    assert cli_main(["predict", *map(str, files), "--model", str(model), "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["path", "score", "llr", "decision", "error", "warning"]
        rows = {r["path"].rsplit("/", 1)[1]: r for r in reader}
    assert (
        rows["clipped_mild.wav"]["warning"].startswith("clipped: ")
        and rows["clipped_mild.wav"]["score"]
    )
    assert rows["ten_ms.wav"]["score"] == "" and rows["ten_ms.wav"]["error"].startswith("too_short")
    assert rows["ok.wav"]["warning"] == "" and rows["ok.wav"]["error"] == ""


def test_nothing_judgeable_exits_2(clips, model, capsys):
    rc, summary, _ = _predict(
        capsys, clips / "silence.wav", clips / "one_sample.wav", "--model", model
    )
    assert rc == 2 and summary["n_scored"] == 0 and summary["n_failed"] == 2


def test_the_shortest_length_is_the_receptive_field_or_a_tenth_of_a_second():
    from spoofdet.models import build_model

    xlsr_conv = SimpleNamespace(
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2)
    )
    fake = torch.nn.Module()
    fake.config = xlsr_conv
    assert predict.receptive_field(fake) == 400  # 25 ms: under 0.1 s, so 0.1 s holds
    assert predict.min_seconds(fake) == predict.MIN_SECONDS == 0.1
    raw = build_model("waveform", "aasist_raw")  # raw AASIST sees 2,315 samples per frame
    assert predict.receptive_field(raw) == 2_315
    assert predict.min_seconds(raw) == pytest.approx(2_315 / SR)


def test_a_long_receptive_field_refuses_longer_clips(clips, tmp_path, monkeypatch):
    """0.1 s is scored by a model whose receptive field fits in it, refused by one that needs more."""
    from spoofdet.serve.registry import load_detector

    det = load_detector(str(write_detector_dir(tmp_path / "m", seed=1)))
    ok = predict.predict_files(det, [str(clips / "exactly_100ms.wav")], progress=False)[0]
    assert ok.error == "" and ok.score is not None
    monkeypatch.setattr(predict, "receptive_field", lambda model: 2_315)
    refused = predict.predict_files(det, [str(clips / "exactly_100ms.wav")], progress=False)[0]
    assert refused.score is None and refused.error.startswith("too_short: ")
    assert "0.1000 s < 0.1446875 s" in refused.error
