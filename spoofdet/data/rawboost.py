"""RawBoost data augmentation (Tak et al., ICASSP 2022), fast and in plain numpy/scipy.

RawBoost degrades a raw waveform with three random processes, each built on a random
*notch-filter bank* (a cascade of ``n_bands`` band-stop FIRs with random centre, bandwidth and
odd tap count, peak-normalised and given a random gain):

- **LnL** (linear and non-linear convolutive noise): ``y = sum_i FIR_i(x ** (i + 1))`` for
  ``i < n_f``, each order with its own bank; the mean is removed and the result is divided by
  its peak if that exceeds 1.
- **ISD** (impulsive signal-dependent noise): a random ``U(0, p)`` percent of the samples,
  at distinct positions, are multiplied by ``1 + g_sd * u1 * u2`` with ``u1, u2 ~ U(-1, 1)``.
- **SSI** (stationary signal-independent noise): white Gaussian noise coloured by a bank is
  added at a random SNR drawn from ``U(snr_min, snr_max)`` dB.

:func:`rawboost` applies algorithm 0-11 exactly as the SSL_Anti-spoofing recipe defines them
(1 LnL, 2 ISD, 3 SSI, 4 LnL->ISD->SSI, 5 LnL->ISD, 6 LnL->SSI, 7 ISD->SSI, 8 LnL(x)+ISD(x)),
plus Nes2Net's 9 (LnL(x)+ISD(x)+SSI(x)), 10 (LnL and/or ISD, each with a probability, summed
when both) and 11 (LnL->ISD->SSI, each stage with its own probability). Every random choice of
the reference is reproduced in distribution: the band centre, bandwidth and tap count draws
(tap count truncated to an integer and forced odd, band edges clamped inside (0, sr/2)), the
Hamming-windowed band-stop design of ``scipy.signal.firwin``, the cascade, the normalisation by
the peak of ``|freqz(b)|`` on its default 512-point grid over [0, pi), the gain ``10**(G/20)``,
the LnL gain quirk (orders >= 1 draw G between ``min_g - min_bias_lin_nonlin`` and
``max_g - max_bias_lin_nonlin``, i.e. U(-20, -5) dB with the defaults), the reference's
group-delay alignment of the filter output, and the ``normWav`` rescaling rules. The random
*stream* differs (draws are made with a :class:`numpy.random.Generator`, vectorised), so the
outputs are not bit-identical to the reference for a given seed, only identically distributed.

What was done for speed (the reference spends ~5 direct-form ``lfilter`` passes of ~275 taps
over the whole clip per call, plus ~25 ``firwin`` and 5 ``freqz`` calls):

- All bands of all banks of one call are designed at once as a windowed sinc in one numpy
  expression (equal to ``firwin`` to ~1e-15, see the tests).
- Each cascade and its ``freqz`` peak come from one batched short FFT (1024 points for the
  default sizes): the product of the band spectra is the cascade's spectrum, its bins
  0..511 are exactly ``freqz``'s grid, and its inverse FFT gives the cascade taps.
- Filtering is float32 overlap-add FFT convolution with short frames (2048-4096 points for
  the default ~300-500-tap cascades), so the transforms stay in cache and the taps' FFTs are
  tiny; the reference's group-delay alignment becomes a per-order delay of the taps, so one
  slice of the summed output serves every order. float32 matches the direct form to ~1e-7 of
  the signal peak.
- LnL sums its ``n_f`` filtered powers in the frequency domain: the powers are formed frame by
  frame, transformed in one batched FFT, weighted by their banks' spectra and summed, then
  inverted once.
- Work is in float32 (the output dtype) except the small filter design, which is float64.

With the default parameters this is about 10x faster than the direct form on a 4-s clip for
algorithm 5 (see docs/benchmarks.md, ``benchmarks/rawboost.py``).

Building blocks are public for tests and for callers that batch their own work:
:func:`notch_filters` / :func:`notch_filter`, :func:`firwin_bandstop`, :func:`fir_filter`
(fast), :func:`fir_filter_direct` (``lfilter`` reference), :func:`norm_wav`, :func:`lnl_noise`,
:func:`isd_noise`, :func:`ssi_noise`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import signal

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


def _uniform(
    rng: np.random.Generator, lo: float, hi: float, size: int | tuple[int, ...] | None = None
):
    """``lo + (hi - lo) * U[0, 1)``: numpy's legacy ``uniform`` semantics, also for ``lo > hi``."""
    return lo + (hi - lo) * rng.random(size)


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


