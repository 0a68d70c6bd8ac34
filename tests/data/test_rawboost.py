"""RawBoost: shapes, determinism, each process's pinned properties, and the fast paths against
the direct-form (firwin / np.convolve / freqz / lfilter) way the reference computes them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from spoofdet.data import rawboost as rb

SR = 16_000


def _speechlike(seed: int, n: int = 16_000, peak: float = 0.5) -> np.ndarray:
    """Band-limited noise with a slow envelope, peak-normalised to ``peak`` (float32)."""
    rng = np.random.default_rng(seed)
    x = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * np.arange(n) / SR) ** 2
    return (peak * x / np.abs(x).max()).astype(np.float32)


def _direct_bank(bank: rb.NotchBank) -> np.ndarray:
    """The reference design of a drawn bank: firwin per band, np.convolve, freqz peak, gain."""
    b = np.ones(1)
    for (f1, f2), c in zip(bank.bands, bank.num_taps):
        b = np.convolve(signal.firwin(int(c), [f1, f2], window="hamming", fs=SR), b)
    _, h = signal.freqz(b, 1, fs=SR)
    return 10 ** (bank.gain_db / 20) * b / np.abs(h).max()


@pytest.mark.parametrize("algo", range(12))
def test_every_algo_keeps_length_dtype_and_is_finite(algo):
    x = _speechlike(0, 8_000)
    y = rb.rawboost(x, algo, np.random.default_rng(1))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isfinite(y).all()
    if algo != 0:
        assert not np.allclose(y, x), f"algo {algo} left the waveform unchanged"


def test_algo0_is_identity_and_a_copy():
    x = _speechlike(1, 1_000).astype(np.float64)
    y = rb.rawboost(x, 0, np.random.default_rng(0))
    assert y.dtype == np.float32 and np.array_equal(y, x.astype(np.float32))
    y[0] += 1
    assert x[0] != y[0]


@pytest.mark.parametrize("algo", [1, 3, 5, 11])
def test_same_seed_same_output_other_seed_differs(algo):
    x = _speechlike(2, 8_000)
    a = rb.rawboost(x, algo, np.random.default_rng(7))
    b = rb.rawboost(x, algo, np.random.default_rng(7))
    c = rb.rawboost(x, algo, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_input_is_never_modified():
    x = _speechlike(3, 4_000)
    before = x.copy()
    for algo in range(12):
        rb.rawboost(x, algo, np.random.default_rng(algo))
    assert np.array_equal(x, before)


# ---- building blocks against scipy --------------------------------------------------------------


def test_windowed_sinc_equals_firwin():
    rng = np.random.default_rng(0)
    c = np.array([1, 3, 11, 99, 255, 37])
    f1 = np.array([1e-3, 200.0, 20.0, 4000.0, 7000.0, 1000.0])
    f2 = np.array([500.0, 300.0, 700.0, 4500.0, SR / 2 - 1e-3, 1000.5])
    more = rng.integers(5, 100, 30) | 1
    lo = rng.uniform(1, 7000, 30)
    c, f1, f2 = (
        np.r_[c, more],
        np.r_[f1, lo],
        np.r_[f2, np.minimum(lo + rng.uniform(1, 1000, 30), 7999.0)],
    )
    h = rb.firwin_bandstop(c, f1, f2, SR)
    assert h.shape == (len(c), c.max())
    for row, ci, a, b in zip(h, c, f1, f2):
        ref = signal.firwin(int(ci), [a, b], window="hamming", fs=SR)
        np.testing.assert_allclose(row[:ci], ref, rtol=0, atol=1e-12)
        assert not row[ci:].any()


def test_firwin_bandstop_rejects_even_taps():
    with pytest.raises(ValueError, match="odd"):
        rb.firwin_bandstop(np.array([10]), np.array([100.0]), np.array([200.0]), SR)


@pytest.mark.parametrize("seed", range(4))
def test_notch_bank_equals_reference_design(seed):
    params = rb.rawboost_params(min_g=-9, max_g=3)
    banks = rb.notch_filters(np.random.default_rng(seed), SR, params, [(-9, 3), (-20, -5), (0, 0)])
    for bank, (lo, hi) in zip(banks, [(-9, 3), (-20, -5), (0, 0)]):
        assert len(bank.taps) == bank.num_taps.sum() - len(bank.num_taps) + 1
        assert np.all(bank.num_taps % 2 == 1) and np.all(
            (bank.num_taps >= 11) & (bank.num_taps <= 99)
        )
        assert lo <= bank.gain_db <= hi
        f1, f2 = bank.bands.T
        assert np.all(f1 >= 1e-3) and np.all(f2 <= SR / 2 - 1e-3) and np.all(f1 < f2)
        assert np.all((bank.centres >= 20) & (bank.centres <= 8000))
        np.testing.assert_allclose(
            bank.taps, _direct_bank(bank), rtol=0, atol=1e-12 * np.abs(bank.taps).max()
        )
        _, h = signal.freqz(bank.taps, 1, fs=SR)  # peak on freqz's grid is exactly the gain
        assert np.abs(h).max() == pytest.approx(10 ** (bank.gain_db / 20), rel=1e-9)


def test_notch_bank_has_notches_inside_the_drawn_bands():
    params = rb.rawboost_params(
        n_bands=3, min_coeff=255, max_coeff=256, min_bw=1500, max_bw=2000, min_f=1500, max_f=6500
    )
    for seed in range(5):
        bank = rb.notch_filters(np.random.default_rng(seed), SR, params, [(0, 0)])[0]
        freqs = np.linspace(0, SR / 2, 4001)
        _, h = signal.freqz(bank.taps, 1, worN=freqs, fs=SR)
        mag = np.abs(h)
        for fc in bank.centres:
            assert mag[np.argmin(np.abs(freqs - fc))] < 0.03, (
                f"no notch at {fc:.0f} Hz (seed {seed})"
            )
        inside = np.zeros_like(freqs, dtype=bool)
        for f1, f2 in bank.bands:
            inside |= (freqs > f1 - 300) & (freqs < f2 + 300)
        assert mag[~inside].min() > 0.5, "attenuation outside the drawn bands"


def test_long_bank_is_normalised_on_freqz_grid():
    # cascade longer than freqz's 1024-point transform: freqz evaluates the polynomial instead
    params = rb.rawboost_params(n_bands=4, min_coeff=301, max_coeff=401)
    bank = rb.notch_filters(np.random.default_rng(3), SR, params, [(-6, -6)])[0]
    assert len(bank.taps) > 1024
    np.testing.assert_allclose(
        bank.taps, _direct_bank(bank), rtol=0, atol=1e-12 * np.abs(bank.taps).max()
    )


@pytest.mark.parametrize("n", [1, 7, 300, 5_000, 64_600])
def test_fast_filter_equals_direct_lfilter(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n)
    for params in (rb.RawBoostParams(), rb.rawboost_params(min_coeff=301, max_coeff=401)):
        b = rb.notch_filter(rng, SR, params, (0, 0))
        fast, direct = rb.fir_filter(x, b), rb.fir_filter_direct(x, b)
        assert fast.dtype == np.float32 and fast.shape == (n,)
        np.testing.assert_allclose(fast, direct, rtol=0, atol=1e-5 * np.abs(direct).max())


def test_direct_filter_alignment_is_the_references():
    # output[k] = full_convolution(x, b)[k + (len(b) + 1) // 2]: a unit impulse at t shows up
    # as b[j] at t + j - (len(b) + 1) // 2
    b = np.arange(1.0, 8.0)  # 7 taps, d = 4
    x = np.zeros(20)
    x[10] = 1.0
    expected = np.zeros(20)
    expected[10 - 4 : 10 - 4 + 7] = b
    np.testing.assert_array_equal(rb.fir_filter_direct(x, b), expected)
    np.testing.assert_allclose(rb.fir_filter(x, b), expected, atol=1e-5)


# ---- the three processes --------------------------------------------------------------------------


def test_lnl_gain_quirk():
    assert rb.lnl_gain_ranges(rb.RawBoostParams()) == [(0.0, 0.0)] + [(-5.0, -20.0)] * 4
    assert rb.lnl_gain_ranges(rb.rawboost_params(n_f=2, min_g=-1, max_g=2)) == [(-1, 2), (-6, -18)]


@pytest.mark.parametrize("seed", range(3))
def test_lnl_equals_direct_form_with_the_same_draws(seed):
    x = _speechlike(seed, 12_000, peak=0.9)
    params = rb.RawBoostParams()
    banks = rb.notch_filters(np.random.default_rng(seed), SR, params, rb.lnl_gain_ranges(params))
    x64 = x.astype(np.float64)
    y = sum(rb.fir_filter_direct(x64 ** (i + 1), bank.taps) for i, bank in enumerate(banks))
    y = y - y.mean()
    if np.abs(y).max() > 1:
        y = y / np.abs(y).max()
    fast = rb.rawboost(x, 1, np.random.default_rng(seed))
    np.testing.assert_allclose(fast, y, rtol=0, atol=2e-5 * np.abs(y).max())


def test_lnl_output_is_zero_mean_and_at_most_unit_peak():
    for seed in range(5):
        y = rb.rawboost(_speechlike(seed, 8_000, peak=1.0) * 3, 1, np.random.default_rng(seed))
        assert abs(float(y.astype(np.float64).mean())) < 1e-6
        assert np.abs(y).max() <= 1 + 1e-6


def test_isd_touches_at_most_p_percent_and_only_multiplies():
    n, g_sd, fractions = 20_000, 2.0, []
    # peak 0.3: a spike scales a sample by at most 1 + g_sd = 3, so normWav never rescales
    x = _speechlike(4, n, peak=0.3)
    x[x == 0] = 1e-3
    for seed in range(40):
        y = rb.rawboost(x, 2, np.random.default_rng(seed))
        changed = y != x
        fractions.append(changed.mean())
        assert changed.sum() <= int(n * 0.10)
        ratio = y[changed].astype(np.float64) / x[changed] - 1
        assert np.all(np.abs(ratio) <= g_sd + 1e-6)
    # beta ~ U(0, 10) %: the touched fraction averages 5 % and spans the range
    assert 0.04 < np.mean(fractions) < 0.06
    assert min(fractions) < 0.02 and max(fractions) > 0.08


def test_isd_rescales_when_spikes_exceed_one():
    x = _speechlike(5, 20_000, peak=0.99)
    ys = [rb.rawboost(x, 2, np.random.default_rng(s), g_sd=50) for s in range(5)]
    assert all(np.abs(y).max() == pytest.approx(1.0, abs=1e-6) for y in ys)


def test_isd_with_p0_is_identity():
    x = _speechlike(6, 5_000, peak=0.8)
    assert np.array_equal(rb.rawboost(x, 2, np.random.default_rng(0), p=0), x)
    louder = 2 * x  # peak 1.6: the only change left is normWav's rescale
    np.testing.assert_allclose(
        rb.rawboost(louder, 2, np.random.default_rng(0), p=0), louder / 1.6, rtol=1e-6
    )


def test_ssi_snr_lies_in_the_drawn_range():
    x = _speechlike(7, 16_000)
    snrs = []
    for seed in range(60):
        y = rb.rawboost(x, 3, np.random.default_rng(seed), snr_min=15, snr_max=25).astype(
            np.float64
        )
        snrs.append(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum((y - x) ** 2)))
    assert 15 - 1e-3 <= min(snrs) and max(snrs) <= 25 + 1e-3
    assert min(snrs) < 17 and max(snrs) > 23  # uniform over the range, not a constant


def test_ssi_noise_is_coloured_by_the_bank():
    # one wide, long notch: the added noise has (almost) no energy in the drawn band
    params = dict(
        n_bands=1, min_coeff=255, max_coeff=256, min_bw=2000, max_bw=2000, min_f=4000, max_f=4000
    )
    x = _speechlike(8, 32_000)
    noise = rb.rawboost(x, 3, np.random.default_rng(0), **params).astype(np.float64) - x
    f, pxx = signal.welch(noise, fs=SR, nperseg=1024)
    stop = pxx[(f > 3300) & (f < 4700)].mean()
    passing = pxx[(f < 2000) | (f > 6000)].mean()
    assert stop < 1e-3 * passing


def test_gain_override_changes_level():
    x = _speechlike(9, 8_000, peak=0.5)
    # LnL with one order: output = bank(x) with gain G, unless normWav rescales
    y0 = rb.rawboost(x, 1, np.random.default_rng(3), n_f=1, min_g=0, max_g=0)
    y6 = rb.rawboost(x, 1, np.random.default_rng(3), n_f=1, min_g=-6, max_g=-6)
    np.testing.assert_allclose(y6, y0 * 10 ** (-6 / 20), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "algo,stages", [(10, ("lnl_ratio", "isd_ratio")), (11, ("lnl_ratio", "isd_ratio", "ssi_ratio"))]
)
def test_nes2net_ratios_zero_skip_every_stage(algo, stages):
    x = _speechlike(10, 4_000)
    y = rb.rawboost(x, algo, np.random.default_rng(0), **{s: 0.0 for s in stages})
    assert np.array_equal(y, x)


def test_algo10_with_both_is_algo8_distribution_and_parallel_sum():
    x = _speechlike(11, 4_000, peak=0.3)
    # with ratios 1 both stages run in parallel on x: LnL part is zero-mean, ISD part near x
    y = rb.rawboost(x, 10, np.random.default_rng(0)).astype(np.float64)
    y8 = rb.rawboost(x, 8, np.random.default_rng(0)).astype(np.float64)
    for out in (y, y8):
        assert np.abs(out).max() <= 1 + 1e-6
        assert np.corrcoef(out, x)[0, 1] > 0.3


# ---- errors ---------------------------------------------------------------------------------------


def test_unknown_parameter_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match="nBands.*valid names: n_f, n_bands"):
        rb.rawboost(np.zeros(100, np.float32), 1, np.random.default_rng(0), nBands=3)


@pytest.mark.parametrize("algo", [-1, 12, 2.0, "5", True])
def test_invalid_algo(algo):
    with pytest.raises(ValueError, match="algo"):
        rb.rawboost(np.zeros(100, np.float32), algo, np.random.default_rng(0))


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(min_f=5000, max_f=100), "min_f"),
        (dict(min_bw=900, max_bw=100), "min_bw"),
        (dict(min_coeff=0), "min_coeff"),
        (dict(n_f=0), "n_f"),
        (dict(n_bands=2.5), "n_bands"),
        (dict(p=150), "p="),
        (dict(snr_min=40, snr_max=10), "snr_min"),
        (dict(lnl_ratio=1.5), "lnl_ratio"),
        (dict(g_sd=-1), "g_sd"),
        (dict(min_g=float("nan")), "min_g"),
        (dict(max_f=9000), "max_f"),
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        rb.rawboost(np.ones(100, np.float32) * 0.1, 1, np.random.default_rng(0), **overrides)


def test_bad_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="rng"):
        rb.rawboost(np.zeros(10, np.float32), 1, 0)
    with pytest.raises(ValueError, match="1-D"):
        rb.rawboost(np.zeros((2, 10), np.float32), 1, rng)
    with pytest.raises(ValueError, match="NaN"):
        rb.rawboost(np.array([0.1, np.nan], np.float32), 1, rng)
    with pytest.raises(ValueError, match="sr"):
        rb.rawboost(np.zeros(10, np.float32), 1, rng, sr=8000)  # max_f 8000 > 4000


def test_every_parameter_is_overridable_and_defaults_match_the_seeds():
    p = rb.RawBoostParams()
    assert (p.n_f, p.n_bands, p.min_f, p.max_f, p.min_bw, p.max_bw, p.min_coeff, p.max_coeff) == (
        5,
        5,
        20,
        8000,
        100,
        1000,
        10,
        100,
    )
    assert (
        p.min_g,
        p.max_g,
        p.min_bias_lin_nonlin,
        p.max_bias_lin_nonlin,
        p.p,
        p.g_sd,
        p.snr_min,
        p.snr_max,
    ) == (0, 0, 5, 20, 10, 2, 10, 40)
    assert (p.lnl_ratio, p.isd_ratio, p.ssi_ratio) == (1, 1, 1)
    for name in rb.PARAM_NAMES:
        assert getattr(rb.rawboost_params(**{name: getattr(p, name)}), name) == getattr(p, name)
    assert rb.rawboost_params(n_bands=2).n_bands == 2
