"""Bootstrap intervals: the weighted fast path equals resample-and-recompute exactly, the seed
pins the interval, and speaker (cluster) resampling behaves as a cluster bootstrap should."""

from __future__ import annotations

import numpy as np
import pytest

from spoofdet.evaluation.bootstrap import (
    METRICS,
    BootstrapSpec,
    bootstrap_intervals,
    replicate_metrics,
    sort_trials,
)
from spoofdet.evaluation.metrics import ASVSPOOF5_COSTS, act_dcf, auc, cllr, compute_eer, min_dcf
from spoofdet.evaluation.report import evaluate_table


def _plain(b: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return {
        "eer": compute_eer(b, s)[0],
        "min_dcf": min_dcf(b, s)[0],
        "act_dcf": act_dcf(b, s),
        "cllr": cllr(b, s),
        "auc": auc(b, s),
    }


@pytest.mark.parametrize("seed", range(6))
def test_weighted_replicates_equal_resample_and_recompute_exactly(seed):
    """Heavily tied scores (a grid of halves, the Bayes threshold -ln 1.9 included), counts 0..4:
    EER, minDCF, actDCF and AUC agree bit for bit with sorting the resampled array."""
    rng = np.random.default_rng(seed)
    t = ASVSPOOF5_COSTS.llr_threshold
    for _ in range(40):
        nb, ns = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        grid = np.array([-1.5, -1.0, t, -0.5, 0.0, 0.5, 1.0])
        b, s = rng.choice(grid, nb), rng.choice(grid, ns)
        trials = sort_trials(b, s)
        cb, cs = rng.integers(0, 5, (16, nb)), rng.integers(0, 5, (16, ns))
        cb[cb.sum(axis=1) == 0, 0] = 1
        cs[cs.sum(axis=1) == 0, -1] = 2
        got = replicate_metrics(trials, cb, cs)
        for r in range(16):
            want = _plain(np.repeat(b, cb[r]), np.repeat(s, cs[r]))
            for m in ("eer", "min_dcf", "act_dcf", "auc"):
                assert got[m][r] == want[m], (m, b, s, cb[r], cs[r])
            assert got["cllr"][r] == pytest.approx(want["cllr"], rel=1e-12)


def test_all_ones_counts_give_the_point_estimates():
    rng = np.random.default_rng(7)
    b, s = rng.normal(1, 1, 300).round(1), rng.normal(-1, 1, 500).round(1)
    got = replicate_metrics(sort_trials(b, s), np.ones((1, 300), int), np.ones((1, 500), int))
    want = _plain(b, s)
    assert {m: got[m][0] for m in ("eer", "min_dcf", "act_dcf", "auc")} == {
        m: want[m] for m in ("eer", "min_dcf", "act_dcf", "auc")
    }


def test_replicate_metrics_rejects_bad_counts():
    trials = sort_trials([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="2 bona fide and 1 spoof trials"):
        replicate_metrics(trials, np.ones((1, 3), int), np.ones((1, 1), int))
    with pytest.raises(ValueError, match="non-negative"):
        replicate_metrics(trials, np.array([[2, -1]]), np.ones((1, 1), int))
    with pytest.raises(ValueError, match="at least one bona fide and one spoof"):
        replicate_metrics(trials, np.zeros((1, 2), int), np.ones((1, 1), int))


def _realistic(seed: int = 3, n_spk: int = 40, per: int = 25, spread: float = 0.0):
    """Bona fide N(2, 1), spoof N(-1, 1.5); each speaker shifts all its trials by N(0, spread)."""
    rng = np.random.default_rng(seed)
    spk = np.repeat([f"spk{i:03d}" for i in range(n_spk)], per)
    shift_b = np.repeat(rng.normal(0, spread, n_spk), per)
    shift_s = np.repeat(rng.normal(0, spread, n_spk), per)
    b = rng.normal(2, 1, spk.size) + shift_b
    s = rng.normal(-1, 1.5, spk.size) + shift_s
    return b, s, spk


def test_same_seed_same_interval_other_seed_another():
    b, s, _ = _realistic()
    a1 = bootstrap_intervals(b, s, BootstrapSpec(200, seed=11))
    a2 = bootstrap_intervals(b, s, BootstrapSpec(200, seed=11))
    a3 = bootstrap_intervals(b, s, BootstrapSpec(200, seed=12))
    assert a1 == a2
    assert all(a1[m] != a3[m] for m in METRICS)
    assert a1["unit"] == "trial" and a1["n_units_bonafide"] == b.size


def test_interval_contains_the_point_estimate_and_is_ordered():
    b, s, _ = _realistic()
    ci = bootstrap_intervals(b, s, BootstrapSpec(300, seed=0, ci=0.95))
    point = _plain(b, s)
    point["eer"] *= 100.0
    for m in METRICS:
        lo, hi = ci[m]
        assert lo < point[m] < hi, (m, lo, point[m], hi)
    narrow = bootstrap_intervals(b, s, BootstrapSpec(300, seed=0, ci=0.5))
    for m in METRICS:
        assert ci[m][0] <= narrow[m][0] <= narrow[m][1] <= ci[m][1]


def test_speaker_bootstrap_is_wider_when_speakers_are_correlated():
    b, s, spk = _realistic(spread=1.5)
    spec = BootstrapSpec(300, seed=0)
    by_trial = bootstrap_intervals(b, s, spec)
    by_spk = bootstrap_intervals(b, s, spec, bona_speakers=spk, spoof_speakers=spk)
    assert by_spk["unit"] == "speaker" and by_spk["n_units_bonafide"] == 40
    width = {u: r["eer"][1] - r["eer"][0] for u, r in (("t", by_trial), ("s", by_spk))}
    assert width["s"] > 1.5 * width["t"], width


def test_one_trial_per_speaker_is_the_trial_bootstrap():
    """Speakers named in trial order, one trial each: the same draws, so the same interval."""
    rng = np.random.default_rng(5)
    b, s = rng.normal(1, 1, 60), rng.normal(-1, 1, 80)
    spec = BootstrapSpec(100, seed=4)
    plain = bootstrap_intervals(b, s, spec)
    spk = bootstrap_intervals(
        b,
        s,
        spec,
        bona_speakers=[f"b{i:03d}" for i in range(60)],
        spoof_speakers=[f"s{i:03d}" for i in range(80)],
    )
    assert {m: spk[m] for m in METRICS} == {m: plain[m] for m in METRICS}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"n": 0}, "positive integer"),
        ({"n": 10, "ci": 1.0}, r"ci must be in \(0, 1\)"),
        ({"n": 10, "seed": -1}, "non-negative"),
    ],
)
def test_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BootstrapSpec(**kwargs)


