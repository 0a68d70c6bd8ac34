"""Audio I/O: decode any libsndfile format, mix to mono, resample to 16 kHz, encode FLAC.

The shard job calls :func:`load_16k` once per source file; training and scoring only ever call
:func:`decode_flac` on the stored bytes. Quarantine reasons are the strings in :data:`REASONS`.
"""

from __future__ import annotations

import io
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from spoofdet.data.schema import SAMPLE_RATE
from spoofdet.errors import SpoofdetError

#: Why a source file is quarantined instead of sharded.
REASONS = ("missing_file", "empty_file", "decode_error", "non_finite", "too_short")


class AudioError(SpoofdetError):
    """A file that cannot become a training row; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def to_mono(wave: np.ndarray) -> np.ndarray:
    """``[T]`` or ``[T, C]`` -> ``[T]`` float32 (channel mean)."""
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(wave: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited rational resampling (polyphase FIR, Kaiser window; scipy ``resample_poly``).

    The anti-aliasing low-pass sits at the lower Nyquist frequency, so 44.1 kHz input loses
    everything above 8 kHz instead of folding it back. Output length is ``ceil(T * sr_out / sr_in)``.
    """
    if sr_in == sr_out:
        return np.ascontiguousarray(wave, dtype=np.float32)
    g = gcd(int(sr_in), int(sr_out))
    up, down = sr_out // g, sr_in // g
    return resample_poly(wave.astype(np.float64), up, down, window=("kaiser", 5.0)).astype(
        np.float32
    )


def load_16k(path: str, *, min_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Decode ``path``, mix to mono, resample to 16 kHz.

    Returns:
        ``(wave[T] float32 at 16 kHz, original sample rate)``.

    Raises:
        AudioError: with reason ``missing_file``, ``empty_file``, ``decode_error``,
            ``non_finite`` (NaN/Inf samples) or ``too_short`` (fewer than ``min_seconds``).
    """
    try:
        with sf.SoundFile(path) as fh:
            sr = fh.samplerate
            wave = fh.read(dtype="float32", always_2d=False)
    except FileNotFoundError as exc:
        raise AudioError("missing_file", str(exc)) from None
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        import os

        if not os.path.exists(path):
            raise AudioError("missing_file", f"no such file: {path}") from None
        if os.path.getsize(path) == 0:
            raise AudioError("empty_file", f"0 bytes: {path}") from None
        raise AudioError("decode_error", f"{path}: {exc}") from None
    wave = to_mono(wave)
    if wave.size == 0:
        raise AudioError("empty_file", f"no samples: {path}")
    if not np.isfinite(wave).all():
        bad = int((~np.isfinite(wave)).sum())
        raise AudioError("non_finite", f"{bad} NaN/Inf sample(s): {path}")
    if wave.size / sr < min_seconds:
        raise AudioError("too_short", f"{wave.size / sr:.4f} s < {min_seconds} s: {path}")
    return resample(wave, sr), sr


def encode_flac(wave: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    """Encode ``wave[T]`` (float, nominally in [-1, 1]) as 16-bit FLAC bytes, clipping overshoot."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 32767 / 32768), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """Inverse of :func:`encode_flac`: ``(wave[T] float32, sample rate)``."""
    wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return to_mono(wave), sr


def crop_or_pad(wave: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """``wave[offset:offset+length]``; a shorter clip is tiled (repetition padding, as the seeds do).

    The seeds tile ``ceil(N / len) + 1`` times and cut to N; the result is the same as repeating
    the clip from its start until N samples are filled.
    """
    wave = wave[offset:]
    if len(wave) == 0:
        raise ValueError(
            f"crop_or_pad: nothing to crop (empty waveform or offset {offset} past its end)"
        )
    if len(wave) >= length:
        return np.ascontiguousarray(wave[:length], dtype=np.float32)
    reps = -(-length // len(wave)) + 1
    return np.tile(np.asarray(wave, dtype=np.float32), reps)[:length]
