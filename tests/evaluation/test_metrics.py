"""Metrics: hand-computed cases, identities, t-DCF on the real 2019 LA ASV scores, breakdowns.

Pinned values are derived by hand from the definitions in seeds.md section 6 (written out in each
test); the t-DCF is checked against a straightforward threshold-loop implementation written here.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest

from spoofdet.data.schema import rows_to_table
from spoofdet.evaluation.asv_scores import read_asv_scores_2019
from spoofdet.evaluation.metrics import (
    AsvScores,
    act_dcf,
    asv_operating_point,
    cllr,
    compute_det_curve,
    compute_eer,
    min_dcf,
    min_tdcf_2019,
    min_tdcf_2021,
)
from spoofdet.evaluation.report import evaluate_table


def test_metrics_import_numpy_only():
    code = (
        "import sys, spoofdet.evaluation.metrics, spoofdet.evaluation.report, "
        "spoofdet.evaluation.scorefile, spoofdet.evaluation.asv_scores;"
        "print(','.join(m for m in ('torch', 'ray', 'pyarrow', 'scipy', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"spoofdet.evaluation.metrics / scorefile pulled in {out}"
    code = (
        "import sys, spoofdet.evaluation.calibration; "
        "print('torch' in sys.modules or 'ray' in sys.modules)"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_moved_names_stay_reachable_from_their_old_modules_for_this_release():
    from spoofdet.evaluation import asv_scores, metrics, report, scorefile

    for name in ("POLARITY_MARGIN", "polarity_check", "breakdown", "evaluate_table"):
        assert getattr(metrics, name) is getattr(report, name)
    from spoofdet.evaluation.metrics import summarise_models
    from spoofdet.evaluation.scorefile import read_asv_scores_2021

    assert summarise_models is report.summarise_models
    assert read_asv_scores_2021 is asv_scores.read_asv_scores_2021
    assert scorefile.read_asv_scores_2019 is asv_scores.read_asv_scores_2019
    for module in (metrics, scorefile):
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            module.nope


# ----------------------------------------------------------------------------- EER by hand


def test_det_curve_with_ties_by_hand():
    # bona [1,2,3], spoof [0,1,2]; stable sort, bona fide first on ties: 0s 1b 1s 2b 2s 3b
    frr, far, thr = compute_det_curve([1, 2, 3], [0, 1, 2])
    np.testing.assert_allclose(frr, [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(far, [1, 2 / 3, 2 / 3, 1 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(thr, [-0.001, 0, 1, 1, 2, 2, 3])
    # |FRR - FAR| = [1, 2/3, 1/3, 0, 1/3, 2/3, 1]: index 3, FRR = FAR = 1/3, threshold 1
    eer, t = compute_eer([1, 2, 3], [0, 1, 2])
    assert eer == pytest.approx(1 / 3) and t == 1.0


def test_tied_single_trials_count_the_bona_fide_first():
    # order: 1b 1s -> FRR [0, 1, 1], FAR [1, 1, 0]; the minimum gap (0) is at index 1: EER = 1
    assert compute_eer([1.0], [1.0]) == (1.0, 1.0)
    # with the spoof trial first (had the order been the other way) it would be 0: the tie rule matters
    assert compute_eer([1.0 + 1e-9], [1.0])[0] == 0.0


def test_first_minimum_is_taken():
    # bona [1,3], spoof [2,4,5,6]: order 1b 2s 3b 4s 5s 6s
    # FRR [0, .5, .5, 1, 1, 1, 1], FAR [1, 1, .75, .75, .5, .25, 0], |gap| [1, .5, .25, .25, .5, .75, 1]
    # first minimum at index 2: (0.5 + 0.75) / 2 = 0.625, threshold 2 (the second would give 0.875)
    assert compute_eer([1, 3], [2, 4, 5, 6]) == (0.625, 2.0)


def test_eer_identities():
    rng = np.random.default_rng(0)
    b, s = rng.normal(1, 1, 3000), rng.normal(-1, 1, 2000)
    eer, thr = compute_eer(b, s)
    # negation: (FRR, FAR) -> (1 - FAR, 1 - FRR) on tie-free scores, so EER(-s) = 1 - EER(s)
    # up to the choice between the two points around the crossing (one trial)
    eer_neg, _ = compute_eer(-b, -s)
    assert abs(eer_neg - (1 - eer)) <= 1 / 2000
    # invariant under strictly increasing maps
    assert compute_eer(np.exp(b / 4), np.exp(s / 4))[0] == eer
    assert compute_eer(3 * b + 7, 3 * s + 7)[0] == eer
    # perfect separation: 0 at the highest spoof score
    assert compute_eer([5, 6, 7], [1, 2, 3]) == (0.0, 3.0)
    # identical distributions: about 50 %
    x = rng.normal(size=20000)
    assert compute_eer(x[:10000], x[10000:])[0] == pytest.approx(0.5, abs=0.015)
    # for N(1,1) vs N(-1,1) the EER is Phi(-1) = 15.87 %
    assert eer == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)), abs=0.015)


@pytest.mark.parametrize("bad,match", [([], "no scores"), ([1.0, np.nan], "NaN or infinite")])
def test_eer_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        compute_eer(bad, [0.0])


# ----------------------------------------------------------------------------- DCF / Cllr by hand


def test_min_dcf_by_hand():
    # same DET points as above; c = 0.95 FRR + 0.5 FAR = [.5, .3333, .65, .4833, .8, .6333, .95]
    # min 1/3 at index 1 (threshold 0), normalised by min(0.95, 0.5) = 0.5 -> 2/3
    value, thr = min_dcf([1, 2, 3], [0, 1, 2])
    assert value == pytest.approx(2 / 3) and thr == 0.0
    assert min_dcf([5, 6], [1, 2])[0] == 0.0
    rng = np.random.default_rng(3)
    b, s = rng.normal(0.5, 1, 400), rng.normal(-0.5, 1, 300)
    assert min_dcf(b, s)[0] <= 1.0  # the "reject nothing" point costs exactly 1


def test_min_dcf_matches_threshold_loop():
    rng = np.random.default_rng(4)
    b, s = rng.normal(1, 1, 300), rng.normal(-1, 1.3, 500)
    best = 1.0
    for t in np.concatenate([b, s]):  # reject trials with score <= t
        best = min(best, (0.95 * np.mean(b <= t) + 0.5 * np.mean(s > t)) / 0.5)
    assert min_dcf(b, s)[0] == pytest.approx(best, abs=1e-12)


def test_act_dcf_and_cllr_by_hand():
    # threshold -ln(1.9) = -0.6419: bona [-1, .5, 2] -> 1 miss of 3; spoof [-2, -.5, 1] -> 2 of 3 accepted
    # (0.95 / 3 + 0.5 * 2 / 3) / 0.5 = 1.3
    assert act_dcf([-1, 0.5, 2], [-2, -0.5, 1]) == pytest.approx(1.3)
    # the threshold is -ln 1.9 = -0.641854: -0.6418 is accepted, -0.6419 rejected
    assert act_dcf([-0.6418], [-0.6419]) == 0.0
    assert act_dcf([-0.6419], [-0.6418]) == pytest.approx((0.95 + 0.5) / 0.5)
    assert cllr([0.0], [0.0]) == pytest.approx(1.0)
    assert cllr([math.log(3)], [-math.log(3)]) == pytest.approx(math.log2(4 / 3))
    assert cllr([30.0], [-30.0]) < 1e-12


# ----------------------------------------------------------------------------- t-DCF


def _asv_point_by_loop(asv: AsvScores) -> dict[str, float]:
    """ASV EER threshold by scanning thresholds (reject a target when score <= t), independent of
    compute_det_curve; then error rates with 'accept when score >= threshold'."""
    tar, non = np.sort(asv.target), np.sort(asv.nontarget)
    cand = np.unique(np.concatenate([tar, non]))
    frr = np.searchsorted(tar, cand, side="right") / tar.size
    far = 1 - np.searchsorted(non, cand, side="right") / non.size
    t = cand[int(np.argmin(np.abs(frr - far)))]
    return {
        "threshold": t,
        "pmiss_asv": np.mean(asv.target < t),
        "pfa_asv": np.mean(asv.nontarget >= t),
        "pfa_spoof_asv": np.mean(asv.spoof >= t),
    }


def _tdcf_by_loop(b: np.ndarray, s: np.ndarray, op: dict[str, float]) -> tuple[float, float, float]:
    """(legacy min, revised min, C0) with the seeds.md section 6.3 formulas, one threshold at a time."""
    p_tar, p_non, p_spoof, c_miss, c_fa = 0.95 * 0.99, 0.95 * 0.01, 0.05, 1.0, 10.0
    c1 = p_tar * (c_miss - c_miss * op["pmiss_asv"]) - p_non * c_fa * op["pfa_asv"]
    c2 = c_fa * p_spoof * op["pfa_spoof_asv"]
    c0 = p_tar * c_miss * op["pmiss_asv"] + p_non * c_fa * op["pfa_asv"]
    legacy, revised = [], []
    for t in [-np.inf, *np.sort(np.concatenate([b, s]))]:
        pmiss, pfa = np.mean(b <= t), np.mean(s > t)
        legacy.append((c1 * pmiss + c2 * pfa) / min(c1, c2))
        revised.append((c0 + c1 * pmiss + c2 * pfa) / (c0 + min(c1, c2)))
    return min(legacy), min(revised), c0


@pytest.fixture(scope="module")
def asv_2019(shared_2019) -> AsvScores:
    return read_asv_scores_2019(shared_2019 / "ASVspoof2019.LA.asv.eval.gi.trl.scores.txt")


def test_real_2019_asv_operating_point(asv_2019):
    # counts of seeds.md section 1.1
    assert (asv_2019.target.size, asv_2019.nontarget.size, asv_2019.spoof.size) == (
        5370,
        33327,
        13 * 4914,
    )
    op = asv_operating_point(asv_2019)
    ref = _asv_point_by_loop(asv_2019)
    assert op.threshold == ref["threshold"]
    assert (op.pmiss_asv, op.pfa_asv, op.pfa_spoof_asv) == pytest.approx(
        (ref["pmiss_asv"], ref["pfa_asv"], ref["pfa_spoof_asv"]), abs=1e-15
    )
    # plausible: an ASV EER near the published 2.4-2.5 %, spoofs mostly fooling it
    assert 0.015 < op.pmiss_asv < 0.035 and abs(op.pmiss_asv - op.pfa_asv) < 0.002
    assert 0.5 < op.pfa_spoof_asv < 0.95 and op.pmiss_spoof_asv + op.pfa_spoof_asv == pytest.approx(
        1
    )
    # regression pins (counts at threshold -5.680051): 132 / 5370 targets missed, 820 / 33327
    # non-targets and 48592 / 63882 spoofs accepted
    assert op.threshold == -5.680051
    assert (op.pmiss_asv, op.pfa_asv, op.pfa_spoof_asv) == pytest.approx(
        (132 / 5370, 820 / 33327, 48592 / 63882)
    )


def test_real_2019_tdcf_matches_threshold_loop(asv_2019):
    rng = np.random.default_rng(2019)
    b = rng.normal(2.0, 1.0, 600)
    s = np.concatenate([rng.normal(-1.0 + 0.2 * k, 1.0, 80) for k in range(13)])
    legacy, revised = min_tdcf_2019(b, s, asv_2019), min_tdcf_2021(b, s, asv_2019)
    ref_legacy, ref_revised, ref_c0 = _tdcf_by_loop(b, s, _asv_point_by_loop(asv_2019))
    assert legacy.min_tdcf == pytest.approx(ref_legacy, abs=1e-12)
    assert revised.min_tdcf == pytest.approx(ref_revised, abs=1e-12)
    assert revised.c0 == pytest.approx(ref_c0) and legacy.c0 == 0.0
    # same C1, C2 in both forms; revised = (C0 + m * legacy) / (C0 + m), reached at the same CM threshold
    assert (legacy.c1, legacy.c2) == pytest.approx((revised.c1, revised.c2))
    m = min(revised.c1, revised.c2)
    assert revised.min_tdcf == pytest.approx((revised.c0 + m * legacy.min_tdcf) / (revised.c0 + m))
    assert revised.threshold == legacy.threshold
    assert 0 < legacy.min_tdcf < 1 and revised.min_tdcf > legacy.min_tdcf  # C0 > 0 lifts the floor


def test_tdcf_small_case_by_hand():
    asv = AsvScores(np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]), np.array([4.5, 2.0, 1.0]))
    # The ASV EER point rejects the three non-targets: threshold = 2.0 (the highest non-target).
    # Accepting at score >= threshold (the official rule) counts that non-target as a false alarm:
    # Pmiss_asv = 0, Pfa_asv = 1/3, Pfa_spoof_asv = 2/3 (4.5 and 2.0 pass, 1.0 does not).
    op = asv_operating_point(asv)
    assert (op.threshold, op.pmiss_asv, op.pfa_asv, op.pfa_spoof_asv) == (2.0, 0.0, 1 / 3, 2 / 3)
    # C1 = 0.9405 - 0.0095 * 10 / 3, C2 = 10 * 0.05 * 2/3 = 1/3; a perfect CM reaches Pmiss = Pfa = 0:
    # legacy 0, revised C0 / (C0 + min(C1, C2)) with C0 = 0.0095 * 10 / 3
    assert min_tdcf_2019([5, 6], [1, 2], asv).min_tdcf == 0.0
    c0 = 0.095 / 3
    r = min_tdcf_2021([5, 6], [1, 2], asv)
    assert (r.c0, r.c1, r.c2) == pytest.approx((c0, 0.9405 - c0, 1 / 3))
    assert r.min_tdcf == pytest.approx(c0 / (c0 + 1 / 3))
    # a CM that accepts everything: legacy C2 / min(C1, C2) = 1, revised (C0 + C2) / (C0 + C2) = 1
    assert min_tdcf_2019([1, 2], [5, 6], asv).min_tdcf == pytest.approx(1.0)
    # no spoof passes the ASV: C2 = 0, the legacy normalisation is undefined -> a clear error
    with pytest.raises(ValueError, match="C2=0"):
        min_tdcf_2019([5, 6], [1, 2], AsvScores(asv.target, asv.nontarget, np.array([-9.0])))


# ----------------------------------------------------------------------------- tables


def _key(rows):
    return rows_to_table([{"utt_id": f"u{i}", "corpus": "c", **r} for i, r in enumerate(rows)])


def test_breakdown_semantics():
    rng = np.random.default_rng(5)
    rows, scores = [], []
    for codec, shift in (("none", 0.0), ("gsm", -1.0)):
        for i in range(200):
            rows.append(
                {
                    "subset": "eval",
                    "label": 1,
                    "attack": "bonafide",
                    "codec": codec,
                    "extra": {"condition": "C1" if codec == "none" else "C6"},
                }
            )
            scores.append(rng.normal(2 + shift, 1))
        for attack, a_shift in (("A07", 0.0), ("A08", 1.5)):
            for i in range(150):
                rows.append(
                    {
                        "subset": "eval",
                        "label": 0,
                        "attack": attack,
                        "codec": codec,
                        "vocoder": "neural" if attack == "A07" else "traditional",
                        "extra": {"condition": "C1" if codec == "none" else "C6"},
                    }
                )
                scores.append(rng.normal(-1 + shift + a_shift, 1))
    key = _key(rows)
    scores = np.array(scores)
    r = evaluate_table(scores, key)
    label = np.array(key["label"].to_pylist())
    attack = np.array(key["attack"].to_pylist())
    codec = np.array(key["codec"].to_pylist())
    bona = scores[label == 1]
    assert set(r["breakdown"]) == {
        "attack",
        "vocoder",
        "codec",
    }  # one subset, one corpus: no breakdown
    # per attack: that attack's spoofs vs ALL bona fide (400)
    for a in ("A07", "A08"):
        g = r["breakdown"]["attack"][a]
        assert g["n_bonafide"] == 400 and g["n_spoof"] == 300
        assert g["eer"] == pytest.approx(100 * compute_eer(bona, scores[attack == a])[0])
    assert r["breakdown"]["vocoder"]["neural"]["eer"] == r["breakdown"]["attack"]["A07"]["eer"]
    # per codec condition (named by extra['condition']): bona fide and spoof of that condition only
    for c, name in (("none", "C1"), ("gsm", "C6")):
        g = r["breakdown"]["codec"][name]
        assert g["n_bonafide"] == 200 and g["n_spoof"] == 300
        assert g["eer"] == pytest.approx(
            100
            * compute_eer(scores[(label == 1) & (codec == c)], scores[(label == 0) & (codec == c)])[
                0
            ]
        )
    assert r["n_bonafide"] == 400 and r["n_spoof"] == 600 and r["polarity_warning"] is False
    assert r["eer"] == pytest.approx(100 * compute_eer(bona, scores[label == 0])[0])


def test_breakdown_by_subset_and_corpus_from_a_mapping():
    key = {
        "label": [1, 0, 1, 0, 1, 0, None],
        "subset": ["C1", "C1", "C2", "C2", "A1", "A1", "A1"],
        "corpus": ["codecfake"] * 6 + ["x"],
    }
    scores = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 9.0]
    r = evaluate_table(scores, key)
    assert r["n_unlabelled"] == 1 and r["n_bonafide"] == 3
    sub = r["breakdown"]["subset"]
    assert (sub["C1"]["eer"], sub["C2"]["eer"], sub["A1"]["eer"]) == (0.0, 100.0, 100.0)
    assert "corpus" not in r["breakdown"]  # the unlabelled row's corpus is not counted


def test_polarity_warning_fires_on_negated_scores_only():
    rng = np.random.default_rng(6)
    key = {"label": [1] * 300 + [0] * 300}
    s = np.concatenate([rng.normal(1, 1, 300), rng.normal(-1, 1, 300)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = evaluate_table(s, key)
    assert ok["polarity_warning"] is False
    with pytest.warns(UserWarning, match="look inverted"):
        bad = evaluate_table(-s, key)
    assert (
        bad["polarity_warning"] is True
        and bad["eer"] > 80
        and bad["eer_negated"] == pytest.approx(ok["eer"], abs=0.5)
    )


def test_evaluate_table_errors():
    with pytest.raises(ValueError, match="3 scores for 2 key rows"):
        evaluate_table([1, 2, 3], {"label": [1, 0]})
    with pytest.raises(ValueError, match="0 spoof"):
        evaluate_table([1, 2], {"label": [1, 1]})