def test_speaker_lists_must_match():
    with pytest.raises(ValueError, match="both classes or of neither"):
        bootstrap_intervals([1.0], [0.0], BootstrapSpec(5), bona_speakers=["a"])
    with pytest.raises(ValueError, match="bona fide speakers: 1 speakers for 2 trials"):
        bootstrap_intervals(
            [1.0, 2.0], [0.0], BootstrapSpec(5), bona_speakers=["a"], spoof_speakers=["b"]
        )


def test_evaluate_table_bootstrap_pooled_and_per_group_by_speaker():
    b, s, spk = _realistic(n_spk=10, per=20)
    key = {
        "label": [1] * b.size + [0] * s.size,
        "speaker": list(spk) + list(spk),
        "attack": [None] * b.size + ["A01" if i % 2 else "A02" for i in range(s.size)],
    }
    scores = np.concatenate([b, s])
    r = evaluate_table(scores, key, bootstrap=BootstrapSpec(50, seed=1))
    assert r["bootstrap"] == {
        "n": 50,
        "seed": 1,
        "ci": 0.95,
        "unit": "speaker",
        "method": "percentile; bona fide and spoof resampled separately",
    }
    assert r["ci"]["unit"] == "speaker" and r["ci"]["n_units_spoof"] == 10
    assert r["ci"] == bootstrap_intervals(
        b, s, BootstrapSpec(50, seed=1), bona_speakers=spk, spoof_speakers=spk
    )
    for g in r["breakdown"]["attack"].values():
        assert g["ci"]["unit"] == "speaker" and g["ci"]["eer"][0] <= g["eer"] <= g["ci"]["eer"][1]
    # one row without a speaker: resampled by trial (said so), nothing dropped
    key["speaker"][0] = None
    r2 = evaluate_table(scores, key, bootstrap=BootstrapSpec(20))
    assert r2["bootstrap"]["unit"] == "trial" and r2["ci"]["n_units_bonafide"] == b.size
    assert "ci" not in evaluate_table(scores, key) and "bootstrap" not in evaluate_table(
        scores, key
    )


def test_real_2019_eval_protocol_is_resampled_by_speaker(shared_2019):
    """The real 2019 LA eval protocol (speaker in column 1): speaker units, counted per class."""
    from spoofdet.evaluation.keys import load_key

    key = load_key("asvspoof2019-la", shared_2019 / "ASVspoof2019.LA.cm.eval.trl.txt")
    table = key.selected
    labels = np.asarray(table["label"].to_pylist())
    speakers = np.asarray(table["speaker"].to_pylist(), dtype=object)
    rng = np.random.default_rng(0)
    scores = np.where(labels == 1, rng.normal(2, 1, labels.size), rng.normal(-1, 1, labels.size))
    r = evaluate_table(
        scores, {"label": list(labels), "speaker": list(speakers)}, bootstrap=BootstrapSpec(20)
    )
    assert r["bootstrap"]["unit"] == "speaker"
    assert r["ci"]["n_units_bonafide"] == len(set(speakers[labels == 1]))
    assert r["ci"]["n_units_spoof"] == len(set(speakers[labels == 0]))
    assert r["ci"]["eer"][0] <= r["eer"] <= r["ci"]["eer"][1]
