"""RawBoost data augmentation (Tak et al., ICASSP 2022), fast and in plain numpy/scipy.

Three random processes degrade a raw waveform: LnL (linear and non-linear convolutive noise),
ISD (impulsive signal-dependent noise) and SSI (stationary coloured additive noise), each built
on random notch-filter banks (:mod:`spoofdet.data._fir`). :func:`rawboost` applies algorithm
0-11 (:data:`ALGORITHMS`) as the SSL_Anti-spoofing recipe (0-8) and Nes2Net (9-11) define them,
identically distributed to the reference though not bit-identical for a seed. Contract: float32
``[T]`` in and out, same length; the same ``Generator`` seed gives the same output; invalid
parameters, algorithms or waveforms raise ``ValueError`` naming the field.

Fidelity details and the speed design (about 10x the direct form): docs/design/rawboost.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# the filter building blocks live in _fir.py; their public home is here (``X as X`` re-exports)
from spoofdet.data._fir import NotchBank as NotchBank
from spoofdet.data._fir import _check_sr, _design, _frames, _ola_filter_sum, _ola_plan, _uniform
from spoofdet.data._fir import fir_filter as fir_filter
from spoofdet.data._fir import fir_filter_direct as fir_filter_direct
from spoofdet.data._fir import firwin_bandstop as firwin_bandstop
from spoofdet.data._fir import notch_filter as notch_filter
from spoofdet.data._fir import notch_filters as notch_filters

#: What each algorithm id does (ids as in SSL_Anti-spoofing; 9-11 from Nes2Net).
ALGORITHMS: dict[int, str] = {
    0: "none (input returned as float32)",
    1: "LnL convolutive noise",
    2: "ISD impulsive noise",
    3: "SSI coloured additive noise",
    4: "series LnL -> ISD -> SSI",
    5: "series LnL -> ISD",
    6: "series LnL -> SSI",
    7: "series ISD -> SSI",
    8: "parallel LnL(x) + ISD(x), then normWav",
    9: "parallel LnL(x) + ISD(x) + SSI(x), then normWav",
    10: "LnL with probability lnl_ratio, ISD with probability isd_ratio; both -> parallel sum + normWav",
    11: "series LnL -> ISD -> SSI, each stage with probability lnl_ratio / isd_ratio / ssi_ratio",
}


@dataclass(frozen=True)
class RawBoostParams:
    """RawBoost settings; defaults are the SSL_Anti-spoofing argparse defaults.

    Attributes (seed argparse name in brackets):
        n_f: [N_f] number of LnL orders (filtered powers x, x**2, ...).
        n_bands: [nBands] notch bands per filter bank (LnL and SSI).
        min_f: [minF] lowest band centre frequency, Hz.
        max_f: [maxF] highest band centre frequency, Hz (at most sr / 2).
        min_bw: [minBW] smallest band width, Hz.
        max_bw: [maxBW] largest band width, Hz.
        min_coeff: [minCoeff] smallest tap count per band (truncated to int, then made odd).
        max_coeff: [maxCoeff] largest tap count per band.
        min_g: [minG] lowest bank gain, dB (LnL order 0 and SSI).
        max_g: [maxG] highest bank gain, dB.
        min_bias_lin_nonlin: [minBiasLinNonLin] subtracted from ``min_g`` for LnL orders >= 1.
        max_bias_lin_nonlin: [maxBiasLinNonLin] subtracted from ``max_g`` for LnL orders >= 1.
        p: [P] maximum percentage of samples ISD modifies (the percentage is U(0, p)).
        g_sd: [g_sd] ISD spike gain: samples are scaled by 1 + g_sd * u1 * u2.
        snr_min: [SNRmin] lowest SSI signal-to-noise ratio, dB.
        snr_max: [SNRmax] highest SSI signal-to-noise ratio, dB.
        lnl_ratio: [LnL_ratio] probability of the LnL stage in algorithms 10 and 11.
        isd_ratio: [ISD_ratio] probability of the ISD stage in algorithms 10 and 11.
        ssi_ratio: [SSI_ratio] probability of the SSI stage in algorithm 11.
    """

    n_f: int = 5
    n_bands: int = 5
    min_f: float = 20.0
    max_f: float = 8000.0
    min_bw: float = 100.0
    max_bw: float = 1000.0
    min_coeff: float = 10.0
    max_coeff: float = 100.0
    min_g: float = 0.0
    max_g: float = 0.0
    min_bias_lin_nonlin: float = 5.0
    max_bias_lin_nonlin: float = 20.0
    p: float = 10.0
    g_sd: float = 2.0
    snr_min: float = 10.0
    snr_max: float = 40.0
    lnl_ratio: float = 1.0
    isd_ratio: float = 1.0
    ssi_ratio: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.integer, np.floating))
                or not np.isfinite(v)
            ):
                raise ValueError(f"RawBoost parameter {f.name}={v!r}: must be a finite number")
        for name in ("n_f", "n_bands"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"RawBoost parameter {name}={v!r}: must be an integer >= 1")
        for lo, hi in (
            ("min_f", "max_f"),
            ("min_bw", "max_bw"),
            ("min_coeff", "max_coeff"),
            ("min_g", "max_g"),
            ("min_bias_lin_nonlin", "max_bias_lin_nonlin"),
            ("snr_min", "snr_max"),
        ):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(
                    f"RawBoost parameter {lo}={getattr(self, lo)!r} is above {hi}={getattr(self, hi)!r}: "
                    f"pass {lo} <= {hi}"
                )
        if self.min_f < 0:
            raise ValueError(f"RawBoost parameter min_f={self.min_f!r}: must be >= 0 Hz")
        if self.min_bw <= 0.002:
            raise ValueError(
                f"RawBoost parameter min_bw={self.min_bw!r}: must be > 0.002 Hz so every band has f1 < f2"
            )
        if self.min_coeff < 1:
            raise ValueError(
                f"RawBoost parameter min_coeff={self.min_coeff!r}: must be >= 1 (taps per band)"
            )
        if not 0 <= self.p <= 100:
            raise ValueError(f"RawBoost parameter p={self.p!r}: a percentage, must be in [0, 100]")
        if self.g_sd < 0:
            raise ValueError(f"RawBoost parameter g_sd={self.g_sd!r}: must be >= 0")
        for name in ("lnl_ratio", "isd_ratio", "ssi_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"RawBoost parameter {name}={getattr(self, name)!r}: a probability, must be in [0, 1]"
                )


PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RawBoostParams))


def rawboost_params(**overrides: float) -> RawBoostParams:
    """Build validated :class:`RawBoostParams` from keyword overrides of the defaults.

    Raises:
        ValueError: for a name that is not a parameter (the message lists the valid names) or
            an invalid value (the message names the field).
    """
    unknown = sorted(set(overrides) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(
            f"unknown RawBoost parameter(s) {', '.join(unknown)}; valid names: {', '.join(PARAM_NAMES)}"
        )
    return RawBoostParams(**overrides)


# ----------------------------------------------------------------------------------------------
# Small helpers


def norm_wav(x: np.ndarray, always: bool) -> np.ndarray:
    """The reference ``normWav``: divide by ``max|x|`` if ``always``, else only if ``max|x| > 1``.

    An all-zero input is returned unchanged (the reference would divide by zero with ``always``).
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0 and (always or peak > 1):
        return x / peak
    return x


