"""Random notch-filter banks and FIR filtering by FFT, the building blocks of RawBoost.

A bank is a cascade of ``n_bands`` Hamming band-stop FIRs with random centre, width and odd tap
count, peak-normalised on ``freqz``'s grid and given a random gain (:func:`notch_filters`).
:func:`fir_filter` is the reference ``filterFIR`` (zero-pad, filter, group-delay trim) by
float32 overlap-add FFT convolution; :func:`fir_filter_direct` is the ``lfilter`` form it is
tested against. Everything here is importable from :mod:`spoofdet.data.rawboost`; why it is
shaped this way (one batched design, short FFT frames): docs/design/rawboost.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import fft as sfft
from scipy import signal

if TYPE_CHECKING:
    from spoofdet.data.rawboost import RawBoostParams


def _uniform(
    rng: np.random.Generator, lo: float, hi: float, size: int | tuple[int, ...] | None = None
):
    """``lo + (hi - lo) * U[0, 1)``: numpy's legacy ``uniform`` semantics, also for ``lo > hi``."""
    return lo + (hi - lo) * rng.random(size)


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
    # every band of every bank in one vectorised design (the reference calls firwin ~25 times)
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
        cost = blocks * nfft * (np.log2(nfft) + 4.0)  # short frames stay in cache: cheapest wins
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
    # float32, the output dtype: within ~1e-7 of the signal peak of the float64 direct form
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
    # products summed in the frequency domain: LnL's n_f orders cost one inverse FFT, not n_f
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
