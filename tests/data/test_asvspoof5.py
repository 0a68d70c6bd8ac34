"""ASVspoof 5 Track 1 protocols: counts from the synthetic corpus, the column mapping, every way to
name the protocols, file:line errors, and the manifest/synth CLI."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from spoofdet.cli import main
from spoofdet.data.corpora import CORPORA, SPLIT_HELP, ManifestError, prepare, prepare_asvspoof5
from spoofdet.data.corpora.asvspoof5 import read_asvspoof5_key

NAMES = {
    "train": "ASVspoof5.train.tsv",
    "dev": "ASVspoof5.dev.track_1.tsv",
    "eval": "ASVspoof5.eval.track_1.tsv",
}
BONA = "T_4850 T_0000000001 F - - - - bonafide bonafide -"
SPOOF = "E_0010 E_0000000042 M C05 3 E_0000000007 AC1 A21 spoof -"


def _root_with(tmp_path: Path, texts: dict[str, str], *, flat: bool = False) -> Path:
    proto = tmp_path if flat else tmp_path / "ASVspoof5_protocols"
    proto.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        (proto / NAMES[split]).write_text(text)
    return tmp_path


def _extra(row: dict) -> dict:
    return dict(row["extra"])


# ----------------------------------------------------------------------------- synthetic corpus


def test_registered_for_manifest_prepare_and_synth():
    assert (
        CORPORA["asvspoof5"] is prepare_asvspoof5
        and "train, dev or eval" in SPLIT_HELP["asvspoof5"]
    )


def test_synthetic_counts_per_split_label_attack_codec(synth):
    info = synth["asvspoof5"]  # per_split=9: 3 bona fide + 6 spoof in each split
    root = Path(info["root"])
    m = prepare_asvspoof5(root)
    s = m.summary()
    assert s["rows"] == 27 == info["rows"] and (s["bonafide"], s["spoof"]) == (9, 18)
    assert list(s["by_subset"]) == ["train", "dev", "eval"]
    for split, attacks in (("train", range(1, 9)), ("dev", range(9, 17)), ("eval", range(17, 33))):
        sub = s["by_subset"][split]
        assert (sub["rows"], sub["bonafide"], sub["spoof"]) == (9, 3, 6)
        # attack counts equal a plain count of column 8 of the protocol's spoof lines
        lines = [ln.split() for ln in (root / "ASVspoof5_protocols" / NAMES[split]).open()]
        expected = Counter(c[7] for c in lines if c[8] == "spoof")
        assert {k: v for k, v in sub["by_attack"].items() if k != "bonafide"} == expected
        assert set(expected) <= {f"A{i:02d}" for i in attacks}
    t = m.table
    conditions = Counter(
        zip(t["subset"].to_pylist(), [dict(e)["condition"] for e in t["extra"].to_pylist()])
    )
    # train/dev are uncoded; eval cycles none, C01, C02, C03 over its 9 rows
    assert conditions == {
        ("train", "none"): 9,
        ("dev", "none"): 9,
        ("eval", "none"): 3,
        ("eval", "C01"): 2,
        ("eval", "C02"): 2,
        ("eval", "C03"): 2,
    }
    assert t["codec"].to_pylist() == [dict(e)["condition"] for e in t["extra"].to_pylist()]
    speakers = Counter(t["speaker"].to_pylist())
    assert len(speakers) == 9 and set(speakers.values()) == {3}  # speakers recur within a split
    # broken files: the missing one is listed (row kept), the others exist for the shard job
    missing = {Path(p).stem for p in m.missing_audio}
    assert missing == {u for u, r in info["broken"].items() if r == "missing_file"} and missing
    assert all(p.startswith(str(root / "flac_E_eval")) for p in m.missing_audio)
    for split, folder, letter in (
        ("train", "flac_T", "T_"),
        ("dev", "flac_D", "D_"),
        ("eval", "flac_E_eval", "E_"),
    ):
        rows = [r for r in t.to_pylist() if r["subset"] == split]
        assert all(r["utt_id"].startswith(letter) for r in rows)
        assert all(r["source_path"] == str(root / folder / f"{r['utt_id']}.flac") for r in rows)


def test_coded_eval_rows_link_to_an_uncoded_source(synth):
    m = prepare_asvspoof5(synth["asvspoof5"]["root"], "eval", check_audio=False)
    rows = {r["utt_id"]: r for r in m.table.to_pylist()}
    coded = [r for r in rows.values() if r["codec"] != "none"]
    assert coded
    for r in coded:
        e = _extra(r)
        assert 1 <= int(e["codec_q"]) <= 8 and rows[e["codec_seed"]]["codec"] == "none"


# ----------------------------------------------------------------------------- column mapping


def test_every_column_lands_where_it_should(tmp_path):
    root = _root_with(tmp_path, {"train": BONA + "\n", "eval": SPOOF + "\n"})
    m = prepare_asvspoof5(root, check_audio=False)
    bona, spoof = m.table.to_pylist()
    assert {
        k: bona[k] for k in ("utt_id", "corpus", "subset", "label", "attack", "speaker", "codec")
    } == {
        "utt_id": "T_0000000001",
        "corpus": "asvspoof5",
        "subset": "train",
        "label": 1,
        "attack": "bonafide",
        "speaker": "T_4850",
        "codec": "none",
    }
    assert _extra(bona) == {"condition": "none", "gender": "F"}
    assert bona["source_path"] == str(tmp_path / "flac_T" / "T_0000000001.flac")
    assert {k: spoof[k] for k in ("utt_id", "subset", "label", "attack", "speaker", "codec")} == {
        "utt_id": "E_0000000042",
        "subset": "eval",
        "label": 0,
        "attack": "A21",
        "speaker": "E_0010",
        "codec": "C05",
    }
    assert _extra(spoof) == {
        "condition": "C05",
        "gender": "M",
        "codec_q": "3",
        "codec_seed": "E_0000000007",
        "attack_tag": "AC1",
    }
    assert spoof["source_path"] == str(tmp_path / "flac_E_eval" / "E_0000000042.flac")
    assert spoof["phase"] is None and not m.audio_checked


def test_tabs_crlf_bom_blank_lines_and_dash_attack_on_bona_fide(tmp_path):
    text = (
        "\ufeff"
        + BONA.replace(" ", "\t")
        + "\r\n\r\n"
        + BONA.replace("T_0000000001", "T_2").replace("bonafide bonafide", "- bonafide")
        + " \n"
    )
    root = _root_with(tmp_path, {"train": text})
    t = prepare_asvspoof5(root, "train", check_audio=False).table
    assert t["utt_id"].to_pylist() == ["T_0000000001", "T_2"]
    assert t["attack"].to_pylist() == ["bonafide", "bonafide"]


# ----------------------------------------------------------------------------- ways to name it


def test_root_protocols_folder_protocol_file_and_flat_layout_agree(tmp_path):
    texts = {"train": BONA + "\n", "eval": SPOOF + "\n"}
    root = _root_with(tmp_path / "c", texts)
    whole = prepare_asvspoof5(root, check_audio=False).table
    assert whole["subset"].to_pylist() == ["train", "eval"]  # only the splits that exist
    assert prepare_asvspoof5(root / "ASVspoof5_protocols", check_audio=False).table.equals(whole)
    ev = prepare_asvspoof5(root, "eval", check_audio=False).table
    assert ev["utt_id"].to_pylist() == ["E_0000000042"]
    for given in (
        root / "ASVspoof5_protocols" / NAMES["eval"],
        str(root / "ASVspoof5_protocols" / NAMES["eval"]),
    ):  # a protocol file: its split from the official name, audio under the corpus root
        assert prepare_asvspoof5(given, check_audio=False).table.equals(ev)
    assert prepare_asvspoof5(
        root, protocol_file=root / "ASVspoof5_protocols" / NAMES["eval"], check_audio=False
    ).table.equals(ev)
    flat = _root_with(tmp_path / "flat", texts, flat=True)
    t = prepare_asvspoof5(flat, check_audio=False).table
    assert t["source_path"].to_pylist() == [
        str(flat / "flac_T" / "T_0000000001.flac"),
        str(flat / "flac_E_eval" / "E_0000000042.flac"),
    ]
    assert prepare("asvspoof5", str(root), "eval", check_audio=False).table.equals(ev)


def test_renamed_protocol_file_needs_its_split(tmp_path):
    (tmp_path / "mine.tsv").write_text(SPOOF + "\n")
    with pytest.raises(
        ValueError, match=r"cannot tell the split of .*mine.tsv.*train, dev or eval"
    ):
        prepare_asvspoof5(tmp_path / "mine.tsv", check_audio=False)
    t = prepare_asvspoof5(tmp_path / "mine.tsv", "dev", check_audio=False).table
    assert t["subset"].to_pylist() == ["dev"]
    assert t["source_path"].to_pylist() == [str(tmp_path / "flac_D" / "E_0000000042.flac")]


def test_missing_protocols_and_unknown_split(tmp_path):
    with pytest.raises(
        ManifestError,
        match=r"(?s)no ASVspoof 5 protocol found; tried:.*ASVspoof5_protocols/ASVspoof5.train.tsv"
        r".*--root must be",
    ):
        prepare_asvspoof5(tmp_path)
    with pytest.raises(
        ManifestError,
        match=r"dev protocol not found at .*ASVspoof5_protocols/ASVspoof5.dev.track_1.tsv",
    ):
        prepare_asvspoof5(tmp_path, "dev")
    with pytest.raises(ValueError, match=r"unknown split 'progress' for asvspoof5"):
        prepare_asvspoof5(tmp_path, "progress")


# ----------------------------------------------------------------------------- malformed lines


@pytest.mark.parametrize(
    "line,match",
    [
        (
            "T_1 T_2 F - - - - bonafide bonafide",
            r"train.tsv:2: expected 10 columns 'SPEAKER_ID FLAC_FILE_NAME",
        ),
        ("T_1 T_2 F - - - - bonafide bonafide - x", r"train.tsv:2: expected 10 columns .* got 11"),
        (
            "T_1 T_2 F - - - - bonafide genuine -",
            r":2: unknown label 'genuine' in column 9 \(KEY\)",
        ),
        ("T_1 T_2 F - - - AC1 A05 bonafide -", r":2: bona fide row with attack 'A05'"),
        ("T_1 T_2 F - - - - bonafide spoof -", r":2: spoof row with attack 'bonafide'"),
        ("T_1 T_2 F mp3 - - AC1 A05 spoof -", r":2: unknown codec 'mp3' in column 4"),
        ("T_1 T_2 F C01 high - AC1 A05 spoof -", r":2: codec quality 'high' in column 5"),
        ("T_1 ../x F - - - - bonafide bonafide -", r":2: invalid utterance id '../x'"),
        (
            "T_1 T_0000000001 F - - - - bonafide bonafide -",
            r":2: duplicate utt_id 'T_0000000001' \(first seen at .*train.tsv:1\)",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    root = _root_with(tmp_path, {"train": f"{BONA}\n{line}\n"})
    with pytest.raises(ManifestError, match=match):
        prepare_asvspoof5(root, "train", check_audio=False)


def test_every_problem_reported_at_once_and_duplicates_across_splits(tmp_path):
    bad = "".join(f"T_1 T_{i} F - - - - bonafide maybe -\n" for i in range(12))
    dup = SPOOF.replace("E_0000000042", "T_0000000001")
    root = _root_with(tmp_path, {"train": BONA + "\n" + bad, "eval": dup + "\n"})
    with pytest.raises(ManifestError) as exc:
        prepare_asvspoof5(root, check_audio=False)
    msg = str(exc.value)
    assert len(exc.value.problems) == 13 and "13 problem(s)" in msg and "and 3 more" in msg
    assert "eval.track_1.tsv:1: duplicate utt_id 'T_0000000001'" in exc.value.problems[-1]
    assert "Protocol lines have 10 whitespace-separated columns" in msg


# ----------------------------------------------------------------------------- official CM key


def test_official_key_reader(tmp_path):
    key = tmp_path / "key.tsv"
    key.write_text("filename\tcm-label\nE_1\tbonafide\nE_2\tspoof\n")
    rows = read_asvspoof5_key(key).table.to_pylist()
    assert [
        (r["utt_id"], r["label"], r["attack"], r["subset"], r["source_path"]) for r in rows
    ] == [
        ("E_1", 1, "bonafide", "eval", None),
        ("E_2", 0, None, "eval", None),
    ]
    key.write_text("filename\tcm-label\nE_1\tbonafide\nE_2\tfake\nE_1\tspoof\nE_3\n")
    with pytest.raises(ManifestError) as exc:
        read_asvspoof5_key(key)
    assert [p.split(": ", 1)[0] for p in exc.value.problems] == [f"{key}:{n}" for n in (3, 4, 5)]
    assert "unknown label 'fake'" in str(exc.value) and "duplicate utt_id 'E_1'" in str(exc.value)
    key.write_text("trial\tlabel\nE_1\tbonafide\n")
    with pytest.raises(
        ManifestError, match=r"key.tsv:1: expected the header line 'filename<TAB>cm-label'"
    ):
        read_asvspoof5_key(key)
    with pytest.raises(ValueError, match="unknown split 'progress'"):
        read_asvspoof5_key(key, "progress")


# ----------------------------------------------------------------------------- CLI


def test_manifest_cli_json(synth, capsys):
    root = synth["asvspoof5"]["root"]
    assert main(["manifest", "asvspoof5", "--root", root, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["corpus"], out["rows"], out["bonafide"], out["spoof"]) == ("asvspoof5", 27, 9, 18)
    assert list(out["by_subset"]) == ["train", "dev", "eval"] and out["missing_audio"] == 1
    assert (
        main(
            [
                "manifest",
                "asvspoof5",
                "--root",
                root,
                "--split",
                "eval",
                "--no-audio-check",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (out["rows"], list(out["by_subset"]), out["audio_checked"]) == (9, ["eval"], False)


def test_synth_cli_writes_the_real_layout(tmp_path, capsys):
    out = tmp_path / "a5"
    assert (
        main(["synth", "asvspoof5", "--out", str(out), "--per-split", "4", "--no-broken", "--json"])
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 12 and info["broken"] == {}
    assert sorted(p.name for p in (out / "ASVspoof5_protocols").iterdir()) == sorted(NAMES.values())
    m = prepare_asvspoof5(out)
    assert len(m) == 12 and m.missing_audio == () and m.not_regular == ()
    assert sorted(p.name for p in out.iterdir()) == [
        "ASVspoof5_protocols",
        "SYNTHETIC.json",
        "flac_D",
        "flac_E_eval",
        "flac_T",
    ]


def test_prepare_cli_local_shards_eval_and_quarantines_the_broken_files(synth, tmp_path, capsys):
    info = synth["asvspoof5"]
    out = tmp_path / "shards"
    argv = ["prepare", "asvspoof5", "--root", info["root"], "--split", "eval", "--out", str(out)]
    assert main([*argv, "--executor", "local", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    broken = Counter(info["broken"].values())  # every broken file is an eval file
    assert (s["corpus"], s["rows_in"], s["quarantined"]) == ("asvspoof5", 9, sum(broken.values()))
    assert s["by_reason"] == dict(broken) and s["rows_written"] == 9 - sum(broken.values())