def _check_sr(sr: int, params: RawBoostParams) -> None:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"sr={sr!r}: must be a positive integer sample rate in Hz")
    if params.max_f > sr / 2:
        raise ValueError(
            f"RawBoost parameter max_f={params.max_f!r} is above sr/2={sr / 2:g} Hz: pass max_f <= {sr / 2:g}"
        )


# ----------------------------------------------------------------------------------------------
# Notch-filter banks


@dataclass(frozen=True)
class NotchBank:
    """One random notch-filter bank as drawn by :func:`notch_filters`.

    Attributes:
        taps: float64 cascade taps, length ``sum(num_taps) - len(num_taps) + 1`` (odd),
            peak-normalised on ``freqz``'s grid and scaled by ``10 ** (gain_db / 20)``.
        bands: ``[n_bands, 2]`` band-stop edges ``(f1, f2)`` in Hz, after clamping.
        centres: ``[n_bands]`` drawn centre frequencies fc in Hz.
        num_taps: ``[n_bands]`` odd tap count of each band's FIR.
        gain_db: the drawn gain G in dB.
    """

    taps: np.ndarray
    bands: np.ndarray
    centres: np.ndarray
    num_taps: np.ndarray
    gain_db: float


def firwin_bandstop(num_taps: np.ndarray, f1: np.ndarray, f2: np.ndarray, sr: float) -> np.ndarray:
    """Hamming-windowed band-stop FIRs, one per row, as ``scipy.signal.firwin(c, [f1, f2], fs=sr)``.

    The ideal response (pass [0, f1] and [f2, sr/2]) of an odd-length filter sampled at integer
    offsets ``m`` from its centre is ``(sin(pi f1' m) - sin(pi f2' m)) / (pi m)`` (``f'`` = f over
    Nyquist) and ``1 + f1' - f2'`` at ``m = 0``; it is windowed by a symmetric Hamming window and
    scaled to unit gain at DC, all in one vectorised expression.

    Args:
        num_taps: ``[K]`` odd tap counts.
        f1: ``[K]`` lower stop-band edges, Hz, in (0, sr/2).
        f2: ``[K]`` upper stop-band edges, Hz, in (f1, sr/2).
        sr: sample rate, Hz.

    Returns:
        ``[K, max(num_taps)]`` float64; row k holds its ``num_taps[k]`` taps, then zeros.

    Raises:
        ValueError: if a tap count is even or below 1.
    """
    c = np.asarray(num_taps, dtype=np.int64).reshape(-1, 1)
    if (c < 1).any() or (c % 2 == 0).any():
        raise ValueError(
            f"num_taps: band-stop FIRs need odd tap counts >= 1, got {c.ravel().tolist()}"
        )
    nyq = sr / 2.0
    lo = np.asarray(f1, dtype=np.float64).reshape(-1, 1) / nyq
    hi = np.asarray(f2, dtype=np.float64).reshape(-1, 1) / nyq
    n = np.arange(int(c.max()))[None, :]
    m = n - (c - 1) // 2  # integer offsets from the centre tap
    centre = m == 0
    pm = np.pi * np.where(centre, 1, m)
    h = np.where(centre, 1.0 + lo - hi, (np.sin(lo * pm) - np.sin(hi * pm)) / pm)
    window = 0.54 - 0.46 * np.cos((2.0 * np.pi / np.maximum(c - 1, 1)) * n)
    h *= np.where(n < c, np.where(c > 1, window, 1.0), 0.0)
    return h / h.sum(axis=1, keepdims=True)


