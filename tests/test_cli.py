import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from spoofdet.cli import main
from spoofdet.data.schema import UTTERANCE_SCHEMA


def test_manifest_json_and_out(synth, tmp_path, capsys):
    info = synth["codecfake"]
    out = tmp_path / "m" / "codecfake.parquet"
    assert main(["manifest", "codecfake", "--root", info["root"], "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert {"rows", "bonafide", "spoof", "by_attack", "by_subset", "missing_audio"} <= set(s)
    assert s["rows"] == info["rows"] == s["bonafide"] + s["spoof"]
    table = pq.read_table(out)
    assert (
        table.schema.equals(UTTERANCE_SCHEMA, check_metadata=False)
        and table.num_rows == info["rows"]
    )
    missing = (tmp_path / "m" / "codecfake.missing.txt").read_text().splitlines()
    assert (
        len(missing)
        == s["missing_audio"]
        == sum(r == "missing_file" for r in info["broken"].values())
    )


def test_manifest_text_summary(synth, capsys):
    assert main(["manifest", "asvspoof2021-la", "--root", synth["asvspoof2021-la"]["root"]]) == 0
    text = capsys.readouterr().out
    assert "by phase:" in text and "MISSING AUDIO: 1 file(s)" in text and "spoof by attack:" in text


def test_bad_input_exits_2_with_file_and_line(tmp_path, capsys):
    (tmp_path / "meta.csv").write_text("file,speaker,label\n0.wav,A,real\n")
    assert main(["manifest", "in-the-wild", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "meta.csv:2: unknown label 'real'" in err and err.startswith("spoofdet manifest: error:")


def test_unknown_corpus_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["manifest", "librispeech", "--root", "."])
    assert exc.value.code == 2


def test_synth_command(tmp_path, capsys):
    assert (
        main(["synth", "folder", "--out", str(tmp_path / "f"), "--per-split", "3", "--json"]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 3 and (tmp_path / "f" / "SYNTHETIC.json").exists()


def test_console_script_help():
    """The installed entry point runs and its help names every corpus and the split meanings."""
    exe = [sys.executable, "-m", "spoofdet.cli"]
    out = subprocess.run(
        [*exe, "manifest", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for corpus in (
        "asvspoof2019-la",
        "asvspoof2021-la",
        "asvspoof2021-df",
        "in-the-wild",
        "codecfake",
        "folder",
        "csv",
    ):
        assert corpus in out
    assert "--no-audio-check" in out and "phase: eval, progress or hidden" in out


def test_job_subcommands_hand_over_their_arguments(tmp_path, capsys):
    """`spoofdet features` is the feature-cache job: its own help, and its errors name the input."""
    with pytest.raises(SystemExit) as exit_:
        main(["features", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spoofdet features") and "--layer" in out and "--num-gpus" in out
    assert (
        main(
            [
                "features",
                "--shards",
                str(tmp_path / "nowhere"),
                "--out",
                str(tmp_path / "f"),
                "--frontend",
                "tiny",
            ]
        )
        == 2
    )
    assert "nowhere" in capsys.readouterr().err