def lnl_gain_ranges(params: RawBoostParams) -> list[tuple[float, float]]:
    """Gain bounds (dB) of the LnL bank of each order, with the reference's quirk.

    Order 0 uses ``(min_g, max_g)``; from order 1 on the bounds are shifted once to
    ``(min_g - min_bias_lin_nonlin, max_g - max_bias_lin_nonlin)`` (not again per order), so the
    defaults give ``[(0, 0), (-5, -20), (-5, -20), ...]``, i.e. G ~ U(-20, -5) dB.
    """
    shifted = (params.min_g - params.min_bias_lin_nonlin, params.max_g - params.max_bias_lin_nonlin)
    return [(params.min_g, params.max_g)] + [shifted] * (int(params.n_f) - 1)


# ----------------------------------------------------------------------------------------------
# The three processes (float32 in, float32 out)


def lnl_noise(
    x: np.ndarray, rng: np.random.Generator, sr: int, params: RawBoostParams
) -> np.ndarray:
    """LnL convolutive noise: ``sum_i FIR_i(x ** (i + 1))``, mean removed, ``norm_wav(., False)``.

    Draws: the ``n_f`` banks, as one :func:`notch_filters` call with :func:`lnl_gain_ranges`.
    """
    ranges = np.asarray(lnl_gain_ranges(params), dtype=np.float64)
    taps, lengths, *_ = _design(rng, sr, params, ranges[:, 0], ranges[:, 1])
    plan = _ola_plan(x.size, lengths)
    frames = _frames(x, len(ranges), *plan[1:3], plan[0])
    for i in range(1, len(ranges)):  # x ** (i + 1), framed (the zero padding stays zero)
        np.multiply(frames[i - 1], frames[0], out=frames[i])
    y = _ola_filter_sum(frames, taps, lengths, x.size, plan)
    y -= y.mean(dtype=np.float64)
    return norm_wav(y, always=False)