def _design(
    rng: np.random.Generator, sr: int, params: RawBoostParams, g_lo: np.ndarray, g_hi: np.ndarray
):
    """Draw and design ``len(g_lo)`` notch banks; returns taps ``[K, Lmax]`` (zero-padded rows),
    lengths ``[K]``, edges f1, f2 and centres ``[K, n_bands]``, tap counts, gains ``[K]``."""
    k, nb = len(g_lo), int(params.n_bands)
    fc = _uniform(rng, params.min_f, params.max_f, (k, nb))
    bw = _uniform(rng, params.min_bw, params.max_bw, (k, nb))
    c = np.trunc(_uniform(rng, params.min_coeff, params.max_coeff, (k, nb))).astype(np.int64)
    c += c % 2 == 0
    gain_db = _uniform(rng, g_lo, g_hi, k)

    f1 = fc - bw / 2
    f2 = fc + bw / 2
    f1 = np.where(f1 <= 0, 1e-3, f1)
    f2 = np.where(f2 >= sr / 2, sr / 2 - 1e-3, f2)
    h = firwin_bandstop(c.ravel(), f1.ravel(), f2.ravel(), sr).reshape(k, nb, -1)

    lengths = c.sum(axis=1) - nb + 1
    longest = int(lengths.max())
    m = 1024  # freqz's default grid (512 points on [0, pi)) = bins 0..511 of a 1024-point DFT
    while m < longest:
        m *= 2
    spectrum = sfft.rfft(h, n=m, axis=-1)
    spectrum = spectrum[:, 0] if nb == 1 else np.prod(spectrum, axis=1)  # the cascade's spectrum
    step = m // 1024
    peak = np.abs(spectrum[:, : 512 * step : step]).max(axis=1)
    taps = sfft.irfft(spectrum, n=m, axis=-1)[:, :longest]
    taps *= (10.0 ** (gain_db / 20.0) / peak)[:, None]
    taps[np.arange(longest)[None, :] >= lengths[:, None]] = (
        0.0  # rounding residue beyond each length
    )
    return taps, lengths, f1, f2, fc, c, gain_db


def notch_filters(
    rng: np.random.Generator,
    sr: int,
    params: RawBoostParams,
    gain_db_ranges: Sequence[tuple[float, float]],
) -> list[NotchBank]:
    """Draw and design ``len(gain_db_ranges)`` independent random notch banks at once.

    Per bank and band: ``fc ~ U(min_f, max_f)``, ``bw ~ U(min_bw, max_bw)``, tap count
    ``int(U(min_coeff, max_coeff))`` plus one if even; edges ``fc -/+ bw/2`` clamped to
    >= 0.001 Hz and <= sr/2 - 0.001 Hz. Then per bank ``G ~ U(lo, hi)`` from its gain range.
    Each band is a Hamming band-stop FIR (:func:`firwin_bandstop`); the cascade is normalised by
    the peak of its magnitude response on ``freqz``'s default grid (512 points on [0, pi)) and
    multiplied by ``10 ** (G / 20)``.

    Random draws, in order: centres, widths, tap counts (each ``[banks, n_bands]``), gains.

    Args:
        rng: the random generator.
        sr: sample rate, Hz.
        params: band/tap settings (``n_bands``, ``min_f`` ... ``max_coeff``).
        gain_db_ranges: one ``(lo, hi)`` dB range per bank.

    Returns:
        One :class:`NotchBank` per gain range.
    """
    _check_sr(sr, params)
    if len(gain_db_ranges) == 0:
        return []
    g = np.asarray(gain_db_ranges, dtype=np.float64).reshape(-1, 2)
    taps, lengths, f1, f2, fc, c, gain_db = _design(rng, sr, params, g[:, 0], g[:, 1])
    return [
        NotchBank(
            taps=taps[i, : lengths[i]].copy(),
            bands=np.stack([f1[i], f2[i]], axis=1),
            centres=fc[i],
            num_taps=c[i],
            gain_db=float(gain_db[i]),
        )
        for i in range(len(g))
    ]


def notch_filter(
    rng: np.random.Generator, sr: int, params: RawBoostParams, gain_db_range: tuple[float, float]
) -> np.ndarray:
    """Taps of one random notch bank (see :func:`notch_filters`; it also returns the bands)."""
    return notch_filters(rng, sr, params, [gain_db_range])[0].taps


# ----------------------------------------------------------------------------------------------
# Filtering


