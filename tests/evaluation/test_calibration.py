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
    with pytest.raises(CalibrationError, match="slope is negative .* scores look inverted"):
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
