from pathlib import Path

import pytest

from spoofdet.data.corpora import ManifestError, prepare_asvspoof2021_df, prepare_asvspoof2021_la

LA_LINES = [  # real-format lines (seeds.md §1.2 examples, plus variants)
    "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
    "LA_0021 LA_E_5789339 gsm loc_tx bonafide bonafide only_speech hidden",
    "LA_0022 LA_E_5789340 none - - bonafide notrim eval",
    "LA_0023 LA_E_1000001 opus sin_tx A19 spoof notrim progress",
]
DF_LINES = [
    "LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -",
    "TEF2 DF_E_2000013 low_m4a vcc2020 Task1-team20 spoof notrim eval "
    "neural_vocoder_nonautoregressive Task1 team20 FF E",
    "LA_0031 DF_E_2000020 high_ogg asvspoof bonafide bonafide notrim eval bonafide - - - -",
]


def _key(root: Path, track: str, lines: list[str], sub: str = "") -> Path:
    path = root / sub / "keys" / track / "CM" / "trial_metadata.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return root


def test_la_columns_and_phase_filter(tmp_path):
    root = _key(tmp_path, "LA", LA_LINES)
    m = prepare_asvspoof2021_la(root, check_audio=False)
    rows = {r["utt_id"]: r for r in m.table.to_pylist()}
    r = rows["LA_E_9332881"]
    assert (r["label"], r["attack"], r["codec"], r["transmission"], r["phase"], r["subset"]) == (
        0,
        "A07",
        "alaw",
        "ita_tx",
        "eval",
        "eval",
    )
    assert dict(r["extra"]) == {"condition": "C2", "trim": "notrim"}
    assert rows["LA_E_5789339"]["label"] == 1 and rows["LA_E_5789339"]["attack"] == "bonafide"
    assert (
        rows["LA_E_5789340"]["transmission"] is None
        and rows["LA_E_5789340"]["attack"] == "bonafide"
    )
    assert rows["LA_E_9332881"]["source_path"].endswith(
        "ASVspoof2021_LA_eval/flac/LA_E_9332881.flac"
    )
    ev = prepare_asvspoof2021_la(root, "eval", check_audio=False)
    assert sorted(ev.table.column("utt_id").to_pylist()) == ["LA_E_5789340", "LA_E_9332881"]
    assert set(m.summary()["by_phase"]) == {"eval", "hidden", "progress"}


def test_df_columns(tmp_path):
    root = _key(tmp_path, "DF", DF_LINES)
    m = prepare_asvspoof2021_df(root, check_audio=False)
    rows = {r["utt_id"]: r for r in m.table.to_pylist()}
    r = rows["DF_E_2000013"]
    assert (r["label"], r["attack"], r["codec"], r["vocoder"], r["phase"], r["speaker"]) == (
        0,
        "Task1-team20",
        "low_m4a",
        "neural_vocoder_nonautoregressive",
        "eval",
        "TEF2",
    )
    assert dict(r["extra"]) == {
        "condition": "C4",
        "source": "vcc2020",
        "trim": "notrim",
        "task": "Task1",
        "team": "team20",
        "gender_pair": "FF",
        "language": "E",
    }
    assert (
        rows["DF_E_2000011"]["vocoder"] == "traditional_vocoder"
        and rows["DF_E_2000011"]["phase"] == "progress"
    )
    assert rows["DF_E_2000020"]["label"] == 1 and rows["DF_E_2000020"]["vocoder"] == "bonafide"
    assert len(prepare_asvspoof2021_df(root, "eval", check_audio=False)) == 2


def test_key_found_in_keys_full_folder(tmp_path):
    root = _key(tmp_path, "LA", LA_LINES, sub="LA-keys-full")
    assert len(prepare_asvspoof2021_la(root, check_audio=False)) == 4


def test_missing_key_lists_tried_paths(tmp_path):
    with pytest.raises(
        ManifestError, match=r"(?s)not found; tried:.*keys/DF/CM/trial_metadata.txt.*DF-keys-full"
    ):
        prepare_asvspoof2021_df(tmp_path)


def test_df_key_given_to_la_parser_is_rejected(tmp_path):
    root = _key(tmp_path, "LA", DF_LINES)
    with pytest.raises(ManifestError, match=r"trial_metadata.txt:1: expected 8 columns.*got 13"):
        prepare_asvspoof2021_la(root, check_audio=False)


@pytest.mark.parametrize(
    "bad,match",
    [
        ("LA_0009 LA_E_1 alaw ita_tx A07 fake notrim eval", "unknown label 'fake'"),
        ("LA_0009 LA_E_1 alaw ita_tx A07 spoof notrim test", "unknown phase 'test'"),
        ("LA_0009 LA_E_1 amr ita_tx A07 spoof notrim eval", "unknown codec 'amr'"),
        ("LA_0009 LA_E_1 alaw ita_tx - spoof notrim eval", "spoof row without an attack"),
        (
            "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
            "duplicate utt_id 'LA_E_9332881'",
        ),
    ],
)
def test_la_bad_lines(tmp_path, bad, match):
    root = _key(tmp_path, "LA", [*LA_LINES, bad])
    with pytest.raises(ManifestError, match=rf"trial_metadata.txt:5: {match}"):
        prepare_asvspoof2021_la(root, check_audio=False)


def test_df_bad_vocoder_and_phase_arg(tmp_path):
    root = _key(tmp_path, "DF", [DF_LINES[0].replace("traditional_vocoder", "magic_vocoder")])
    with pytest.raises(ManifestError, match=":1: unknown vocoder group 'magic_vocoder'"):
        prepare_asvspoof2021_df(root, check_audio=False)
    with pytest.raises(ValueError, match="unknown phase 'dev'"):
        prepare_asvspoof2021_df(root, "dev")


@pytest.mark.parametrize(
    "corpus,fn",
    [("asvspoof2021-la", prepare_asvspoof2021_la), ("asvspoof2021-df", prepare_asvspoof2021_df)],
)
def test_synthetic_corpora(synth, corpus, fn):
    info = synth[corpus]
    m = fn(info["root"])
    assert len(m) == info["rows"]
    assert {Path(p).stem for p in m.missing_audio} == {
        u for u, r in info["broken"].items() if r == "missing_file"
    }
