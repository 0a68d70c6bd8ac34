"""Batch scoring with Ray Data: a shard folder or a folder of audio -> one score per clip.

Pipeline (one per eval set; ``spoofdet.serve.score_sets`` runs it for ``ray_jobs/score.py``)::

    read_parquet(OUT/shards/*.parquet: utt_id, audio) | from_arrow(listing: utt_id, source_path)
      -> map_batches(decode_shard_rows | decode_files)   CPU tasks: FLAC bytes (only the first
            window for 4s) or any audio file -> 16 kHz -> windows (spoofdet.evaluation.protocols:
            one row per window, fixed shape [64,600], so no ragged tensors in blocks)
      -> map_batches(WindowScorer, ActorPoolStrategy(N), num_gpus=G)   actor pool, the model
            loaded once per actor
      -> driver: mean of the window scores of each clip (ClipScores)

A clip that cannot be decoded becomes one row with an ``error`` (never dropped): the scorer
skips it and :class:`ClipScores` lists it. For shard rows the error is ``<reason>: <detail>
(shard <file>)`` with the reasons of the training readers (``decode_error``, ``empty_audio``:
:data:`spoofdet.data.transforms.SKIP_REASONS`). Needs Ray; everything it calls is importable
without.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spoofdet.evaluation.protocols import DEFAULT_HOP, WINDOW, clip_windows, mean_by_id, score_waves
from spoofdet.serve.registry import ModelRef, load_detector


def _rows(
    utts: list[str], windows: list[np.ndarray], errors: list[str], window: int
) -> dict[str, np.ndarray]:
    return {
        "utt_id": np.asarray(utts, dtype=object),
        "wave": np.concatenate(windows) if windows else np.zeros((0, window), np.float32),
        "error": np.asarray(errors, dtype=object),
    }


def _add(
    out: tuple[list, list, list], utt: str, wins: np.ndarray | None, error: str, window: int
) -> None:
    utts, windows, errors = out
    if wins is None:  # one placeholder row carries the error to the driver
        wins = np.zeros((1, window), np.float32)
    utts.extend([utt] * len(wins))
    windows.append(wins.astype(np.float32, copy=False))
    errors.extend([error] * len(wins))


def decode_shard_rows(
    batch: dict[str, np.ndarray], *, length: str, window: int = WINDOW, hop: int = DEFAULT_HOP
) -> dict[str, np.ndarray]:
    """Shard rows (``utt_id``, ``audio`` FLAC bytes, ``path`` if read) -> window rows
    ``utt_id, wave[window], error``; a row that cannot be decoded is decoded as the training
    readers do (:func:`~spoofdet.data.transforms.decode_clip`) and gets their reason."""
    from spoofdet.data.transforms import decode_clip, one_line

    out: tuple[list, list, list] = ([], [], [])
    paths = batch["path"] if "path" in batch else [None] * len(batch["utt_id"])
    for utt, data, path in zip(batch["utt_id"], batch["audio"], paths):
        where = f" (shard {path})" if path is not None else ""
        wave, reason, detail = decode_clip(data, 0, window if length == "4s" else None)
        if wave is None:
            _add(out, str(utt), None, f"{reason}: {detail}{where}", window)
            continue
        try:
            _add(out, str(utt), clip_windows(wave, length, window=window, hop=hop), "", window)
        except Exception as exc:  # noqa: BLE001 - any failure is reported per clip, not fatal
            _add(out, str(utt), None, f"decode_error: {one_line(exc)}{where}", window)
    return _rows(*out, window)


def decode_files(
    batch: dict[str, np.ndarray], *, length: str, window: int = WINDOW, hop: int = DEFAULT_HOP
) -> dict[str, np.ndarray]:
    """File rows (``utt_id``, ``source_path``) -> window rows; files are resampled to 16 kHz
    (``load_16k``)."""
    from spoofdet.data.audio import AudioError, load_16k

    out: tuple[list, list, list] = ([], [], [])
    for utt, path in zip(batch["utt_id"], batch["source_path"]):
        try:
            wave, _ = load_16k(str(path))
            _add(out, str(utt), clip_windows(wave, length, window=window, hop=hop), "", window)
        except AudioError as exc:
            _add(out, str(utt), None, str(exc), window)
    return _rows(*out, window)


class WindowScorer:
    """Ray Data actor: loads the detector once, then maps window rows to raw scores."""

    def __init__(
        self, ref: ModelRef, device: str = "cpu", threads: int = 1, batch_size: int = 16
    ) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.detector = load_detector(ref, device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray([e == "" for e in batch["error"]], dtype=bool)
        raw = np.full(len(ok), np.nan)
        if ok.any():
            raw[ok] = score_waves(
                self.detector.model,
                np.asarray(batch["wave"])[ok],
                device=self.detector.device,
                batch_size=self.batch_size,
            )
        return {"utt_id": batch["utt_id"], "raw": raw, "error": batch["error"]}


@dataclass
class ClipScores:
    """Per clip: the raw score (mean over its windows) and the number of windows; failures apart."""

    raw: dict[str, float]
    n_windows: dict[str, int]
    errors: dict[str, str]


def shard_dataset(path: str) -> Any:
    """The rows of a shard folder written by ``spoofdet prepare``: ``utt_id``, ``audio`` and
    ``path`` (the row's shard file, which names a row that cannot be decoded)."""
    import ray

    from spoofdet.data.pipeline import Source, shard_files

    ds = ray.data.read_parquet(shard_files(Source(path)), include_paths=True)
    return ds.select_columns(["utt_id", "audio", "path"])


def folder_dataset(table: Any) -> Any:
    """Rows for a folder listing (``spoofdet.data.corpora.prepare_folder(...).table``)."""
    import ray

    return ray.data.from_arrow(table.select(["utt_id", "source_path"]))


def score_dataset(
    ds: Any,
    ref: ModelRef,
    *,
    files: bool,
    length: str,
    hop: int = DEFAULT_HOP,
    window: int = WINDOW,
    batch_size: int = 16,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    decode_rows: int = 8,
) -> ClipScores:
    """Run the pipeline of the module docstring over ``ds`` and gather one score per clip.

    Args:
        ds: from :func:`shard_dataset` (``files=False``) or :func:`folder_dataset` (``files=True``).
        ref: the resolved model (every actor loads this exact version).
        length, hop, window: the protocol (:mod:`spoofdet.evaluation.protocols`).
        batch_size: windows per forward pass.
        actors: size of the scoring actor pool.
        gpus_per_actor: GPUs per actor (0: score on CPU).
        cpus_per_actor: CPUs per actor (also its torch threads when on CPU).
        decode_rows: clips per decode task batch.
    """
    decode = decode_files if files else decode_shard_rows
    ds = ds.map_batches(
        decode,
        batch_size=decode_rows,
        batch_format="numpy",
        fn_kwargs={"length": length, "window": window, "hop": hop},
    )
    from ray.data import ActorPoolStrategy

    device = "cuda" if gpus_per_actor > 0 else "cpu"
    ds = ds.map_batches(
        WindowScorer,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=actors),
        num_gpus=gpus_per_actor or None,
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs={
            "ref": ref,
            "device": device,
            "threads": int(cpus_per_actor),
            "batch_size": batch_size,
        },
    )
    return _gather(ds)


def _gather(ds: Any) -> ClipScores:
    """Driver side: each clip's mean window score, or its error."""
    ids, raw, errors = [], [], {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for utt, value, err in zip(batch["utt_id"], batch["raw"], batch["error"]):
            if err:
                errors[str(utt)] = str(err)
            else:
                ids.append(str(utt))
                raw.append(float(value))
    means = mean_by_id(ids, raw)
    return ClipScores(
        {k: v[0] for k, v in means.items()}, {k: v[1] for k, v in means.items()}, errors
    )
