"""The numbers papers and leaderboards report: AUC, metrics at a threshold, per-group actDCF/Cllr,
per-codec t-DCF (2021 LA), attack x codec tables, vote fusion and their CLI flags."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from spoofdet.cli import main
from spoofdet.evaluation.asv_scores import read_asv_scores_2021
from spoofdet.evaluation.keys import load_key
from spoofdet.evaluation.metrics import (
    ASVSPOOF5_COSTS,
    AsvScores,
    act_dcf,
    auc,
    cllr,
    compute_eer,
    min_dcf,
    min_tdcf_2021,
    threshold_metrics,
)
from spoofdet.evaluation.report import (
    breakdown_2d,
    evaluate_table,
    summarise_models,
    vote_fusion,
)
from spoofdet.evaluation.scorefile import ScoreFileError, write_scores

# ----------------------------------------------------------------------------- AUC


def test_auc_by_hand_with_ties():
    # bona fide 1, 2, 3 vs spoof 0, 2, 5: pairs won 1 + (1 + 0.5) + 2 = 4.5 of 9
    assert auc([1, 2, 3], [0, 2, 5]) == 0.5
    # bona fide 2, 2 vs spoof 1, 2: each wins 1 + 0.5 -> 3 of 4
    assert auc([2, 2], [1, 2]) == 0.75
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1, 2], [3, 4]) == 0.0


def test_auc_is_mann_whitney_u():
    rng = np.random.default_rng(0)
    b, s = rng.integers(0, 6, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    u = sum((x > y) + 0.5 * (x == y) for x in b for y in s)
    assert auc(b, s) == pytest.approx(u / (40 * 30), abs=1e-15)


@pytest.mark.parametrize("bad,match", [([], "no scores"), ([np.inf], "NaN or infinite")])
def test_auc_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        auc(bad, [1.0])


# ----------------------------------------------------------------------------- at a threshold


def test_threshold_metrics_by_hand():
    # bona fide 1, 2, 3; spoof 0, 2, 5; t = 2 (a score equal to t is decided bona fide)
    # decided bona fide: 2, 3 of the bona fide; 2, 5 of the spoof
    bona_pos = threshold_metrics([1, 2, 3], [0, 2, 5], 2.0)
    assert bona_pos == {
        "threshold": 2.0,
        "positive": "bonafide",
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 2 / 3,
        "f1": 4 / 7,
        "tp": 2,
        "fp": 2,
        "tn": 1,
        "fn": 1,
    }
    spoof_pos = threshold_metrics([1, 2, 3], [0, 2, 5], 2.0, positive="spoof")
    assert (spoof_pos["tp"], spoof_pos["fp"], spoof_pos["tn"], spoof_pos["fn"]) == (1, 1, 2, 2)
    assert spoof_pos["f1"] == 2 / 5 and spoof_pos["accuracy"] == 0.5
    # nothing decided positive: precision undefined (None), not 0
    none_pos = threshold_metrics([1, 2], [0], 10.0)
    assert none_pos["precision"] is None and none_pos["recall"] == 0 and none_pos["f1"] == 0


@pytest.mark.parametrize(
    "args,match",
    [((1.0, "fake"), "positive must be one of"), ((math.nan, "spoof"), "finite number")],
)
def test_threshold_metrics_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        threshold_metrics([1.0], [0.0], *args)


def _key(rows):
    cols = rows[0].keys()
    return {c: [r.get(c) for r in rows] for c in cols}


def test_at_threshold_sources_in_evaluate_table():
    scores = np.array([1.0, 2.0, 3.0, 0.0, 2.0, 5.0, -0.7, -0.6])
    key = {"label": [1, 1, 1, 0, 0, 0, 1, 0]}
    r = evaluate_table(scores, key)
    a = r["at_threshold"]
    t = -math.log(0.95 / 0.5)
    assert (
        a["threshold"] == t == ASVSPOOF5_COSTS.llr_threshold
        and a["threshold_source"] == "bayes_llr"
    )
    # -0.7 < t is the one bona fide missed; -0.6 >= t is one more spoof accepted
    assert (a["tp"], a["fn"], a["fp"], a["tn"]) == (3, 1, 4, 0) and a["assumes_llr"]
    assert not a["optimistic"] and r["auc"] == auc(scores[[0, 1, 2, 6]], scores[[3, 4, 5, 7]])
    e = evaluate_table(scores, key, threshold="eer", positive="spoof")["at_threshold"]
    assert e["threshold"] == r["threshold"] and e["threshold_source"] == "eer" and e["optimistic"]
    assert e["positive"] == "spoof"
    g = evaluate_table(scores, key, threshold=2.5)["at_threshold"]
    assert (g["threshold"], g["threshold_source"], g["tp"], g["fp"]) == (2.5, "given", 1, 1)
    with pytest.raises(ValueError, match="a number or 'eer'"):
        evaluate_table(scores, key, threshold="median")


# ----------------------------------------------------------------------------- per group


def test_groups_carry_act_dcf_cllr_and_auc():
    rng = np.random.default_rng(1)
    rows, scores = [], []
    for i in range(120):
        bona = i % 3 == 0
        rows.append(
            {
                "label": 1 if bona else 0,
                "attack": None if bona else ("A07", "A08")[i % 2],
                "codec": ("alaw", "gsm")[(i // 2) % 2],
            }
        )
        scores.append(rng.normal(1.5 if bona else -1.0, 1.2))
    s, key = np.asarray(scores), _key(rows)
    y = np.asarray(key["label"])
    att, cod = np.asarray(key["attack"], dtype=object), np.asarray(key["codec"], dtype=object)
    r = evaluate_table(s, key)
    a07 = r["breakdown"]["attack"]["A07"]
    b_all, sp = s[y == 1], s[att == "A07"]
    assert (a07["act_dcf"], a07["cllr"], a07["auc"]) == (
        act_dcf(b_all, sp),
        cllr(b_all, sp),
        auc(b_all, sp),
    )
    gsm = r["breakdown"]["codec"]["gsm"]
    b, sp = s[(y == 1) & (cod == "gsm")], s[(y == 0) & (cod == "gsm")]
    assert (gsm["act_dcf"], gsm["cllr"], gsm["auc"]) == (act_dcf(b, sp), cllr(b, sp), auc(b, sp))
    # a group lacking a class keeps its counts, metrics None
    only_spoof = evaluate_table(
        [0.0, 1.0, 2.0, 3.0], {"label": [1, 0, 0, 1], "subset": ["a", "a", "b", "a"]}
    )["breakdown"]["subset"]["b"]
    assert only_spoof == {
        "n_bonafide": 0,
        "n_spoof": 1,
        "eer": None,
        "min_dcf": None,
        "act_dcf": None,
        "cllr": None,
        "auc": None,
    }


# ----------------------------------------------------------------------------- attack x codec


def test_breakdown_2d_by_hand():
    # codec C1: bona fide 1.0, 3.0; A07 spoof 0.0 (separated: EER 0); A08 spoof 2.0
    # codec C2: bona fide 1.0; A07 spoof 2.0 (above the only bona fide: EER 100 %); no A08
    scores = np.array([1.0, 3.0, 0.0, 2.0, 1.0, 2.0])
    labels = np.array([1, 1, 0, 0, 1, 0])
    rows = np.array([None, None, "A07", "A08", None, "A07"], dtype=object)
    cols = np.array(["C1", "C1", "C1", "C1", "C2", "C2"], dtype=object)
    t = breakdown_2d(scores, labels, rows, cols)
    assert t["A07"]["C1"] == {"n_bonafide": 2, "n_spoof": 1, "eer": 0.0, "min_dcf": 0.0}
    assert t["A07"]["C2"]["eer"] == 100.0
    # A08 in C1: bona 1.0, 3.0 vs spoof 2.0 -> FRR [0, .5, .5, 1], FAR [1, 1, 0, 0]; first
    # minimum of |FRR - FAR| at index 1: (0.5 + 1) / 2 -> EER 75 %
    assert t["A08"]["C1"]["eer"] == 75.0
    assert t["A08"]["C2"] == {"n_bonafide": 1, "n_spoof": 0, "eer": None, "min_dcf": None}


def test_evaluate_table_tables_on_and_off():
    key = {
        "label": [1, 1, 0, 0, 1, 0, 0],
        "attack": [None, None, "A07", "A08", None, "A07", "A08"],
        "vocoder": [None, None, "trad", "neural", None, "trad", "neural"],
        "codec": ["x", "y", "x", "y", "y", "y", "x"],
        "extra": [{"condition": c} for c in ("C1", "C2", "C1", "C2", "C2", "C2", "C1")],
    }
    s = [1.0, 3.0, 0.0, 2.0, 1.0, 2.0, 0.5]
    r = evaluate_table(s, key)
    assert set(r["breakdown_2d"]) == {"attack x codec", "vocoder x codec"}
    assert set(r["breakdown_2d"]["attack x codec"]["A07"]) == {"C1", "C2"}
    assert "breakdown_2d" not in evaluate_table(s, key, tables=False)
    one_codec = dict(key, extra=[{"condition": "C1"}] * 7, codec=["x"] * 7)
    assert evaluate_table(s, one_codec)["breakdown_2d"] == {}


# ----------------------------------------------------------------------------- 2021 LA t-DCF per codec


def _asv(rng, codecs=("C1", "C2")):
    n = 60
    cond = np.array([codecs[i % len(codecs)] for i in range(n)], dtype=object)
    shift = np.where(cond == codecs[0], 0.0, -1.0)
    return AsvScores(
        rng.normal(3, 1, n) + shift,
        rng.normal(-3, 1, n) + shift,
        rng.normal(1, 1, n) + shift,
        np.array([("A07", "A08")[(i // 2) % 2] for i in range(n)], dtype=object),
        cond.copy(),
        cond.copy(),
        cond.copy(),
    )


def test_asv_for_condition_filters_all_three_classes():
    asv = _asv(np.random.default_rng(2))
    c2 = asv.for_condition("C2")
    assert c2.target.size == c2.nontarget.size == c2.spoof.size == 30
    assert np.array_equal(c2.spoof, asv.spoof[asv.spoof_condition == "C2"])
    cell = c2.for_attack("A08")
    assert np.array_equal(
        cell.spoof, asv.spoof[(asv.spoof_condition == "C2") & (asv.spoof_attack == "A08")]
    )
    assert cell.target.size == 30 and not asv.for_condition("C7").complete
    with pytest.raises(ValueError, match="no codec condition labels"):
        AsvScores(asv.target, asv.nontarget, asv.spoof).for_condition("C1")


def test_min_tdcf_per_codec_and_per_cell_uses_the_codecs_asv_trials():
    rng = np.random.default_rng(3)
    asv = _asv(rng)
    n = 80
    labels = np.array([1 if i % 4 == 0 else 0 for i in range(n)])
    cond = np.array([("C1", "C2")[(i // 4) % 2] for i in range(n)], dtype=object)
    attack = np.array(
        [None if labels[i] else ("A07", "A08")[i % 2] for i in range(n)], dtype=object
    )
    s = np.where(labels == 1, rng.normal(2, 1, n), rng.normal(-1, 1, n))
    key = {
        "label": list(labels),
        "attack": list(attack),
        "extra": [{"condition": c} for c in cond],
    }
    r = evaluate_table(s, key, asv=asv, tdcf_form="2021")
    for c in ("C1", "C2"):
        b, sp = s[(labels == 1) & (cond == c)], s[(labels == 0) & (cond == c)]
        want = min_tdcf_2021(b, sp, asv.for_condition(c)).min_tdcf
        assert r["breakdown"]["codec"][c]["min_tdcf"] == want
        # pooled ASV scores would give another value: the filter matters
        assert want != min_tdcf_2021(b, sp, asv).min_tdcf
    b, sp = s[(labels == 1) & (cond == "C2")], s[(attack == "A08") & (cond == "C2")]
    cell = r["breakdown_2d"]["attack x codec"]["A08"]["C2"]
    assert (
        cell["min_tdcf"] == min_tdcf_2021(b, sp, asv.for_condition("C2").for_attack("A08")).min_tdcf
    )
    assert cell["eer"] == 100.0 * compute_eer(b, sp)[0] and cell["min_dcf"] == min_dcf(b, sp)[0]


def test_read_asv_scores_2021_keeps_the_codec_condition(tmp_path):
    key = [
        "LA_0001 LA_E_1 alaw ita_tx bonafide target notrim eval",
        "LA_0001 LA_E_2 none - bonafide nontarget notrim eval",
        "LA_0001 LA_E_3 gsm loc_tx A07 spoof notrim eval",
        "LA_0001 LA_E_4 opus loc_tx A07 spoof notrim progress",
    ]
    (tmp_path / "k.txt").write_text("\n".join(key) + "\n")
    (tmp_path / "s.txt").write_text("".join(f"LA_0001 LA_E_{i} {i}.5\n" for i in range(1, 5)))
    asv = read_asv_scores_2021(tmp_path / "s.txt", tmp_path / "k.txt")
    assert list(asv.target_condition) == ["C2"] and list(asv.nontarget_condition) == ["C1"]
    assert list(asv.spoof_condition) == ["C6"] and asv.has_conditions
    (tmp_path / "k.txt").write_text("\n".join([*key[:3], key[3].replace("opus", "mp3")]) + "\n")
    with pytest.raises(ScoreFileError, match=r"k\.txt:4: unknown codec 'mp3' in column 3"):
        read_asv_scores_2021(tmp_path / "s.txt", tmp_path / "k.txt")


# ----------------------------------------------------------------------------- fusion and summary


def test_vote_fusion_by_hand():
    m1 = np.array([1.0, 1.0, -1.0, 0.5, -2.0])
    m2 = np.array([1.0, -1.0, -1.0, -0.1, 0.1])
    # t = 0: votes 2, 1, 0, 1, 1 of 2; ties (1 of 2) broken by the mean score vs 0:
    # trial 1 mean 0.0 >= 0 -> 1/2; trial 3 mean 0.2 -> 1/2; trial 4 mean -0.95 -> 1/2 - 1/4
    assert list(vote_fusion([m1, m2], [0.0, 0.0])) == [1.0, 0.5, 0.0, 0.5, 0.25]
    # per-model thresholds 0.6, -0.2: the tie compares the mean score with the mean threshold 0.2:
    # trial 1 mean 0.0 -> lost; trial 3 mean 0.2 (equal) -> kept; trial 4 -> lost
    assert list(vote_fusion([m1, m2], [0.6, -0.2])) == [1.0, 0.25, 0.0, 0.5, 0.25]
    three = vote_fusion([m1, m2, m2], [0.0] * 3)
    assert list(three) == [1.0, 1 / 3, 0.0, 1 / 3, 2 / 3]
    with pytest.raises(ValueError, match="at least two models"):
        vote_fusion([m1], [0.0])
    with pytest.raises(ValueError, match="1 thresholds for 2 models"):
        vote_fusion([m1, m2], [0.0])


def test_summarise_models_best_direction():
    results = [
        {"eer": 2.0, "auc": 0.9, "at_threshold": {"f1": 0.7, "accuracy": 0.8}},
        {"eer": 1.0, "auc": 0.8, "at_threshold": {"f1": 0.9, "accuracy": 0.6}},
    ]
    s = summarise_models(results)
    assert s["eer"] == {"best": 1.0, "mean": 1.5, "std": 0.5, "n": 2}
    assert s["auc"]["best"] == 0.9 and s["f1"]["best"] == 0.9 and s["accuracy"]["best"] == 0.8
    assert "min_tdcf" not in s and "precision" not in s


# ----------------------------------------------------------------------------- CLI


def _itw(tmp_path, n=60):
    rows, ids, scores = ["file,speaker,label"], [], []
    rng = np.random.default_rng(9)
    for i in range(n):
        bona = i % 2 == 0
        rows.append(f"{i}.wav,Speaker {i % 6},{'bona-fide' if bona else 'spoof'}")
        ids.append(f"{i}.wav")
        scores.append(rng.normal(1.5 if bona else -1.0, 1.0))
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "meta.csv", ids, np.asarray(scores)


def _run(capsys, *argv):
    code = main(["evaluate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_threshold_positive_bootstrap_json(tmp_path, capsys):
    meta, ids, scores = _itw(tmp_path)
    write_scores(tmp_path / "s.txt", ids, scores)
    base = ["--scores", str(tmp_path / "s.txt"), "--key", str(meta), "--format", "in-the-wild"]
    code, out, err = _run(
        capsys, *base, "--threshold", "eer", "--positive", "spoof", "--bootstrap", "40", "--json"
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["at_threshold"]["threshold"] == r["threshold"] and r["at_threshold"]["optimistic"]
    assert r["at_threshold"]["positive"] == "spoof"
    assert r["bootstrap"]["unit"] == "speaker" and r["bootstrap"]["seed"] == 0
    assert r["ci"]["n_units_bonafide"] == 3  # speakers 0, 2, 4 are the bona fide ones
    code, out2, _ = _run(capsys, *base, "--threshold", "eer", "--bootstrap", "40", "--json")
    assert json.loads(out2)["ci"] == r["ci"]  # the default seed pins the interval
    code, text, _ = _run(capsys, *base, "--bootstrap", "40")
    assert code == 0 and f"EER {r['eer']:.2f} % [{r['ci']['eer'][0]:.2f}, " in text
    assert "AUC " in text and "Bayes LLR threshold" in text


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--seed", "3"], "--seed needs --bootstrap N"),
        (["--bootstrap", "10", "--ci", "1.5"], r"ci must be in \(0, 1\)"),
        (["--bootstrap", "-2"], "--bootstrap must be a number of replicates"),
        (["--threshold", "median"], "expected a number .* or 'eer'"),
        (["--positive", "fake"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_flags(tmp_path, capsys, extra, match):
    meta, ids, scores = _itw(tmp_path)
    write_scores(tmp_path / "s.txt", ids, scores)
    argv = ["--scores", str(tmp_path / "s.txt"), "--key", str(meta), "--format", "in-the-wild"]
    try:
        code = main(["evaluate", *argv, *extra])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err


def test_cli_vote_fusion_and_model_table(tmp_path, capsys):
    meta, ids, scores = _itw(tmp_path)
    rng = np.random.default_rng(4)
    paths = []
    for m in range(3):
        p = tmp_path / f"m{m}.txt"
        write_scores(p, ids, scores + rng.normal(0, 1.0, scores.size))
        paths.append(str(p))
    argv = ["--scores", *paths, "--key", str(meta), "--format", "in-the-wild"]
    code, out, err = _run(capsys, *argv, "--fuse", "vote", "--threshold", "0", "--json")
    assert code == 0, err
    r = json.loads(out)
    key = load_key("in-the-wild", meta)
    fused = vote_fusion(
        [np.loadtxt(p, usecols=1, dtype=float) for p in paths], [0.0, 0.0, 0.0]
    )  # the files list the key's ids in key order
    assert r["fusion"]["method"] == "vote" and r["fusion"]["vote_thresholds"] == [0.0] * 3
    assert r["fusion"]["eer"] == evaluate_table(fused, key.selected)["eer"]
    assert r["fusion"]["at_threshold"]["threshold"] == 0.5
    assert r["fusion"]["at_threshold"]["threshold_source"] == "vote"
    f1s = [m["at_threshold"]["f1"] for m in r["models"]]
    assert r["over_models"]["f1"]["best"] == max(f1s)
    assert r["over_models"]["auc"]["best"] == max(m["auc"] for m in r["models"])
    code, text, _ = _run(capsys, *argv, "--fuse", "vote", "--threshold", "0")
    assert code == 0 and "mean ± std" in text and "fusion (vote)" in text
    assert all(f"M{i} m{i - 1}.txt" in text for i in (1, 2, 3))


def test_cli_help_documents_the_new_keys(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for word in ("at_threshold", "breakdown_2d", "--bootstrap", "vote", "auc", "positive"):
        assert word in text
