"""``spoofdet evaluate --format asvspoof5``: the official Track 1 score TSV (``filename cm-score``
header) and key TSV (``filename cm-label``) give the very numbers of the same trials as a CSV key
plus a ``<id> <score>`` file; header errors are clear; the codec breakdown names C01.. and none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spoofdet.cli import main
from spoofdet.data.corpora import ManifestError, prepare_csv
from spoofdet.evaluation.keys import FORMATS, load_key
from spoofdet.evaluation.metrics import act_dcf, cllr, compute_eer, min_dcf
from spoofdet.evaluation.scorefile import LAYOUTS, ScoreFileError, read_scores, write_scores

CODECS = ("-", "C01", "C02", "C03")
METRICS = ("eer", "min_dcf", "act_dcf", "cllr")


def _trials(n_bona: int = 100, n_spoof: int = 100):
    """Ids, labels, scores and codecs: bona fide i scores 20.5 + i, spoof j scores j (the
    In-the-Wild pin of test_evaluate_cli: EER 40 % at 59.5, minDCF 0.79); codec by position."""
    ids, labels, scores, codecs = [], [], [], []
    for i in range(n_bona + n_spoof):
        bona = i < n_bona
        ids.append(f"E_{i:010d}")
        labels.append("bonafide" if bona else "spoof")
        scores.append(20.5 + i if bona else float(i - n_bona))
        codecs.append(CODECS[i % len(CODECS)])
    return ids, labels, scores, codecs


def _protocol(root: Path, ids, labels, codecs) -> Path:
    proto = root / "ASVspoof5_protocols"
    proto.mkdir(parents=True)
    lines = []
    for i, (utt, label, codec) in enumerate(zip(ids, labels, codecs)):
        q = "-" if codec == "-" else str(1 + i % 8)
        attack = "bonafide" if label == "bonafide" else f"A{17 + i % 16:02d}"
        tag = "-" if label == "bonafide" else "AC1"
        lines.append(f"E_{i % 7:04d} {utt} F {codec} {q} - {tag} {attack} {label} -\n")
    path = proto / "ASVspoof5.eval.track_1.tsv"
    path.write_text("".join(lines))
    return path


def _official_scores(path: Path, ids, scores) -> Path:
    path.write_text("filename\tcm-score\n" + "".join(f"{u}\t{s!r}\n" for u, s in zip(ids, scores)))
    return path


def _official_key(path: Path, ids, labels) -> Path:
    path.write_text(
        "filename\tcm-label\n" + "".join(f"{u}\t{lab}\n" for u, lab in zip(ids, labels))
    )
    return path


def _evaluate(capsys, *argv) -> dict:
    code = main(["evaluate", *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.fixture
def corpus(tmp_path):
    ids, labels, scores, codecs = _trials()
    root = tmp_path / "ASVspoof5"
    protocol = _protocol(root, ids, labels, codecs)
    return {
        "root": root,
        "protocol": protocol,
        "ids": ids,
        "labels": labels,
        "scores": scores,
        "official_scores": _official_scores(tmp_path / "scores.tsv", ids, scores),
        "official_key": _official_key(tmp_path / "keys.tsv", ids, labels),
    }


def test_format_and_layout_registered():
    assert "asvspoof5" in FORMATS
    assert LAYOUTS["asvspoof5"].header == ("filename", "cm-score")


def test_official_score_tsv_equals_csv_key_and_plain_scores(corpus, tmp_path, capsys):
    ids, labels, scores = corpus["ids"], corpus["labels"], corpus["scores"]
    # the same trials as a CSV key (utt_id + label, no path column) and a '<id> <score>' file
    csv_key = tmp_path / "key.csv"
    csv_key.write_text("utt_id,label\n" + "".join(f"{u},{lab}\n" for u, lab in zip(ids, labels)))
    plain = write_scores(tmp_path / "scores.txt", ids, scores)
    reference = _evaluate(capsys, "--scores", str(plain), "--key", str(csv_key), "--format", "csv")
    runs = {
        # the official score TSV without --score-layout: the header selects the layout
        "root": ("--key", str(corpus["root"])),
        "protocols folder": ("--key", str(corpus["root"] / "ASVspoof5_protocols")),
        "protocol file": ("--key", str(corpus["protocol"])),
        "official key": ("--key", str(corpus["official_key"])),
        "named layout": ("--key", str(corpus["protocol"]), "--score-layout", "asvspoof5"),
    }
    for name, args in runs.items():
        r = _evaluate(
            capsys, "--scores", str(corpus["official_scores"]), "--format", "asvspoof5", *args
        )
        assert (r["n_bonafide"], r["n_spoof"], r["format"]) == (100, 100, "asvspoof5"), name
        assert r["selection"] == "split eval", name
        for m in METRICS:
            assert abs(r[m] - reference[m]) <= 1e-12, (name, m, r[m], reference[m])
    # hand-derived: EER 40 % at 59.5, minDCF 0.79 (test_evaluate_cli's pin); every score lies
    # above the actDCF threshold -ln(1.9): Pmiss 0, Pfa 1 -> actDCF = 0.5 * 1 / 0.5 = 1
    assert reference["eer"] == pytest.approx(40.0, abs=1e-12) and reference["threshold"] == 59.5
    assert reference["min_dcf"] == pytest.approx(0.79, abs=1e-12)
    assert reference["act_dcf"] == pytest.approx(1.0, abs=1e-12)
    bona, spoof = np.asarray(scores[:100]), np.asarray(scores[100:])
    assert abs(reference["cllr"] - cllr(bona, spoof)) <= 1e-12
    assert abs(reference["eer"] - 100 * compute_eer(bona, spoof)[0]) <= 1e-12
    assert abs(reference["min_dcf"] - min_dcf(bona, spoof)[0]) <= 1e-12
    assert abs(reference["act_dcf"] - act_dcf(bona, spoof)) <= 1e-12


def test_codec_breakdown_names_c01_and_none(corpus, capsys):
    r = _evaluate(
        capsys,
        "--scores",
        str(corpus["official_scores"]),
        "--key",
        str(corpus["root"]),
        "--format",
        "asvspoof5",
    )
    codec = r["breakdown"]["codec"]
    assert sorted(codec) == ["C01", "C02", "C03", "none"]
    assert {k: (v["n_bonafide"], v["n_spoof"]) for k, v in codec.items()} == {
        "none": (25, 25),
        "C01": (25, 25),
        "C02": (25, 25),
        "C03": (25, 25),
    }
    assert set(r["breakdown"]["attack"]) == {f"A{a:02d}" for a in range(17, 33)}
    # the text report names them too
    argv = ["evaluate", "--scores", str(corpus["official_scores"]), "--key", str(corpus["root"])]
    assert main([*argv, "--format", "asvspoof5"]) == 0
    out = capsys.readouterr().out
    assert "by codec:" in out and "    C01 " in out and "    none " in out


def test_score_tsv_without_or_with_a_bad_header(corpus, tmp_path, capsys):
    base = ["--key", str(corpus["protocol"]), "--format", "asvspoof5"]
    rows = "".join(f"{u}\t{s!r}\n" for u, s in zip(corpus["ids"], corpus["scores"]))
    bad = tmp_path / "bad_header.tsv"
    bad.write_text("filename\tscore\n" + rows)
    assert main(["evaluate", "--scores", str(bad), *base]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: score 'score' (column 2) is not a finite number" in err
    assert "line 1 looks like a header" in err and "--score-layout asvspoof5" in err
    assert main(["evaluate", "--scores", str(bad), *base, "--score-layout", "asvspoof5"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: a score file of layout asvspoof5 starts with the header line " in err
    assert "'filename\\tcm-score', got 'filename\\tscore'" in err
    headerless = tmp_path / "headerless.tsv"
    headerless.write_text(rows)
    assert (
        main(["evaluate", "--scores", str(headerless), *base, "--score-layout", "asvspoof5"]) == 2
    )
    err = capsys.readouterr().err
    assert f"{headerless}:1: a score file of layout asvspoof5 starts with the header line" in err
    assert "--score-layout id-score (the default)" in err
    # headerless is the spoofdet format: read as such by default, same trials -> works
    r = _evaluate(capsys, "--scores", str(headerless), *base)
    assert r["eer"] == pytest.approx(40.0)
    # a header repeated inside the file is a malformed line, named
    twice = _official_scores(tmp_path / "twice.tsv", corpus["ids"], corpus["scores"])
    twice.write_text(twice.read_text() + "filename\tcm-score\n")
    with pytest.raises(ScoreFileError, match=r"twice.tsv:202: score 'cm-score' \(column 2\)"):
        read_scores(twice)


def test_official_key_errors_and_phase(corpus, tmp_path):
    key = load_key("asvspoof5", corpus["official_key"], "dev")
    assert key.selection == "split dev" and set(key.table["subset"].to_pylist()) == {"dev"}
    bad = tmp_path / "k.tsv"
    bad.write_text("filename\tcm-label\nE_1\tgenuine\n")
    with pytest.raises(ManifestError, match=r"k.tsv:2: unknown label 'genuine'"):
        load_key("asvspoof5", bad)
    with pytest.raises(ValueError, match=r"unknown split 'hidden'"):
        load_key("asvspoof5", corpus["root"], "hidden")


def test_csv_key_needs_no_path_but_a_manifest_still_does(tmp_path):
    csv_key = tmp_path / "key.csv"
    csv_key.write_text("utt_id,label,codec\nE_1,bonafide,C01\nE_2,spoof,\n")
    rows = load_key("csv", csv_key).table.to_pylist()
    assert [(r["utt_id"], r["label"], r["codec"], r["source_path"]) for r in rows] == [
        ("E_1", 1, "C01", None),
        ("E_2", 0, None, None),
    ]
    for check_audio in (True, False):  # what `spoofdet manifest` / `prepare` read
        with pytest.raises(ManifestError, match=r"key.csv:1: header needs a 'path' column"):
            prepare_csv(csv_key, check_audio=check_audio)
    csv_key.write_text("name,label\nE_1,bonafide\n")
    with pytest.raises(ManifestError, match=r"key.csv:1: a key without a 'path' column needs"):
        load_key("csv", csv_key)
    csv_key.write_text("utt_id,label\nE_1,bonafide\n,spoof\n")
    with pytest.raises(ManifestError, match=r"key.csv:3: empty utt_id"):
        load_key("csv", csv_key)