def _ola_plan(n: int, lengths: np.ndarray) -> tuple[int, int, int, int, int]:
    """Overlap-add layout for filtering ``n`` samples with filters of odd ``lengths``.

    The reference keeps ``full_conv(x, b)[d : d + n]`` with ``d = (len(b) + 1) // 2``. Filter k
    is delayed by ``delay - d_k`` (``delay`` the largest ``d``) so that every filter's wanted
    segment starts at ``delay`` of one common convolution; the delayed filters are at most
    ``span = max(lengths)`` long. The FFT size is the power of two (>= 2 * span) with the least
    estimated work (in practice 2048-4096 for the default ~300-500 taps: small, cache-resident
    transforms and no long-filter FFTs).

    Returns:
        ``(nfft, hop, blocks, delay, span)``: frames of ``hop`` input samples are zero-padded
        to ``nfft``; ``blocks`` frames cover ``n + delay`` samples.
    """
    half = (lengths + 1) // 2
    delay = int(half.max())
    span = int((delay - half + lengths).max())
    need = n + delay
    best = None
    nfft = 1024
    while nfft < 2 * span:
        nfft *= 2
    while True:
        hop = nfft - span + 1
        blocks = -(-need // hop)
        cost = blocks * nfft * (np.log2(nfft) + 4.0)
        if best is None or cost < best[0]:
            best = (cost, nfft, hop, blocks)
        if blocks == 1:
            break
        nfft *= 2
    _, nfft, hop, blocks = best
    return nfft, hop, blocks, delay, span


def _frames(x: np.ndarray, rows: int, hop: int, blocks: int, nfft: int) -> np.ndarray:
    """``[rows, blocks, nfft]`` float32 buffer whose row 0 holds ``x`` cut into zero-padded frames
    of ``hop`` samples (the other rows are left for the caller to fill)."""
    frames = np.empty((rows, blocks, nfft), dtype=np.float32)
    frames[0, :, hop:] = 0.0
    whole, rest = divmod(x.size, hop)
    frames[0, :whole, :hop] = x[: whole * hop].reshape(whole, hop)
    frames[0, whole:, :hop] = 0.0
    if rest:
        frames[0, whole, :rest] = x[whole * hop :]
    return frames


def _ola_filter_sum(
    frames: np.ndarray,
    taps: np.ndarray,
    lengths: np.ndarray,
    n: int,
    plan: tuple[int, int, int, int, int],
) -> np.ndarray:
    """``sum_k filterFIR(signal_k, taps[k, :lengths[k]])`` from the framed signals ``frames[k]``
    (see :func:`_frames`), float32 overlap-add FFT convolution; the ``K`` products are summed in
    the frequency domain before the single inverse transform. Returns ``[n]`` float32."""
    nfft, hop, blocks, delay, _ = plan
    rows = frames.shape[0]
    shifted = np.zeros((rows, nfft), dtype=np.float32)
    for k in range(rows):
        s = delay - (int(lengths[k]) + 1) // 2
        shifted[k, s : s + lengths[k]] = taps[k, : lengths[k]]
    spec = sfft.rfft(frames, axis=-1)
    taps_f = sfft.rfft(shifted, axis=-1)
    total = spec[0] * taps_f[0]
    if rows > 1:
        product = np.empty_like(total)
        for k in range(1, rows):
            total += np.multiply(spec[k], taps_f[k], out=product)
    pieces = sfft.irfft(total, n=nfft, axis=-1)
    out = np.empty((blocks + 1, hop), dtype=np.float32)
    out[:blocks] = pieces[:, :hop]
    out[blocks] = 0.0
    out[1:, : nfft - hop] += pieces[:, hop:]
    return out.ravel()[delay : delay + n]


def fir_filter(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The reference ``filterFIR`` (zero-pad, FIR filter, group-delay trim), by FFT convolution.

    Returns ``full_convolution(x, b)[k + (len(b) + 1) // 2]`` for ``k = 0..len(x) - 1`` as
    float32; equal to :func:`fir_filter_direct` to float32 precision.

    Raises:
        ValueError: if ``x`` is not 1-D or ``b`` is not 1-D, non-empty and of odd length.
    """
    x = np.asarray(x, dtype=np.float32)
    b = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or b.ndim != 1 or b.size % 2 == 0:
        raise ValueError(
            f"fir_filter: needs a 1-D signal and 1-D taps of odd length (as RawBoost "
            f"banks have), got shapes {x.shape} and {b.shape}"
        )
    if x.size == 0:
        return x.copy()
    lengths = np.array([b.size])
    plan = _ola_plan(x.size, lengths)
    return _ola_filter_sum(_frames(x, 1, *plan[1:3], plan[0]), b[None, :], lengths, x.size, plan)


def fir_filter_direct(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference-style ``filterFIR``: pad ``len(b) + 1`` zeros, ``lfilter(b, 1, .)``, drop
    ``(len(b) + 1) // 2`` samples at each end (direct form, float64; for tests and benchmarks)."""
    x = np.asarray(x, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    pad = len(b) + 1
    y = signal.lfilter(b, 1.0, np.concatenate([x, np.zeros(pad)]))
    d = pad // 2
    return y[d : d + len(x)]


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
            f"params: expected RawBoostParams (build it with rawboost_params(...)), got {type(params).__name__}"
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
