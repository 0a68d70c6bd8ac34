"""Batches by total duration: clips of mixed lengths, bucketed so padding stays small (numpy, no Ray).

With ``crop: none`` (:mod:`spoofdet.data.transforms`) training clips keep their own lengths, so a
batch of a fixed number of rows would be padded to its longest clip. Instead, as SpeechBrain's
dynamic batching does, a worker's row stream is cut into windows of ``window`` rows (its local
shuffle window); each window is sorted by length and packed greedily into batches whose padded
size, ``longest clip x rows``, stays within ``batch_samples`` (:func:`pack_by_duration`); the
window's batches are emitted in a seeded random order (:func:`iter_duration_batches`).

The rule, per epoch: every row the stream yields is in exactly one batch; nothing is dropped. The
last window is whatever rows are left, so the epoch's last batches may be smaller. A clip longer
than ``batch_samples`` on its own (not possible when ``max_seconds <= batch_seconds``) is a batch
of one row. For a fixed input order and seed, the batches are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from spoofdet.data import DataError


def pad_waves(waves: Any) -> tuple[np.ndarray, np.ndarray]:
    """Clips of different lengths -> ``(wave [B, Tmax] float32 zero-padded at the end, lengths [B])``.

    ``waves`` is a sequence of 1-D arrays (a ragged object array) or a 2-D array (all rows full).
    """
    lengths = np.asarray([len(w) for w in waves], dtype=np.int64)
    out = np.zeros((len(lengths), int(lengths.max(initial=0))), np.float32)
    for i, w in enumerate(waves):
        out[i, : lengths[i]] = w
    return out, lengths


def pack_by_duration(lengths: Sequence[int], batch_samples: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches with ``max(length) * rows <= batch_samples``.

    Rows are taken shortest first (ties by index) and a batch is closed when the next row would
    push its padded size over ``batch_samples``; so a batch holds rows of neighbouring lengths.
    A row longer than ``batch_samples`` forms a batch by itself.
    """
    if batch_samples <= 0:
        raise DataError(f"data.batch_seconds must be positive, got {batch_samples} samples")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        if current and int(lengths[i]) * (len(current) + 1) > batch_samples:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_fraction(batch_lengths: Iterable[Sequence[int]]) -> float:
    """Padded samples / all samples of batches given as their rows' lengths (each batch padded to
    its longest row): 0.0 for no padding."""
    padded = total = 0
    for lengths in batch_lengths:
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(lengths):
            size = int(lengths.max()) * len(lengths)
            total += size
            padded += size - int(lengths.sum())
    return padded / total if total else 0.0


def _ragged(wave: Any) -> np.ndarray:
    """A chunk's ``wave`` column as a 1-D object array of 1-D clips (from ragged or 2-D)."""
    out = np.empty(len(wave), dtype=object)
    for i, w in enumerate(wave):
        out[i] = np.asarray(w, dtype=np.float32)
    return out


def _take(rows: dict[str, np.ndarray], idx: list[int]) -> dict[str, np.ndarray]:
    """Rows ``idx`` of a window as one numpy batch: ``wave`` zero-padded plus ``lengths``."""
    out = {k: v[np.asarray(idx, dtype=np.int64)] for k, v in rows.items() if k != "wave"}
    out["wave"], out["lengths"] = pad_waves(rows["wave"][np.asarray(idx, dtype=np.int64)])
    return out


def iter_duration_batches(
    chunks: Iterable[dict[str, np.ndarray]], *, batch_samples: int, window: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Re-batch a stream of numpy row chunks by total duration (see the module docstring).

    Args:
        chunks: numpy batches with a ``wave`` column (ragged object array or 2-D) and per-row
            columns (``label``, ``utt_id``, ...), e.g. Ray Data's ``iter_batches``.
        batch_samples: the most padded samples per batch (``batch_seconds`` x 16,000).
        window: rows sorted together; larger windows pad less and cost more memory.
        seed: orders each window's batches.

    Yields:
        numpy batches: ``wave [B, Tmax] float32`` (zero-padded), ``lengths [B] int64`` and the
        chunks' other columns, ready for :class:`~spoofdet.data.collate.BatchCollate`.
    """
    if window <= 0:
        raise DataError(f"data.shuffle_buffer must be positive for duration batches, got {window}")
    rng = np.random.default_rng(seed)
    held: list[dict[str, np.ndarray]] = []
    n_held = 0

    def flush() -> Iterator[dict[str, np.ndarray]]:
        rows = {k: np.concatenate([c[k] for c in held]) for k in held[0]}
        batches = pack_by_duration([len(w) for w in rows["wave"]], batch_samples)
        for b in rng.permutation(len(batches)).tolist():
            yield _take(rows, batches[b])

    for chunk in chunks:
        if "wave" not in chunk:
            raise DataError(
                "duration batches need waveforms; cached-feature sources have fixed-length "
                "features: leave data.batch_seconds unset"
            )
        if not len(chunk["wave"]):
            continue
        held.append({**chunk, "wave": _ragged(chunk["wave"])})
        n_held += len(chunk["wave"])
        if n_held >= window:
            yield from flush()
            held, n_held = [], 0
    if held:
        yield from flush()
