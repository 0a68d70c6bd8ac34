"""Cached front-end features: the on-disk format written by ``data_prep.features`` and read by training.

A feature folder has the shard folder's layout, so a recipe's ``data.train[i].shards`` may point
at one unchanged::

    shards/part-*.parquet   utt_id, corpus, label, num_samples, feats, frames, dim
    metadata.parquet        the source shards' metadata rows (no audio, no features)
    files.json              the file list (name, rows, bytes, sha256 of the shards and of
                            metadata.parquet): readers check the folder against it
                            (``spoofdet.data.shards.checked_shard_files``)
    features.json           {"frontend", "layer", "dtype", "num_samples", "dim", "frames", ...}
    frontend.pt             the front-end weights the features came from (to rebuild a waveform model)

``feats`` holds one clip's features as raw bytes: ``frames x dim`` values, row-major, in
``dtype`` (float16 by default; little-endian). The clip was cut to its first ``num_samples``
samples (repeat-padded when shorter) before the front-end ran, as ``spoofdet.data.pipeline`` does for
evaluation, so every row has the same ``frames``.

Pure numpy; no torch, no Ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from spoofdet.errors import SpoofdetError

FEATURES_FILE = "features.json"
FRONTEND_WEIGHTS = "frontend.pt"
FEATURE_COLUMNS = ["utt_id", "corpus", "label", "num_samples", "feats", "frames", "dim"]
DTYPES = ("float16", "float32")
INFO_KEYS = ("frontend", "layer", "dtype", "num_samples", "dim", "frames")


class FeatureError(SpoofdetError):
    """A feature folder or feature row is unusable; the message names it."""


def encode_feats(feats: np.ndarray, dtype: str = "float16") -> bytes:
    """``feats[T, D]`` -> row-major little-endian bytes in ``dtype``."""
    if dtype not in DTYPES:
        raise FeatureError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if feats.ndim != 2:
        raise FeatureError(f"feats must be (frames, dim), got shape {feats.shape}")
    return np.ascontiguousarray(feats, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def decode_feats(data: bytes, frames: int, dim: int, dtype: str = "float16") -> np.ndarray:
    """Bytes of one row -> ``float32[frames, dim]``; an error if the byte count does not match."""
    dt = np.dtype(dtype).newbyteorder("<")
    if len(data) != frames * dim * dt.itemsize:
        raise FeatureError(
            f"feats holds {len(data)} bytes, expected frames {frames} x dim {dim} x {dt.itemsize} "
            f"({dtype}); the feature folder is corrupt or its features.json does not match"
        )
    return np.frombuffer(data, dtype=dt).reshape(frames, dim).astype(np.float32)


def is_feature_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds cached features (a ``features.json``) rather than audio shards."""
    return os.path.isfile(os.path.join(os.fspath(path), FEATURES_FILE))


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """``features.json`` of a feature folder, checked for the keys training needs."""
    file = os.path.join(os.fspath(path), FEATURES_FILE)
    try:
        with open(file) as f:
            info = json.load(f)
    except FileNotFoundError:
        raise FeatureError(
            f"{path}: no {FEATURES_FILE}; write it with `python -m data_prep.features`"
        ) from None
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise FeatureError(f"{file}: missing keys {missing}")
    return info


def check_compatible(infos: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """All feature folders of one run must come from the same front-end, layer and crop.

    Args:
        infos: ``(name, features.json contents)`` per source.

    Returns:
        The first info (they agree).

    Raises:
        FeatureError: naming the first source that differs and how.
    """
    first_name, first = infos[0]
    for name, info in infos[1:]:
        diff = [
            k
            for k in ("frontend", "layer", "num_samples", "dim", "frames")
            if info.get(k) != first.get(k)
        ]
        if diff:
            raise FeatureError(
                f"{name}: features differ from {first_name} in "
                + ", ".join(f"{k} ({info.get(k)!r} vs {first.get(k)!r})" for k in diff)
                + "; extract every source with the same --frontend, --layer and num_samples"
            )
    return first


def feature_rows(
    batch: dict[str, np.ndarray], dtype: str, copies_of: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """Decode a batch of feature rows into the feature variant of the batch contract (numpy).

    Args:
        batch: numpy columns of :data:`FEATURE_COLUMNS`.
        dtype: the folder's storage dtype.
        copies_of: per row, how many copies to emit (default: one each).

    Returns:
        ``feats [n, T, D] float32, label [n] int64, utt_id [n], corpus [n], augmented [n] bool (False)``.
    """
    feats, keep = [], []
    for i in range(len(batch["utt_id"])):
        n = 1 if copies_of is None else int(copies_of[i])
        if n:
            x = decode_feats(
                batch["feats"][i], int(batch["frames"][i]), int(batch["dim"][i]), dtype
            )
            feats += [x] * n
            keep += [i] * n
    idx = np.asarray(keep, dtype=np.int64)
    shape = (
        0,
        int(batch["frames"][0]) if len(batch["frames"]) else 0,
        int(batch["dim"][0]) if len(batch["dim"]) else 0,
    )
    return {
        "feats": np.stack(feats) if feats else np.zeros(shape, np.float32),
        "label": np.asarray(batch["label"], dtype=np.int64)[idx]
        if len(idx)
        else np.zeros(0, np.int64),
        "utt_id": np.asarray(batch["utt_id"], dtype=object)[idx]
        if len(idx)
        else np.zeros(0, object),
        "corpus": np.asarray(batch["corpus"], dtype=object)[idx]
        if len(idx)
        else np.zeros(0, object),
        "augmented": np.zeros(len(idx), dtype=bool),
    }