def isd_noise(x: np.ndarray, rng: np.random.Generator, params: RawBoostParams) -> np.ndarray:
    """ISD impulsive noise: ``int(N * beta / 100)`` distinct samples, ``beta ~ U(0, p)``, become
    ``x + g_sd * x * u1 * u2`` with ``u1, u2 ~ U(-1, 1)``; then ``norm_wav(., False)``.

    Draws, in order: beta, the positions, u1, u2.
    """
    n = x.size
    beta = _uniform(rng, 0.0, params.p)
    count = int(n * (beta / 100))
    pos = rng.choice(n, size=count, replace=False)
    f = (2 * rng.random(count) - 1) * (2 * rng.random(count) - 1)
    y = np.array(x, dtype=np.float32)
    y[pos] = x[pos] + params.g_sd * x[pos] * f
    return norm_wav(y, always=False)


def ssi_noise(
    x: np.ndarray, rng: np.random.Generator, sr: int, params: RawBoostParams
) -> np.ndarray:
    """SSI additive noise: white Gaussian noise through one notch bank (gain range
    ``(min_g, max_g)``), scaled to ``||x|| / 10 ** (SNR / 20)`` with ``SNR ~ U(snr_min, snr_max)``,
    added to ``x`` (no renormalisation afterwards).

    The reference also peak-normalises the noise before the L2 scaling; that factor cancels, so
    it is skipped. Draws, in order: the noise (float32), the bank, the SNR.
    """
    noise = rng.standard_normal(x.size, dtype=np.float32)
    taps, lengths, *_ = _design(rng, sr, params, np.array([params.min_g]), np.array([params.max_g]))
    plan = _ola_plan(x.size, lengths)
    coloured = _ola_filter_sum(_frames(noise, 1, *plan[1:3], plan[0]), taps, lengths, x.size, plan)
    snr = _uniform(rng, params.snr_min, params.snr_max)
    noise_norm = float(np.linalg.norm(coloured))
    if noise_norm == 0:
        return np.array(x, dtype=np.float32)
    return (
        x + coloured * np.float32(float(np.linalg.norm(x)) / noise_norm / 10.0 ** (0.05 * snr))
    ).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Algorithms


def _series(*stages: Callable) -> Callable:
    def run(x, rng, sr, p):
        for stage in stages:
            x = stage(x, rng, sr, p)
        return x

    return run


def _parallel(*stages: Callable) -> Callable:
    def run(x, rng, sr, p):
        return norm_wav(sum(stage(x, rng, sr, p) for stage in stages), always=False)

    return run


def _lnl(x, rng, sr, p):
    return lnl_noise(x, rng, sr, p)


