import json
from pathlib import Path

import pytest

from spoofdet.cli import main
from spoofdet.data.corpora import ManifestError, prepare_asvspoof2019_la

PUBLISHED = {  # split -> (bona fide, {attack: spoof count})
    "train": (2580, {f"A0{i}": 3800 for i in range(1, 7)}),
    "dev": (2548, {f"A0{i}": 3716 for i in range(1, 7)}),
    "eval": (7355, {f"A{i:02d}": 4914 for i in range(7, 20)}),
}


def test_real_protocols_published_counts(official_2019_root):
    m = prepare_asvspoof2019_la(official_2019_root, check_audio=False)
    s = m.summary()
    assert s["rows"] == 25380 + 24844 + 71237
    for split, (bona, attacks) in PUBLISHED.items():
        sub = s["by_subset"][split]
        assert sub["bonafide"] == bona
        assert sub["spoof"] == sum(attacks.values())
        assert {k: v for k, v in sub["by_attack"].items() if k != "bonafide"} == attacks
        assert sub["by_attack"]["bonafide"] == bona
    t = m.table
    first = t.slice(0, 1).to_pylist()[0]
    assert (
        first["utt_id"] == "LA_T_1138215" and first["speaker"] == "LA_0079" and first["label"] == 1
    )
    assert first["source_path"] == str(
        official_2019_root / "ASVspoof2019_LA_train" / "flac" / "LA_T_1138215.flac"
    )
    assert not m.audio_checked and m.missing_audio == ()


def test_cli_json_reports_published_counts(official_2019_root, capsys):
    for split, (bona, attacks) in PUBLISHED.items():
        rc = main(
            [
                "manifest",
                "asvspoof2019-la",
                "--root",
                str(official_2019_root),
                "--split",
                split,
                "--no-audio-check",
                "--json",
            ]
        )
        assert rc == 0
        out = json.loads(capsys.readouterr().out)
        assert {"rows", "bonafide", "spoof", "by_attack", "by_subset"} <= set(out)
        assert out["bonafide"] == bona and out["spoof"] == sum(attacks.values())
        assert out["rows"] == bona + sum(attacks.values())
        assert {k: v for k, v in out["by_attack"].items() if k != "bonafide"} == attacks
        assert list(out["by_subset"]) == [split]


def test_real_protocols_audio_check_lists_every_missing_file(official_2019_root):
    m = prepare_asvspoof2019_la(official_2019_root, "dev")
    assert len(m.missing_audio) == 24844  # no audio in the shared folder: all listed, none dropped
    assert len(m) == 24844
    assert m.summary()["missing_audio"] == 24844


def _root_with(tmp_path: Path, split: str, text: str | bytes) -> Path:
    proto = tmp_path / "ASVspoof2019_LA_cm_protocols"
    proto.mkdir(parents=True, exist_ok=True)
    name = {
        "train": "ASVspoof2019.LA.cm.train.trn.txt",
        "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
        "eval": "ASVspoof2019.LA.cm.eval.trl.txt",
    }[split]
    (proto / name).write_bytes(text.encode() if isinstance(text, str) else text)
    return tmp_path


def test_crlf_bom_and_blank_lines(tmp_path):
    root = _root_with(
        tmp_path,
        "train",
        b"\xef\xbb\xbfLA_0079 LA_T_1138215 - - bonafide\r\n\r\nLA_0079 LA_T_2 - A01 spoof\r\n\n",
    )
    m = prepare_asvspoof2019_la(root, "train", check_audio=False)
    assert m.table.column("utt_id").to_pylist() == ["LA_T_1138215", "LA_T_2"]
    assert m.table.column("attack").to_pylist() == ["bonafide", "A01"]


@pytest.mark.parametrize(
    "line,match",
    [
        ("LA_0079 LA_T_1 - bonafide", r"protocol.txt:2: expected 5 columns"),
        ("LA_0079 LA_T_1 - - genuine", r":2: unknown label 'genuine'"),
        ("LA_0079 LA_T_1 - A01 bonafide", r":2: bona fide row with attack 'A01'"),
        ("LA_0079 LA_T_1 - - spoof", r":2: spoof row with attack '-'"),
        ("LA_0079 ../../etc/passwd - - bonafide", r":2: invalid utterance id"),
        ("LA_0079 LA_T_0 - - bonafide", r":2: duplicate utt_id 'LA_T_0' \(first seen at .*:1\)"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    root = _root_with(tmp_path, "train", f"LA_0079 LA_T_0 - - bonafide\n{line}\n")
    with pytest.raises(ManifestError, match=match.replace("protocol.txt", "trn.txt")):
        prepare_asvspoof2019_la(root, "train", check_audio=False)


def test_all_problems_reported_at_once(tmp_path):
    bad = "".join(f"LA_0079 LA_T_{i} - - maybe\n" for i in range(15))
    root = _root_with(tmp_path, "train", bad)
    with pytest.raises(ManifestError) as exc:
        prepare_asvspoof2019_la(root, "train", check_audio=False)
    assert "15 problem(s)" in str(exc.value) and "and 5 more" in str(exc.value)
    assert len(exc.value.problems) == 15


def test_missing_protocol_names_expected_path(tmp_path):
    with pytest.raises(
        ManifestError,
        match=r"dev protocol not found at .*ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt",
    ):
        prepare_asvspoof2019_la(tmp_path, "dev")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        prepare_asvspoof2019_la(tmp_path, "test")


def test_synthetic_missing_audio_listed(synth):
    info = synth["asvspoof2019-la"]
    m = prepare_asvspoof2019_la(info["root"])
    missing_ids = {Path(p).stem for p in m.missing_audio}
    assert missing_ids == {u for u, r in info["broken"].items() if r == "missing_file"}
    assert len(m) == info["rows"]  # the missing rows are kept
