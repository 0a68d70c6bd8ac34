"""Calibration: scores -> LLRs by prior-weighted logistic regression."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spoofdet.evaluation.calibration import (
    DEFAULT_P_BONAFIDE,
    Calibration,
    CalibrationError,
    apply,
    assess,
    check_calibratable,
    diagnose,
    fit_calibration,
)
from spoofdet.evaluation.metrics import act_dcf, cllr, compute_eer, min_dcf


@pytest.fixture(scope="module")
def gaussian():
    """Raw scores 3 z + 5 with z ~ N(+1, 1) (bona fide) / N(-1, 1) (spoof): the true LLR is
    2 z = (2/3) raw - 10/3 (equal-variance Gaussians: LLR = (mu1 - mu0) / var * z)."""
    rng = np.random.default_rng(11)
    z_b, z_s = rng.normal(1, 1, 20000), rng.normal(-1, 1, 20000)
    return 3 * z_b + 5, 3 * z_s + 5


def test_default_prior_is_the_asvspoof5_effective_prior():
    assert DEFAULT_P_BONAFIDE == pytest.approx(0.95 / (0.95 + 0.5))
    assert -math.log(DEFAULT_P_BONAFIDE / (1 - DEFAULT_P_BONAFIDE)) == pytest.approx(-math.log(1.9))


@pytest.mark.parametrize("prior", [DEFAULT_P_BONAFIDE, 0.5, 0.1])
def test_recovers_the_analytic_llr(gaussian, prior):
    b, s = gaussian
    cal = fit_calibration(b, s, p_bonafide=prior)
    assert cal.slope == pytest.approx(2 / 3, rel=0.05)
    assert cal.offset == pytest.approx(-10 / 3, abs=0.15)
    raw = np.linspace(-4, 14, 50)  # z in [-3, 3]
    np.testing.assert_allclose(cal.apply(raw), 2 * (raw - 5) / 3, atol=0.25)
    assert cal.p_bonafide == prior and (cal.n_bonafide, cal.n_spoof) == (20000, 20000)


def test_calibration_improves_cllr_and_keeps_the_eer(gaussian):
    b, s = gaussian
    half = 10000
    cal = fit_calibration(b[:half], s[:half])
    for bb, ss in ((b[:half], s[:half]), (b[half:], s[half:])):  # dev, and held-out "eval"
        lb, ls = apply(cal, bb), apply(cal, ss)
        assert cllr(lb, ls) < cllr(bb, ss)
        assert compute_eer(lb, ls)[0] == compute_eer(bb, ss)[0]
        assert min_dcf(lb, ls)[0] == min_dcf(bb, ss)[0]
        # calibrated: the Bayes threshold is nearly optimal; raw scores (all near 5) are not
        assert act_dcf(lb, ls) - min_dcf(lb, ls)[0] < 0.03
        assert act_dcf(bb, ss) - min_dcf(bb, ss)[0] > 0.3
    # Cllr of the calibrated scores is close to that of the true LLRs
    assert cllr(apply(cal, b), apply(cal, s)) == pytest.approx(
        cllr(2 * (b - 5) / 3, 2 * (s - 5) / 3), abs=0.01
    )


def test_negative_slope_is_refused(gaussian):
    b, s = gaussian
    with pytest.raises(
        CalibrationError,
        match="slope is negative .* scores are inverted: the model's bona fide output index",
    ):
        fit_calibration(-b, -s)
    with pytest.warns(UserWarning, match="slope is negative"):
        cal = fit_calibration(-b, -s, allow_negative_slope=True)
    assert cal.slope < 0


def test_bad_inputs():
    with pytest.raises(CalibrationError, match="no spoof scores"):
        fit_calibration([1.0], [])
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        fit_calibration([1.0, np.nan], [0.0])
    with pytest.raises(CalibrationError, match="p_bonafide"):
        fit_calibration([1.0], [0.0], p_bonafide=1.0)
    with pytest.raises(CalibrationError, match="identical"):
        fit_calibration([1.0, 1.0], [1.0])
    with pytest.warns(UserWarning, match="separate the classes perfectly"):
        cal = fit_calibration([2.0, 3.0, 2.5], [0.0, 1.0, 0.5])
    assert cal.slope > 0


def test_json_round_trip_and_errors(tmp_path, gaussian):
    cal = fit_calibration(*gaussian)
    assert Calibration.from_json(cal.to_json()) == cal
    path = cal.save(tmp_path / "calibration.json")
    assert (
        Calibration.load(path) == cal
        and json.loads(path.read_text())["method"] == "prior-weighted-logistic-regression"
    )
    d = cal.to_dict()
    with pytest.raises(CalibrationError, match=r"missing field\(s\) \['slope'\]"):
        Calibration.from_dict({k: v for k, v in d.items() if k != "slope"})
    with pytest.raises(CalibrationError, match="field 'offset' must be a finite number"):
        Calibration.from_dict({**d, "offset": float("nan")})
    with pytest.raises(CalibrationError, match="unknown field"):
        Calibration.from_dict({**d, "bias": 1})
    with pytest.raises(CalibrationError, match=f"{tmp_path / 'x.json'}: not valid JSON"):
        (tmp_path / "x.json").write_text("{")
        Calibration.load(tmp_path / "x.json")


# ----------------------------------------------------------------------------- failure messages


def test_diagnose_an_inverted_model_hand_computed():
    # every bona fide score (0..9) below every spoof score (10..19): EER 100 %, negated 0 %
    text = diagnose(np.arange(10.0), np.arange(10.0, 20.0))
    assert text == (
        "Measured: dev EER 100.00 %, EER of the negated scores 0.00 %, over 10 bona fide and 10 "
        "spoof dev trials: scores are inverted: the model's bona fide output index or the score "
        "polarity is wrong; fix that instead of calibrating it away."
    )
    assert assess(np.arange(10.0), np.arange(10.0, 20.0))["verdict"] == "inverted"


def test_diagnose_a_model_at_chance_hand_computed():
    # interleaved classes (bona fide even, spoof odd): 5 of 10 on each side of 9.5, both ways
    bona, spoof = np.arange(0.0, 20.0, 2), np.arange(1.0, 20.0, 2)
    text = diagnose(bona, spoof)
    assert text.startswith(
        "Measured: dev EER 50.00 %, EER of the negated scores 50.00 %, over 10 bona fide and 10 "
        "spoof dev trials: the model is at chance: it has not learned to separate bona fide from "
        "spoof; calibrating would map every clip to the prior; train longer / check labels"
    )
    with pytest.raises(CalibrationError, match="refusing to calibrate: .* is at chance"):
        check_calibratable(bona, spoof)


def test_diagnose_too_few_trials_and_no_trials():
    assert "over 3 bona fide and 1 spoof dev trials: too few trials" in diagnose([1, 2, 3], [0])
    assert diagnose([1.0], []).startswith("Measured: 1 bona fide and 0 spoof dev trials, so no EER")
    with pytest.raises(CalibrationError, match=r"too few trials .*\(fewer than 10 of a class\)"):
        check_calibratable([2.0, 3.0, 2.5], [0.0, 1.0, 0.5])
    with pytest.raises(CalibrationError, match="1 spoof score"):
        diagnose([1.0], [np.nan])


def test_a_separating_model_passes_the_check(gaussian):
    found = check_calibratable(*gaussian)
    assert found["verdict"] == "separates" and (found["n_bonafide"], found["n_spoof"]) == (
        20000,
        20000,
    )
    assert found["eer"] == pytest.approx(100 * compute_eer(*gaussian)[0])
    assert found["eer"] < 20 < 80 < found["eer_negated"]


def test_a_negative_slope_at_chance_is_called_chance_not_inverted():
    """The old message said 'inverted' for a model that had merely learned nothing."""
    rng = np.random.default_rng(5)
    bona, spoof = rng.normal(-0.1, 1, 3000), rng.normal(0, 1, 3000)
    with pytest.raises(CalibrationError) as err:
        fit_calibration(bona, spoof)
    msg = str(err.value)
    assert "slope is negative" in msg and "the model is at chance" in msg
    assert "inverted" not in msg and "over 3000 bona fide and 3000 spoof dev trials" in msg


def test_training_final_calibration_failure_says_what_was_measured(tmp_path, capsys, monkeypatch):
    """The end of training (spoofdet.training.final.calibrate_on_dev) on a model at chance: no
    calibration.json, and the note names the measured EERs, the counts and 'at chance'."""
    torch = pytest.importorskip("torch")
    from pathlib import Path as _Path

    from spoofdet.config import load_train_config
    from spoofdet.training import final

    demo = _Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "demo.yaml"
    cfg = load_train_config(demo, [], check_paths=False)
    rng = np.random.default_rng(5)
    raw = np.concatenate([rng.normal(-0.1, 1, 300), rng.normal(0, 1, 300)])
    labels = np.array([1] * 300 + [0] * 300)

    def batches(*args, **kwargs):
        for i in range(0, 600, 100):
            yield {
                "wave": torch.tensor(raw[i : i + 100, None]),
                "label": torch.tensor(labels[i : i + 100]),
            }

    monkeypatch.setattr(final.data, "iter_eval_part", batches)
    monkeypatch.setattr(final.data, "model_input", lambda b: b["wave"])
    model = type("M", (), {"score": staticmethod(lambda w: w[:, 0])})()
    found = final.calibrate_on_dev(cfg, model, tmp_path)
    assert "calibration" not in found and not (tmp_path / "calibration.json").exists()
    err = capsys.readouterr().err
    eer = assess(raw[labels == 1], raw[labels == 0])["eer"]
    assert f"dev EER {eer:.2f} %" in err and "over 300 bona fide and 300 spoof dev trials" in err
    assert "the model is at chance" in err and "inverted" not in err
    assert "spoofdet calibrate" in err
    assert found["final_dev_eer"] == pytest.approx(eer)


def test_training_note_adds_the_diagnosis_to_other_failures():
    from spoofdet.training.final import refused_calibration

    exc = CalibrationError("every score is identical; there is nothing to calibrate")
    text = refused_calibration(np.zeros(12), np.zeros(12), exc)
    assert text.startswith("no calibration stored: every score is identical")
    # tied scores: the ASVspoof EER (bona fide rejected first on ties) is 100 % both ways
    assert "dev EER 100.00 %, EER of the negated scores 100.00 %, over 12 bona fide" in text
    assert "the model is at chance" in text
