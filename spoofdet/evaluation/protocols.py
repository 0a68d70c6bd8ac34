"""Scoring protocols: which samples of a clip a detector sees, and how window scores become one score.

Two evaluation lengths (``--length``), recorded with every number they produce:

* ``4s`` (the seeds' protocol, comparable to papers): the **first** 64,600 samples (4.04 s at
  16 kHz); a shorter clip is repeated from its start until 64,600 samples are filled
  (:func:`spoofdet.data.audio.crop_or_pad`). Everything after 4.04 s is ignored.
* ``full``: the whole clip. A clip longer than the window is cut into windows of 64,600 samples
  starting every ``hop`` samples; the last window is aligned to the clip's end, so every sample
  is in at least one window (:func:`window_starts`). The clip's score is the mean of its window
  scores. A clip no longer than the window is repeat-padded exactly as in ``4s``, so short clips
  score the same under both protocols.

Averaging raw scores and then calibrating equals averaging LLRs (the calibration is affine).

Pure numpy/torch here; the Ray Data pipeline (``spoofdet.serve.batch``) and ``spoofdet predict``
both call these functions, so the two protocols are defined once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from spoofdet.data.audio import crop_or_pad

#: Window length of both protocols: 64,600 samples (~4.04 s), as SSL_Anti-spoofing, AASIST, SLS, Nes2Net.
WINDOW = 64_600
#: Default hop of the ``full`` protocol: half a window (50 % overlap).
DEFAULT_HOP = WINDOW // 2
LENGTHS = ("4s", "full")


def describe_protocol(length: str, window: int = WINDOW, hop: int = DEFAULT_HOP) -> dict[str, Any]:
    """What a length protocol does, as recorded in metrics JSON, tables and MLflow tags."""
    check_length(length, hop)
    if length == "4s":
        return {
            "length": "4s",
            "window": window,
            "hop": None,
            "padding": "repeat",
            "description": f"first {window:,} samples ({window / 16000:.2f} s) of each clip; shorter clips "
            "repeat-padded (the seeds' protocol, comparable to papers)",
        }
    return {
        "length": "full",
        "window": window,
        "hop": hop,
        "padding": "repeat",
        "description": f"whole clip: mean score of {window:,}-sample windows every {hop:,} samples, the last "
        "window aligned to the clip's end; clips shorter than a window repeat-padded",
    }


def check_length(length: str, hop: int = DEFAULT_HOP, window: int = WINDOW) -> None:
    """Raise ValueError naming the option when ``length`` or ``hop`` is unusable."""
    if length not in LENGTHS:
        raise ValueError(f"--length must be one of {', '.join(LENGTHS)}, got {length!r}")
    if not 0 < hop <= window:
        raise ValueError(f"--hop must lie in 1..{window} (the window), got {hop}")


def window_starts(num_samples: int, window: int = WINDOW, hop: int = DEFAULT_HOP) -> list[int]:
    """Start offsets of the windows covering a clip of ``num_samples`` samples.

    ``[0]`` for a clip no longer than ``window``; otherwise ``0, hop, 2 hop, ...`` while a window
    fits, plus a last window ending exactly at the clip's end if those stop short of it.
    """
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def clip_windows(
    wave: np.ndarray, length: str, *, window: int = WINDOW, hop: int = DEFAULT_HOP
) -> np.ndarray:
    """The ``[k, window]`` float32 windows a clip is scored on under protocol ``length``.

    Raises:
        ValueError: an empty waveform or an unknown protocol.
    """
    check_length(length, hop, window)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.size == 0:
        raise ValueError("cannot score an empty waveform")
    if length == "4s" or wave.size <= window:
        return crop_or_pad(wave, window)[None, :]
    return np.stack([wave[s : s + window] for s in window_starts(wave.size, window, hop)])


def score_waves(
    model: Any, waves: np.ndarray, *, device: str = "cpu", batch_size: int = 16
) -> np.ndarray:
    """Raw detector scores (higher = more bona fide) of ``waves[n, T]``, in batches, without gradients.

    Args:
        model: a :class:`spoofdet.models.Detector` (anything with ``score(wave[B, T]) -> [B]``), in eval mode.
        waves: float32 ``[n, T]`` at 16 kHz.
        device: where ``model`` lives (``cpu``, ``cuda``, ``cuda:1``).
        batch_size: windows per forward pass.
    """
    import torch

    waves = np.asarray(waves, dtype=np.float32)
    out = np.empty(len(waves), dtype=np.float64)
    with torch.inference_mode():
        for i in range(0, len(waves), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(waves[i : i + batch_size])).to(device)
            out[i : i + len(x)] = model.score(x).float().cpu().numpy()
    return out


def mean_by_id(
    ids: Sequence[str], values: Sequence[float] | np.ndarray
) -> dict[str, tuple[float, int]]:
    """Per id: the mean of its values and how many there were (window scores -> clip score)."""
    sums: dict[str, list[float]] = {}
    for utt, v in zip(ids, np.asarray(values, dtype=np.float64)):
        acc = sums.setdefault(str(utt), [0.0, 0])
        acc[0] += float(v)
        acc[1] += 1
    return {k: (s / n, int(n)) for k, (s, n) in sums.items()}
