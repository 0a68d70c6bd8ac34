"""Synthetic speech clips: bona fide and spoof differ by how they are produced, never by a cue.

Bona fide clips come from a source-filter model of voiced speech with natural cycle-to-cycle
jitter and shimmer, pitch-synchronous breath noise and fricative bursts. Spoof clips are the
same kind of utterance passed through a "vocoder" (:data:`SPOOF_METHODS`): a buzz-excited
source-filter vocoder (no jitter), a Griffin-Lim magnitude-only resynthesis, a harmonic
(sinusoidal) resynthesis, or a band-energy codec with noise substitution. Duration, loudness and
sample rate are drawn from the same distributions for both classes; :func:`channel` applies the
same transmission condition to both. Public names are importable from
:mod:`spoofdet.testing.synthetic`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal

# ----------------------------------------------------------------------------- signal models

VOWELS = np.array(  # F1, F2, F3 (Hz) of a few vowels
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [530, 1840, 2480],
        [300, 870, 2240],
        [640, 1190, 2390],
        [440, 1020, 2240],
    ],
    dtype=np.float64,
)
SPOOF_METHODS = ("buzz", "griffinlim", "harmonic", "bandcodec")


def _glottal(phase_frac: np.ndarray, open_q: float = 0.45, close_q: float = 0.15) -> np.ndarray:
    """Rosenberg glottal flow as a function of the fractional cycle phase in [0, 1)."""
    p = phase_frac
    g = np.zeros_like(p)
    rise = p < open_q
    g[rise] = 0.5 * (1.0 - np.cos(np.pi * p[rise] / open_q))
    fall = (p >= open_q) & (p < open_q + close_q)
    g[fall] = np.cos(0.5 * np.pi * (p[fall] - open_q) / close_q)
    return g


def _plan(rng: np.random.Generator, sr: int, seconds: float) -> dict[str, Any]:
    """Draw the 'linguistic' content of an utterance: syllables, vowels, f0 contour, level."""
    n = max(int(round(sr * seconds)), 1)
    t = np.arange(n) / sr
    # syllables: voiced spans separated by short gaps (some holding a fricative)
    env = np.zeros(n)
    fric = np.zeros(n)
    vowel_w = np.zeros((len(VOWELS), n))
    pos = int(rng.uniform(0.02, 0.15) * sr)
    while pos < n:
        dur = int(rng.uniform(0.12, 0.32) * sr)
        end = min(pos + dur, n)
        span = end - pos
        if span > 8:
            win = np.sin(np.linspace(0, np.pi, span)) ** 0.6
            env[pos:end] = np.maximum(env[pos:end], win * rng.uniform(0.6, 1.0))
            vowel_w[rng.integers(len(VOWELS)), pos:end] += win
        gap = int(rng.uniform(0.03, 0.16) * sr)
        if rng.random() < 0.35 and end + gap <= n and gap > 8:
            fric[end : end + gap] = np.sin(np.linspace(0, np.pi, gap)) * rng.uniform(0.1, 0.3)
        pos = end + gap
    vowel_w /= np.maximum(vowel_w.sum(axis=0, keepdims=True), 1e-9)
    f0_base = rng.uniform(90, 230)
    f0 = f0_base * (
        1
        + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 2 * np.pi))
        - 0.05 * t / max(seconds, 1e-3)
    )
    return {
        "sr": sr,
        "n": n,
        "env": env,
        "fric": fric,
        "vowel_w": vowel_w,
        "f0": f0,
        "formant_shift": rng.uniform(0.9, 1.15),
        "level_db": rng.uniform(-30, -20),
    }


def _formant_filter(x: np.ndarray, plan: dict[str, Any], vowel: int) -> np.ndarray:
    sr = plan["sr"]
    sos = []
    for k, f in enumerate(VOWELS[vowel] * plan["formant_shift"]):
        if f >= 0.45 * sr:
            continue
        bw = 60.0 + 40.0 * k
        r = np.exp(-np.pi * bw / sr)
        theta = 2 * np.pi * f / sr
        sos.append([1 - r, 0.0, 0.0, 1.0, -2 * r * np.cos(theta), r * r])
    return signal.sosfilt(np.array(sos), x) if sos else x


def _vocal_tract(source: np.ndarray, plan: dict[str, Any]) -> np.ndarray:
    out = np.zeros_like(source)
    for v in np.flatnonzero(plan["vowel_w"].any(axis=1)):
        out += plan["vowel_w"][v] * _formant_filter(source, plan, v)
    return out


def _normalise(x: np.ndarray, level_db: float) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2)) + 1e-12
    y = x * (10 ** (level_db / 20) / rms)
    peak = np.max(np.abs(y))
    return (y / peak * 0.95 if peak > 0.95 else y).astype(np.float32)


def _fricatives(rng: np.random.Generator, plan: dict[str, Any]) -> np.ndarray:
    sr = plan["sr"]
    noise = rng.standard_normal(plan["n"])
    hp = signal.butter(4, min(3500, 0.4 * sr), "highpass", fs=sr, output="sos")
    return signal.sosfilt(hp, noise) * plan["fric"]


def _natural(rng: np.random.Generator, plan: dict[str, Any]) -> np.ndarray:
    """Bona fide production: jittered, shimmered glottal pulses + pitch-synchronous breath."""
    sr, f0 = plan["sr"], plan["f0"]
    phase0 = np.cumsum(f0) / sr
    n_cycles = int(phase0[-1]) + 2
    jitter = 1 + rng.normal(0, 0.012, n_cycles)  # ~1.2 % cycle-to-cycle period jitter
    shimmer = 1 + rng.normal(0, 0.08, n_cycles)  # ~8 % amplitude shimmer
    cyc0 = phase0.astype(np.int64)
    phase = np.cumsum(f0 * jitter[cyc0]) / sr
    cyc = np.minimum(phase.astype(np.int64), n_cycles - 1)
    frac = phase - np.floor(phase)
    flow = _glottal(frac, open_q=rng.uniform(0.4, 0.55)) * shimmer[cyc]
    source = np.diff(flow, prepend=0.0)
    breath = rng.standard_normal(plan["n"]) * (frac < 0.5) * 0.02 * np.abs(source).max()
    voiced = _vocal_tract(source + breath, plan) * plan["env"]
    return voiced + 0.05 * np.abs(voiced).max() * _fricatives(rng, plan)


def _stft(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1]
    pad = np.pad(
        x, (n_fft // 2, n_fft // 2 + n_fft), mode="reflect" if len(x) > n_fft else "constant"
    )
    frames = np.lib.stride_tricks.sliding_window_view(pad, n_fft)[::hop]
    return np.fft.rfft(frames * win, axis=1)


def _istft(spec: np.ndarray, n: int, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec, n=n_fft, axis=1) * win
    k = n_fft // hop  # overlap-add as k shifted block sums (n_fft is a multiple of hop)
    n_frames = len(frames)
    out = np.zeros((n_frames + k - 1, hop))
    norm = np.zeros((n_frames + k - 1, hop))
    w2 = (win**2).reshape(k, hop)
    for j in range(k):
        out[j : j + n_frames] += frames[:, j * hop : (j + 1) * hop]
        norm[j : j + n_frames] += w2[j]
    out = out.ravel() / np.maximum(norm.ravel(), 1e-8)
    return out[n_fft // 2 : n_fft // 2 + n]


def _griffin_lim(rng: np.random.Generator, x: np.ndarray, iters: int) -> np.ndarray:
    mag = np.abs(_stft(x))
    spec = mag * np.exp(2j * np.pi * rng.random(mag.shape))
    y = _istft(spec, len(x))
    for _ in range(iters):
        y = _istft(mag * np.exp(1j * np.angle(_stft(y))), len(x))
    return y


def _buzz(rng: np.random.Generator, plan: dict[str, Any]) -> np.ndarray:
    """Classic source-filter vocoder: perfectly periodic pulses, stationary noise, no jitter."""
    sr, f0 = plan["sr"], plan["f0"]
    phase = np.cumsum(f0) / sr
    source = np.diff(_glottal(phase - np.floor(phase)), prepend=0.0)
    noise = rng.standard_normal(plan["n"]) * 0.01 * np.abs(source).max()
    voiced = _vocal_tract(source + noise, plan) * plan["env"]
    return voiced + 0.05 * np.abs(voiced).max() * _fricatives(rng, plan)


def _harmonic(
    rng: np.random.Generator, plan: dict[str, Any], n_harm: int = 40, step: int = 80
) -> np.ndarray:
    """Sinusoidal resynthesis: harmonics of the f0 contour, amplitudes sampled from the formant
    envelope every ``step`` samples, all harmonics in phase (no glottal pulse shape, no jitter)."""
    sr, f0, n = plan["sr"], plan["f0"], plan["n"]
    h = np.arange(1, n_harm + 1)
    coarse = np.arange(0, n, step)
    fh = f0[coarse, None] * h  # (m, H) harmonic frequencies
    amp = np.zeros_like(fh)
    w = plan["vowel_w"][:, coarse]
    for v in np.flatnonzero(w.any(axis=1)):
        formants = VOWELS[v] * plan["formant_shift"]
        resp = sum(1.0 / (1.0 + ((fh - f) / (60 + 40 * k)) ** 2) for k, f in enumerate(formants))
        amp += w[v][:, None] * resp
    amp *= (fh < 0.45 * sr) / h
    amp = np.repeat(amp, step, axis=0)[:n]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.einsum("nh,nh->n", amp, np.sin(phase[:, None] * h))
    y *= plan["env"]
    return y + 0.05 * np.abs(y).max() * _fricatives(rng, plan)


def _bandcodec(
    rng: np.random.Generator, x: np.ndarray, sr: int, n_bands: int = 24, step_db: float = 3.0
) -> np.ndarray:
    """A crude codec: quantised band energies, and above a cut-off, noise substitution."""
    spec = _stft(x)
    mag, ph = np.abs(spec), np.angle(spec)
    edges = np.unique(np.geomspace(1, mag.shape[1], n_bands + 1).astype(int))
    cut = int(mag.shape[1] * rng.uniform(0.3, 0.5))
    out = np.zeros_like(
        spec
    )  # bin 0 (DC) is never written below: it must not be left uninitialised
    for lo, hi in zip(edges[:-1], edges[1:]):
        e = np.sqrt(np.mean(mag[:, lo:hi] ** 2, axis=1, keepdims=True)) + 1e-9
        eq = 10 ** (np.round(20 * np.log10(e) / step_db) * step_db / 20)
        shape = mag[:, lo:hi] / e
        band_phase = (
            ph[:, lo:hi] if lo < cut else rng.uniform(-np.pi, np.pi, (mag.shape[0], hi - lo))
        )
        band_mag = eq * (shape if lo < cut else 1.0)
        out[:, lo:hi] = band_mag * np.exp(1j * band_phase)
    return _istft(out, len(x))


def bonafide_clip(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """One bona fide clip: float32 mono at ``sr``."""
    plan = _plan(rng, sr, seconds)
    return _normalise(_natural(rng, plan), plan["level_db"])


def spoof_clip(rng: np.random.Generator, sr: int, seconds: float, method: str) -> np.ndarray:
    """One spoof clip produced by ``method`` (one of :data:`SPOOF_METHODS`): float32 mono at ``sr``."""
    plan = _plan(rng, sr, seconds)
    if method == "buzz":
        y = _buzz(rng, plan)
    elif method == "griffinlim":
        y = _griffin_lim(rng, _natural(rng, plan), iters=int(rng.integers(1, 5)))
    elif method == "harmonic":
        y = _harmonic(rng, plan)
    elif method == "bandcodec":
        y = _bandcodec(rng, _natural(rng, plan), sr)
    else:
        raise ValueError(f"unknown spoof method {method!r}: expected one of {SPOOF_METHODS}")
    return _normalise(y, plan["level_db"])


def channel(x: np.ndarray, sr: int, codec: str, rng: np.random.Generator) -> np.ndarray:
    """Apply a transmission/compression condition (same for both classes): band-limiting plus
    quantisation noise standing in for telephony codecs and lossy media compression."""
    if codec in ("none", "nocodec"):
        return x
    narrow = {"alaw", "ulaw", "pstn", "gsm", "g722"}
    if codec in narrow:
        lo, hi = (50, 7000) if codec == "g722" else (300, 3400)
        y = signal.sosfilt(
            signal.butter(6, [lo, min(hi, 0.45 * sr)], "bandpass", fs=sr, output="sos"), x
        )
        bits = 6 if codec == "gsm" else 8
    else:
        cutoff = {"low": 4000, "high": 7000}.get(codec.split("_")[0], 5500)
        y = signal.sosfilt(
            signal.butter(8, min(cutoff, 0.45 * sr), "lowpass", fs=sr, output="sos"), x
        )
        bits = 8 if codec.startswith("low") else 10
    mu = 255.0
    comp = np.sign(y) * np.log1p(mu * np.minimum(np.abs(y), 1)) / np.log1p(mu)
    q = np.round(comp * 2 ** (bits - 1)) / 2 ** (bits - 1)
    return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu).astype(np.float32)