def _isd(x, rng, sr, p):
    return isd_noise(x, rng, p)


def _ssi(x, rng, sr, p):
    return ssi_noise(x, rng, sr, p)


def _algo10(x, rng, sr, p):
    # Nes2Net: a stage is chosen when its uniform draw is <= its ratio.
    use_lnl = rng.random() <= p.lnl_ratio
    use_isd = rng.random() <= p.isd_ratio
    if use_lnl and use_isd:
        return _parallel(_lnl, _isd)(x, rng, sr, p)
    if use_lnl:
        return _lnl(x, rng, sr, p)
    if use_isd:
        return _isd(x, rng, sr, p)
    return x


def _algo11(x, rng, sr, p):
    # Nes2Net: the three draws come first; a stage runs when its draw is < its ratio.
    use = rng.random(3) < np.array([p.lnl_ratio, p.isd_ratio, p.ssi_ratio])
    for on, stage in zip(use, (_lnl, _isd, _ssi)):
        if on:
            x = stage(x, rng, sr, p)
    return x


_RUN: dict[int, Callable] = {
    1: _lnl,
    2: _isd,
    3: _ssi,
    4: _series(_lnl, _isd, _ssi),
    5: _series(_lnl, _isd),
    6: _series(_lnl, _ssi),
    7: _series(_isd, _ssi),
    8: _parallel(_lnl, _isd),
    9: _parallel(_lnl, _isd, _ssi),
    10: _algo10,
    11: _algo11,
}


def apply_rawboost(
    wave: np.ndarray, algo: int, rng: np.random.Generator, params: RawBoostParams, sr: int = 16000
) -> np.ndarray:
    """:func:`rawboost` with already validated :class:`RawBoostParams` (for per-sample loops)."""
    if (
        isinstance(algo, bool)
        or not isinstance(algo, (int, np.integer))
        or int(algo) not in ALGORITHMS
    ):
        raise ValueError(
            f"algo={algo!r}: must be one of {sorted(ALGORITHMS)} "
            f"({'; '.join(f'{k} = {v}' for k, v in ALGORITHMS.items())})"
        )
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng: expected a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    if not isinstance(params, RawBoostParams):
        raise ValueError(
            "params: expected RawBoostParams (build it with rawboost_params(...)), "
            f"got {type(params).__name__}"
        )
    wave = np.asarray(wave)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"wave: expected a non-empty 1-D waveform, got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.number) or np.iscomplexobj(wave):
        raise ValueError(f"wave: expected real samples, got dtype {wave.dtype}")
    if int(algo) == 0:
        return np.array(wave, dtype=np.float32)
    _check_sr(sr, params)
    x = np.array(wave, dtype=np.float32)  # a copy: the caller's array is never written
    if not np.isfinite(x).all():
        raise ValueError(
            f"wave: {int((~np.isfinite(x)).sum())} NaN/Inf samples; quarantine or clean the clip first"
        )
    return np.asarray(_RUN[int(algo)](x, rng, int(sr), params), dtype=np.float32)


def rawboost(
    wave: np.ndarray, algo: int, rng: np.random.Generator, sr: int = 16000, **params: float
) -> np.ndarray:
    """Apply RawBoost algorithm ``algo`` (0-11, see :data:`ALGORITHMS`) to one waveform.

    Args:
        wave: ``[T]`` waveform (float32 expected; any real dtype accepted).
        algo: algorithm id; 0 returns the input as float32 (a copy).
        rng: random generator; the same seed gives the same output.
        sr: sample rate, Hz.
        **params: overrides of :class:`RawBoostParams` fields (snake_case names).

    Returns:
        ``[T]`` float32, same length as ``wave``.

    Raises:
        ValueError: unknown parameter name (valid names listed), invalid parameter value (the
            field is named), unknown ``algo``, or a waveform that is not 1-D, empty or non-finite.
    """
    return apply_rawboost(wave, algo, rng, rawboost_params(**params), sr)
