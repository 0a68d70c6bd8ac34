"""Score files and ``spoofdet evaluate``: strict reading, loud matching, JSON keys, pinned figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spoofdet.cli import main
from spoofdet.evaluation.metrics import compute_eer
from spoofdet.evaluation.scorefile import ScoreFileError, match_scores, read_scores, write_scores

JSON_KEYS = {
    "eer",
    "threshold",
    "min_dcf",
    "act_dcf",
    "cllr",
    "n_bonafide",
    "n_spoof",
    "breakdown",
    "polarity_warning",
    "eer_negated",
    "scores",
    "format",
    "key",
    "selection",
}


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _itw(tmp_path, n_bona=100, n_spoof=100):
    """An In-the-Wild-style meta.csv; bona fide i scores 20.5 + i, spoof j scores j (see the pin)."""
    rows = ["file,speaker,label"]
    ids, scores = [], []
    for i in range(n_bona + n_spoof):
        bona = i < n_bona
        rows.append(f"{i}.wav,Speaker {i % 7},{'bona-fide' if bona else 'spoof'}")
        ids.append(f"{i}.wav")
        scores.append(20.5 + i if bona else float(i - n_bona))
    return _write(tmp_path / "meta.csv", rows), ids, scores


def _evaluate_json(capsys, *argv):
    code = main(["evaluate", *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out), out.err


# ----------------------------------------------------------------------------- score files


@pytest.mark.parametrize(
    "body,match",
    [
        ("a 1.0\nb 2.0 x\n", r"s\.txt:2: expected 2 columns <utt_id> <score>, got 3"),
        ("a 1.0\n\nb one\n", r"s\.txt:3: score 'one' \(column 2\) is not a finite number"),
        ("a nan\n", r"s\.txt:1: score 'nan' .* not a finite number"),
        ("", r"holds no scores"),
    ],
)
def test_read_scores_names_file_and_line(tmp_path, body, match):
    (tmp_path / "s.txt").write_text(body)
    with pytest.raises(ScoreFileError, match=match):
        read_scores(tmp_path / "s.txt")


def test_strict_default_points_to_layouts(tmp_path):
    _write(tmp_path / "s.txt", ["LA_E_1 A07 spoof -3.5", "LA_E_2 - bonafide 2.0"])
    with pytest.raises(ScoreFileError, match=r"(?s)2 malformed line.*--score-layout"):
        read_scores(tmp_path / "s.txt")
    s = read_scores(tmp_path / "s.txt", layout="aasist")
    assert s.ids == ["LA_E_1", "LA_E_2"] and s.scores.tolist() == [-3.5, 2.0]
    _write(tmp_path / "amsdf.txt", ["x.wav 4.0 1"])
    assert read_scores(tmp_path / "amsdf.txt", layout="amsdf").scores.tolist() == [
        -4.0
    ]  # fake logit negated


def test_write_scores_whole_and_exact(tmp_path):
    ids, values = ["a", "b", "c"], [0.1, -1e-300, 1 / 3]
    path = write_scores(tmp_path / "out" / "s.txt", ids, values)
    write_scores(path, ids, values)  # a re-run replaces, never appends
    back = read_scores(path)
    assert (
        back.ids == ids
        and back.scores.tolist() == values
        and len(path.read_text().splitlines()) == 3
    )
    assert [p.name for p in path.parent.iterdir()] == ["s.txt"]  # no temporary file left
    for bad_ids, bad_values, match in (
        (["a", "a"], [1, 2], "more than once"),
        (["a b"], [1], "whitespace"),
        (["a"], [np.nan], "NaN"),
        (["a"], [1, 2], "1 ids but 2 scores"),
    ):
        with pytest.raises(ValueError, match=match):
            write_scores(tmp_path / "bad.txt", bad_ids, bad_values)
    assert not (tmp_path / "bad.txt").exists()


def test_match_reports_missing_extra_duplicated_at_once(tmp_path):
    _write(tmp_path / "s.txt", [f"u{i} {i}" for i in range(8)] + ["x1 0", "x2 0", "u3 9"])
    key = [f"u{i}" for i in range(12)]
    with pytest.raises(ScoreFileError) as exc:
        match_scores(read_scores(tmp_path / "s.txt"), key, key_name="key K")
    msg = str(exc.value)
    assert (
        f"score file {tmp_path / 's.txt'} does not match key K (12 key rows to score, 11 score lines)"
        in msg
    )
    assert "missing: 4 key id(s) have no score, e.g. 'u8', 'u9', 'u10', 'u11'" in msg
    assert "extra: 2 score id(s) are not in the key, e.g. 'x1' (line 9), 'x2' (line 10)" in msg
    assert "duplicated: 1 id(s) occur more than once, e.g. 'u3' (lines 4, 11)" in msg
    assert "Nothing was dropped or intersected" in msg


def test_match_with_required_rows(tmp_path):
    s = read_scores(_write(tmp_path / "s.txt", ["a 1", "b 2"]))
    aligned = match_scores(s, ["c", "b", "a"], required=np.array([False, True, True]))
    assert np.isnan(aligned[0]) and aligned[1:].tolist() == [2.0, 1.0]
    with pytest.raises(ScoreFileError, match="missing: 1 key id"):
        match_scores(s, ["c", "b", "a"])


# ----------------------------------------------------------------------------- evaluate: In-the-Wild


def test_itw_round_trip_pins_a_hand_derived_figure(tmp_path, capsys):
    # bona fide scores 20.5..119.5, spoof 0..99 (100 each). At bona fide 59.5, 40 bona fide
    # (20.5..59.5) are rejected and 40 spoofs (60..99) accepted: FRR = FAR = 0.4, the first zero
    # gap -> EER 40 %, threshold 59.5. minDCF: the 21 spoofs 0..20 lie below every bona fide, so
    # rejecting them costs 0.5 * 0.79 = 0.395; every later (spoof, bona fide) pair adds
    # 0.0095 - 0.005 > 0 -> minDCF = 0.395 / 0.5 = 0.79 at threshold 20.
    meta, ids, scores = _itw(tmp_path)
    write_scores(tmp_path / "scores.txt", ids, scores)
    r, err = _evaluate_json(
        capsys,
        "--scores",
        str(tmp_path / "scores.txt"),
        "--key",
        str(meta),
        "--format",
        "in-the-wild",
    )
    assert JSON_KEYS <= set(r) and "min_tdcf" not in r and err == ""
    assert r["eer"] == pytest.approx(40.0) and r["threshold"] == 59.5
    assert r["min_dcf"] == pytest.approx(0.79)
    assert (r["n_bonafide"], r["n_spoof"], r["polarity_warning"]) == (100, 100, False)
    assert r["breakdown"] == {}  # In-the-Wild has no attack, codec or subset factors
    # the folder holding meta.csv works as --key too, and the text report names the figure
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "scores.txt"),
                "--key",
                str(tmp_path),
                "--format",
                "in-the-wild",
            ]
        )
        == 0
    )
    assert "EER 40.000 %  (threshold 59.5)" in capsys.readouterr().out


def test_itw_ids_without_extension_exit_2_with_hint(tmp_path, capsys):
    meta, ids, scores = _itw(tmp_path, 3, 3)
    write_scores(tmp_path / "nes2net.txt", [i.removesuffix(".wav") for i in ids], scores)
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "nes2net.txt"),
                "--key",
                str(meta),
                "--format",
                "in-the-wild",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("spoofdet evaluate: error: score file")
    assert "missing: 6 key id(s)" in err and "extra: 6 score id(s)" in err
    assert "without it (e.g. '0')" in err and "awk '{print $1\".wav\", $2}'" in err


def test_bad_score_line_exits_2(tmp_path, capsys):
    meta, ids, _ = _itw(tmp_path, 2, 2)
    _write(tmp_path / "s.txt", ["0.wav 1.0", "1.wav 1.0 bonafide"])
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "s.txt"),
                "--key",
                str(meta),
                "--format",
                "in-the-wild",
            ]
        )
        == 2
    )
    assert f"{tmp_path / 's.txt'}:2: expected 2 columns" in capsys.readouterr().err


def test_polarity_warning_in_cli(tmp_path, capsys):
    meta, ids, scores = _itw(tmp_path)
    write_scores(tmp_path / "neg.txt", ids, [-v for v in scores])
    r, err = _evaluate_json(
        capsys, "--scores", str(tmp_path / "neg.txt"), "--key", str(meta), "--format", "in-the-wild"
    )
    assert r["polarity_warning"] is True and r["eer_negated"] == pytest.approx(40.0, abs=1.0)
    assert "warning:" in err and "look inverted" in err and "neg.txt" in err


def test_several_models_and_mean_fusion(tmp_path, capsys):
    meta, ids, scores = _itw(tmp_path)
    rng = np.random.default_rng(0)
    paths, all_scores = [], []
    for m in range(3):
        s = np.asarray(scores) + rng.normal(0, 30, len(scores))
        all_scores.append(s)
        paths.append(str(write_scores(tmp_path / f"m{m}.txt", ids, s)))
    r, _ = _evaluate_json(
        capsys, "--scores", *paths, "--key", str(meta), "--format", "in-the-wild", "--fuse", "mean"
    )
    assert {"models", "over_models", "fusion"} <= set(r) and len(r["models"]) == 3
    eers = [100 * compute_eer(s[:100], s[100:])[0] for s in all_scores]
    assert [m["eer"] for m in r["models"]] == pytest.approx(eers)
    assert r["over_models"]["eer"]["best"] == pytest.approx(min(eers))
    assert r["over_models"]["eer"]["mean"] == pytest.approx(np.mean(eers))
    fused = np.mean(all_scores, axis=0)
    assert r["fusion"]["eer"] == pytest.approx(100 * compute_eer(fused[:100], fused[100:])[0])
    assert r["fusion"]["method"] == "mean" and JSON_KEYS - {"scores"} <= set(r["fusion"])


# ----------------------------------------------------------------------------- evaluate: ASVspoof 2021


def _la_2021(tmp_path):
    """A 2021 LA CM key with all three phases; scores: bona fide high, spoof low, by attack."""
    rng = np.random.default_rng(21)
    lines, ids, scores = [], [], []
    codecs = ["none", "alaw", "gsm"]
    for i in range(120):
        phase = ("eval", "eval", "progress", "hidden")[i % 4]
        codec = codecs[i % 3]
        tx = "-" if codec == "none" else "ita_tx"
        if i % 3 == 0:
            lines.append(f"LA_0021 LA_E_{i:07d} {codec} {tx} bonafide bonafide notrim {phase}")
            scores.append(rng.normal(2, 1))
        else:
            attack = ("A07", "A08")[i % 2]
            lines.append(f"LA_0009 LA_E_{i:07d} {codec} {tx} {attack} spoof notrim {phase}")
            scores.append(rng.normal(-1, 1))
        ids.append(f"LA_E_{i:07d}")
    key = _write(tmp_path / "trial_metadata.txt", lines)
    return key, ids, np.asarray(scores), ["eval" if i % 4 < 2 else "x" for i in range(120)]


def test_2021_la_scores_eval_phase_only(tmp_path, capsys):
    key, ids, scores, phase = _la_2021(tmp_path)
    write_scores(
        tmp_path / "all.txt", ids, scores
    )  # the whole trial list, as the seed repos write it
    r, _ = _evaluate_json(
        capsys,
        "--scores",
        str(tmp_path / "all.txt"),
        "--key",
        str(key),
        "--format",
        "asvspoof2021-la",
    )
    ev = np.array([p == "eval" for p in phase])
    bona = np.array([i % 3 == 0 for i in range(120)])
    assert r["n_bonafide"] + r["n_spoof"] == ev.sum() == 60 and r["selection"] == "phase eval"
    assert r["eer"] == pytest.approx(100 * compute_eer(scores[ev & bona], scores[ev & ~bona])[0])
    assert set(r["breakdown"]) == {"attack", "codec"} and set(r["breakdown"]["codec"]) == {
        "C1",
        "C2",
        "C6",
    }
    assert r["breakdown"]["attack"]["A07"]["n_bonafide"] == r["n_bonafide"]
    # a score file holding only the eval trials is fine too
    ev_ids = [u for u, e in zip(ids, ev) if e]
    write_scores(tmp_path / "eval.txt", ev_ids, scores[ev])
    r2, _ = _evaluate_json(
        capsys,
        "--scores",
        str(tmp_path / "eval.txt"),
        "--key",
        str(key),
        "--format",
        "asvspoof2021-la",
    )
    assert r2["eer"] == r["eer"]
    # --phase all needs every trial
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "eval.txt"),
                "--key",
                str(key),
                "--format",
                "asvspoof2021-la",
                "--phase",
                "all",
            ]
        )
        == 2
    )
    assert "missing: 60 key id(s)" in capsys.readouterr().err
    # an id outside the key, or a missing eval trial, stops with exit 2
    write_scores(tmp_path / "bad.txt", [*ev_ids[1:], "LA_E_9999999"], scores[ev])
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "bad.txt"),
                "--key",
                str(key),
                "--format",
                "asvspoof2021-la",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"missing: 1 key id(s) have no score, e.g. '{ev_ids[0]}'" in err
        and "'LA_E_9999999' (line 60)" in err
    )


def test_2021_la_tdcf_with_asv_key_and_scores(tmp_path, capsys):
    key, ids, scores, _ = _la_2021(tmp_path)
    write_scores(tmp_path / "cm.txt", ids, scores)
    rng = np.random.default_rng(3)
    asv_key, asv_scores = [], []
    for i in range(300):
        kind = ("target", "nontarget", "spoof")[i % 3]
        attack = "bonafide" if kind != "spoof" else ("A07", "A08")[i % 2]
        asv_key.append(
            f"LA_{i % 5:04d} LA_E_{i:07d} alaw ita_tx {attack} {kind} notrim {('eval', 'progress')[i % 2]}"
        )
        asv_scores.append(
            f"LA_{i % 5:04d} LA_E_{i:07d} "
            f"{rng.normal({'target': 3, 'nontarget': -3, 'spoof': 1}[kind], 1):.6f}"
        )
    _write(tmp_path / "asv_key.txt", asv_key)
    _write(tmp_path / "asv_scores.txt", asv_scores)
    r, _ = _evaluate_json(
        capsys,
        "--scores",
        str(tmp_path / "cm.txt"),
        "--key",
        str(key),
        "--format",
        "asvspoof2021-la",
        "--asv-scores",
        str(tmp_path / "asv_scores.txt"),
        "--asv-key",
        str(tmp_path / "asv_key.txt"),
    )
    assert r["tdcf"]["form"] == "2021-revised" and 0 < r["min_tdcf"] <= 1.0 + r["tdcf"]["c0"]
    assert "min_tdcf" in r["breakdown"]["attack"]["A07"]
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "cm.txt"),
                "--key",
                str(key),
                "--format",
                "asvspoof2021-la",
                "--asv-scores",
                str(tmp_path / "asv_scores.txt"),
            ]
        )
        == 2
    )
    assert "needs --asv-key" in capsys.readouterr().err


def test_2021_df_vocoder_and_compression_breakdowns(tmp_path, capsys):
    rng = np.random.default_rng(22)
    lines, ids, scores = [], [], []
    for i in range(90):
        comp = ("nocodec", "low_mp3", "high_ogg")[i % 3]
        if i % 2 == 0:
            lines.append(
                f"LA_0023 DF_E_{i:07d} {comp} asvspoof bonafide bonafide notrim eval bonafide - - - -"
            )
            scores.append(rng.normal(2, 1))
        else:
            voc = ("traditional_vocoder", "neural_vocoder_autoregressive")[(i // 2) % 2]
            lines.append(
                f"TEF2 DF_E_{i:07d} {comp} vcc2020 Task1-team20 spoof notrim eval {voc} Task1 team20 FF E"
            )
            scores.append(rng.normal(-1, 1))
        ids.append(f"DF_E_{i:07d}")
    key = _write(tmp_path / "trial_metadata.txt", lines)
    write_scores(tmp_path / "s.txt", ids, scores)
    r, _ = _evaluate_json(
        capsys,
        "--scores",
        str(tmp_path / "s.txt"),
        "--key",
        str(key),
        "--format",
        "asvspoof2021-df",
    )
    assert set(r["breakdown"]["vocoder"]) == {
        "traditional_vocoder",
        "neural_vocoder_autoregressive",
    }
    assert all(g["n_bonafide"] == r["n_bonafide"] for g in r["breakdown"]["vocoder"].values())
    assert set(r["breakdown"]["codec"]) == {"C1", "C2", "C7"}
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "s.txt"),
                "--key",
                str(key),
                "--format",
                "asvspoof2021-df",
                "--asv-scores",
                str(tmp_path / "s.txt"),
            ]
        )
        == 2
    )
    assert "t-DCF is defined for" in capsys.readouterr().err


# ----------------------------------------------------------------------------- evaluate: Codecfake, 2019 LA


def test_codecfake_label_file_and_prefix_hint(tmp_path, capsys):
    (tmp_path / "label").mkdir()
    names = [f"p228_{i:03d}.wav" for i in range(4)] + [f"F01_p228_{i:03d}.wav" for i in range(4)]
    key = _write(
        tmp_path / "label" / "C1.txt",
        [
            f"{n} {'real' if i < 4 else 'fake'} {'0' if i < 4 else 'F01'}"
            for i, n in enumerate(names)
        ],
    )
    scores = [3.0, 2.0, 1.5, 1.0, 0.0, -1.0, 1.2, -2.0]
    write_scores(tmp_path / "ok.txt", [f"C1/{n}" for n in names], scores)
    r, _ = _evaluate_json(
        capsys, "--scores", str(tmp_path / "ok.txt"), "--key", str(key), "--format", "codecfake"
    )
    assert r["selection"] == "subset C1" and (r["n_bonafide"], r["n_spoof"]) == (4, 4)
    # the lowest bona fide (1.0) lies below one spoof (1.2): EER 25 %
    assert r["eer"] == pytest.approx(25.0)
    write_scores(tmp_path / "bare.txt", names, scores)  # what the Codecfake repository writes
    assert (
        main(
            [
                "evaluate",
                "--scores",
                str(tmp_path / "bare.txt"),
                "--key",
                str(key),
                "--format",
                "codecfake",
            ]
        )
        == 2
    )
    assert "'<subset>/<name>'" in capsys.readouterr().err


def test_2019_real_protocol_with_real_asv_scores(shared_2019, tmp_path, capsys):
    ids, labels, attacks = [], [], []
    for line in (shared_2019 / "ASVspoof2019.LA.cm.eval.trl.txt").read_text().splitlines():
        _, utt, _, attack, key = line.split()
        ids.append(utt), labels.append(key == "bonafide"), attacks.append(attack)
    labels = np.array(labels)
    rng = np.random.default_rng(19)
    scores = np.where(labels, rng.normal(2, 1, labels.size), rng.normal(-1, 1, labels.size))
    write_scores(tmp_path / "s.txt", ids, scores)
    r, _ = _evaluate_json(
        capsys,
        "--scores",
        str(tmp_path / "s.txt"),
        "--key",
        str(shared_2019 / "ASVspoof2019.LA.cm.eval.trl.txt"),
        "--format",
        "asvspoof2019-la",
        "--asv-scores",
        str(shared_2019 / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt"),
    )
    assert (r["n_bonafide"], r["n_spoof"], r["selection"]) == (7355, 63882, "split eval")
    assert r["eer"] == pytest.approx(100 * compute_eer(scores[labels], scores[~labels])[0])
    assert r["tdcf"]["form"] == "2019-legacy" and 0 < r["min_tdcf"] < 1
    assert r["tdcf"]["asv"]["threshold"] == -5.680051
    assert sorted(r["breakdown"]["attack"]) == [f"A{k:02d}" for k in range(7, 20)]
    assert all(
        g["n_bonafide"] == 7355 and g["n_spoof"] == 4914 for g in r["breakdown"]["attack"].values()
    )


def test_2019_protocol_file_with_an_unofficial_name(tmp_path, capsys):
    proto = _write(
        tmp_path / "my_eval.txt",
        ["LA_0039 LA_E_1 - A11 spoof", "LA_0079 LA_E_2 - - bonafide", "LA_0039 LA_E_3 - A12 spoof"],
    )
    write_scores(tmp_path / "s.txt", ["LA_E_1", "LA_E_2", "LA_E_3"], [0.5, 1.0, 2.0])
    argv = [
        "evaluate",
        "--scores",
        str(tmp_path / "s.txt"),
        "--key",
        str(proto),
        "--format",
        "asvspoof2019-la",
    ]
    assert main(argv) == 2
    assert "cannot tell the split of" in capsys.readouterr().err
    r, _ = _evaluate_json(capsys, *argv[1:], "--phase", "eval")
    # bona fide 1.0 vs spoof 0.5 and 2.0: order 0.5s 1.0b 2.0s -> FRR [0,0,1,1], FAR [1,.5,.5,0],
    # |gap| [1,.5,.5,1], first minimum at index 1: (0 + 0.5) / 2 -> EER 25 %, threshold 0.5
    assert (r["eer"], r["threshold"], r["selection"]) == (25.0, 0.5, "split eval")
    # per attack vs all bona fide: A11 (0.5 < 1.0) separates, EER 0; A12 (2.0 > 1.0): order 1.0b 2.0s,
    # FRR [0,1,1], FAR [1,1,0] -> EER 100 %; minDCF = min(0.5, 1.45, 0.95) / 0.5 = 1
    keys = ("n_bonafide", "n_spoof", "eer", "min_dcf", "auc")
    assert {a: {k: g[k] for k in keys} for a, g in r["breakdown"]["attack"].items()} == {
        "A11": {"n_bonafide": 1, "n_spoof": 1, "eer": 0.0, "min_dcf": 0.0, "auc": 1.0},
        "A12": {"n_bonafide": 1, "n_spoof": 1, "eer": 100.0, "min_dcf": 1.0, "auc": 0.0},
    }


def test_many_bad_lines_are_counted_and_a_few_listed(tmp_path):
    _write(tmp_path / "s.txt", [f"u{i} x{i}" for i in range(15)])
    with pytest.raises(
        ScoreFileError, match=r"(?s)^15 malformed line\(s\).*s\.txt:10: .*\.\.\. and 5 more"
    ) as exc:
        read_scores(tmp_path / "s.txt")
    assert "s.txt:11:" not in str(exc.value)
