"""Run a frozen SSL front-end once over a shard folder and cache one layer's features (Codecfake's trick).

Codecfake trains its head on frozen XLS-R features (``hidden_states[5]``): computing them once
makes every epoch a head-only pass over small tensors. This job reads a shard folder written by
``spoofdet prepare``, cuts every clip as ``spoofdet.data.pipeline`` does for evaluation (first
``num_samples`` samples, repeat-padded when shorter), runs the front-end in a Ray Data actor pool
(``map_batches`` with a callable class: each actor loads the model once; GPUs when asked) and
writes the layer's output as float16 Parquet in the shard layout, so a recipe's
``data.train[i].shards`` can point at it unchanged (with ``model.frontend: cached``)::

    OUT/shards/*.parquet   utt_id, corpus, label, num_samples, feats (bytes, frames x dim,
                           row-major), frames, dim
    OUT/metadata.parquet   the source's metadata rows (copied)
    OUT/frontend.pt        the front-end weights used (the registered model is rebuilt from them)
    OUT/files.json         the file list (name, rows, bytes, sha256 of every shard and of
                           metadata.parquet) that readers check the folder against
    OUT/features.json      frontend, layer, dtype, num_samples, dim, frames, rows
                           (written last: the folder is complete)

Run locally (Ray starts in-process; CPU actors; ``spoofdet features`` is the same command)::

    python -m data_prep.features --shards runs/shards/codecfake/train --out runs/features/codecfake/train \\
        --frontend xlsr_300m --layer 5

Submit to a cluster (--shards and --out on storage every node can read, e.g. NFS)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m data_prep.features --shards /mnt/shards/codecfake/train \\
        --out /mnt/features/codecfake/train --frontend xlsr_300m --layer 5 \\
        --num-gpus 1 --concurrency 8 --batch-size 32 --dtype float16

Size: XLS-R 300M layer 5 on 64,600 samples is 201 x 1024 values, 412 KB per clip in float16
(~300 GB for Codecfake's 740,747 training clips), against ~130 KB of FLAC audio.
No waveform normalisation is applied (as ``spoofdet.models.frontend``; Codecfake's HF feature
extractor normalised each clip). The source folder is checked against its file list first (a
damaged or stray shard is refused, naming it). The driver builds the front-end once (hub models
download into its HF cache) and saves its weights to ``frontend.pt``; actors build the same shape
without a download and load those weights, so every actor (and the model later registered) uses
identical weights, random-init test front-ends included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spoofdet.data import features as feature_cache
from spoofdet.data.audio import crop_or_pad
from spoofdet.data.pipeline import NUM_SAMPLES, READ_COLUMNS, decode_window
from spoofdet.data.shards import (
    METADATA_FILE,
    SHARDS_DIR,
    TMP_MARK,
    ShardError,
    checked_shard_files,
    write_file_list,
)
from spoofdet.errors import bad_input


class ExtractFeatures:
    """Ray Data callable class: a batch of shard rows -> rows of cached features (one model per actor)."""

    def __init__(
        self, frontend: str, layer: int, weights: str, num_samples: int, dtype: str, device: str
    ) -> None:
        import torch

        from spoofdet.models.cached import RANDOM_SHAPE
        from spoofdet.models.frontend import load_frontend

        self.torch = torch
        self.device = torch.device(
            "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        )
        model = load_frontend(RANDOM_SHAPE.get(frontend, frontend), layer=layer, freeze="all")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model = model.eval().to(self.device)
        self.num_samples, self.dtype = num_samples, dtype

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        waves = np.stack(
            [
                crop_or_pad(decode_window(a, 0, self.num_samples), self.num_samples)
                for a in batch["audio"]
            ]
        )
        with self.torch.inference_mode():
            feats = self.model(self.torch.from_numpy(waves).to(self.device)).float().cpu().numpy()
        blobs = np.empty(len(feats), dtype=object)
        for i, f in enumerate(feats):
            blobs[i] = feature_cache.encode_feats(f, self.dtype)
        n = len(feats)
        return {
            "utt_id": batch["utt_id"],
            "corpus": batch["corpus"],
            "label": batch["label"],
            "num_samples": batch["num_samples"],
            "feats": blobs,
            "frames": np.full(n, feats.shape[1], dtype=np.int32),
            "dim": np.full(n, feats.shape[2], dtype=np.int32),
        }


def check_arguments(
    shards: str,
    out: str,
    *,
    dtype: str,
    batch_size: int,
    concurrency: int,
    num_samples: int,
    num_gpus: float,
) -> None:
    """Raise ValueError naming the first bad argument."""
    if dtype not in feature_cache.DTYPES:
        raise ValueError(f"--dtype: {dtype!r} is not one of {', '.join(feature_cache.DTYPES)}")
    for name, value in (
        ("--batch-size", batch_size),
        ("--concurrency", concurrency),
        ("--num-samples", num_samples),
    ):
        if value <= 0:
            raise ValueError(f"{name}: must be positive, got {value}")
    if num_gpus < 0:
        raise ValueError(f"--num-gpus: must be >= 0, got {num_gpus}")
    if "://" in out or "://" in shards:
        raise ValueError(
            "--shards/--out: local or mounted (NFS) paths only; every node must read --out"
        )
    if feature_cache.is_feature_folder(out):
        raise ValueError(
            f"--out: {out} already holds features (features.json); "
            "remove it or choose another folder"
        )


def save_frontend(frontend: str, layer: int, seed: int, out: str) -> tuple[str, int]:
    """Build the front-end once (seeded), save its weights into the fresh ``out`` folder for the
    actors; returns (weights path, feature dim)."""
    import torch

    from spoofdet.models.frontend import load_frontend

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    torch.manual_seed(seed)
    model = load_frontend(frontend, layer=layer, freeze="all")
    weights = os.path.join(out, feature_cache.FRONTEND_WEIGHTS)
    torch.save(model.state_dict(), weights)
    return weights, int(model.out_dim)


def write_features(
    files: list[str],
    out: str,
    *,
    batch_size: int,
    concurrency: int,
    num_gpus: float,
    constructor_kwargs: dict[str, Any],
) -> None:
    """The Ray Data map: shard rows -> an actor pool of :class:`ExtractFeatures` -> ``out/shards``."""
    import ray

    if not ray.is_initialized():
        ray.init()
    ds = ray.data.read_parquet(files).select_columns(READ_COLUMNS)
    ds = ds.map_batches(
        ExtractFeatures,
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_gpus=num_gpus or None,
        fn_constructor_kwargs=constructor_kwargs,
    )
    ds.write_parquet(os.path.abspath(os.path.join(out, SHARDS_DIR)))


def feature_file_names(out: str) -> list[str]:
    """The files of a feature folder its file list covers: every shard and metadata.parquet."""
    names = os.listdir(os.path.join(out, SHARDS_DIR))
    return [f"{SHARDS_DIR}/{n}" for n in sorted(names) if TMP_MARK not in n] + [METADATA_FILE]


def finish_folder(shards: str, out: str, info: dict[str, Any]) -> dict[str, Any]:
    """After the shards are written: copy the metadata, count the rows, write the file list, then
    ``features.json`` last (the folder is complete); the info with its ``rows``."""
    shutil.copyfile(os.path.join(shards, METADATA_FILE), os.path.join(out, METADATA_FILE))
    info = {**info, "rows": count_rows(shards, out)}
    write_file_list(pafs.LocalFileSystem(), os.path.abspath(out), feature_file_names(out))
    tmp = os.path.join(out, feature_cache.FEATURES_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, os.path.join(out, feature_cache.FEATURES_FILE))
    return info


def count_rows(shards: str, out: str) -> int:
    """Feature rows written; RuntimeError unless they match the shard folder's metadata rows."""
    rows = sum(
        pq.read_metadata(os.path.join(out, SHARDS_DIR, f)).num_rows
        for f in os.listdir(os.path.join(out, SHARDS_DIR))
        if f.endswith(".parquet")
    )
    expected = pq.read_metadata(os.path.join(shards, METADATA_FILE)).num_rows
    if rows != expected:
        raise RuntimeError(
            f"wrote {rows} feature rows for {expected} shard rows; the folder is incomplete"
        )
    return rows


def run(
    shards: str,
    out: str,
    *,
    frontend: str,
    layer: int = 5,
    num_samples: int = NUM_SAMPLES,
    dtype: str = "float16",
    batch_size: int = 8,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Extract ``frontend``'s layer-``layer`` features of every row of ``shards`` into ``out``.

    Args:
        shards: a shard folder (``shards/*.parquet`` + ``metadata.parquet``).
        out: the feature folder to write (must not hold a finished one; a partial one is replaced).
        frontend: a front-end name or local ``save_pretrained`` dir (``spoofdet.models.frontend``).
        layer: which hidden state (``hidden_states[layer]``; Codecfake: 5).
        num_samples: crop length (first N samples, repeat-padded).
        dtype: storage dtype, ``float16`` or ``float32``.
        batch_size: clips per front-end call.
        concurrency: actors in the pool.
        num_gpus: GPUs per actor (0: CPU).
        seed: torch seed for random-init front-ends.

    Returns:
        The contents of ``features.json``.

    Raises:
        ValueError: for a bad argument (naming it) or an ``out`` that already holds features;
            a ShardError (a ValueError) when ``shards`` does not match its file list.
    """
    from spoofdet.models.frontend import num_frames

    check_arguments(
        shards,
        out,
        dtype=dtype,
        batch_size=batch_size,
        concurrency=concurrency,
        num_samples=num_samples,
        num_gpus=num_gpus,
    )
    try:
        files = checked_shard_files(shards)
    except ShardError as exc:
        raise ShardError(f"--shards: {exc}", problems=exc.problems) from None
    weights, dim = save_frontend(frontend, layer, seed, out)
    actor = {
        "frontend": frontend,
        "layer": layer,
        "weights": os.path.abspath(weights),
        "num_samples": num_samples,
        "dtype": dtype,
        "device": "cuda" if num_gpus else "cpu",
    }
    write_features(
        files,
        out,
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
        constructor_kwargs=actor,
    )
    info = {
        "frontend": str(frontend),
        "layer": layer,
        "dtype": dtype,
        "num_samples": num_samples,
        "dim": dim,
        "frames": num_frames(num_samples),
        "source": os.path.abspath(shards),
    }
    return finish_folder(shards, out, info)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="spoofdet features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--shards", required=True, help="shard folder written by `spoofdet prepare --out`"
    )
    ap.add_argument("--out", required=True, help="feature folder to write")
    ap.add_argument(
        "--frontend", required=True, help="front-end name (xlsr_300m, tiny, ...) or local model dir"
    )
    ap.add_argument("--layer", type=int, default=5, help="hidden state index (Codecfake: 5)")
    ap.add_argument(
        "--num-samples",
        type=int,
        default=NUM_SAMPLES,
        help="crop length in samples (default 64600)",
    )
    ap.add_argument("--dtype", default="float16", choices=feature_cache.DTYPES)
    ap.add_argument("--batch-size", type=int, default=8, help="clips per front-end call")
    ap.add_argument("--concurrency", type=int, default=1, help="actors in the pool")
    ap.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (0: CPU)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for random-init front-ends")
    args = ap.parse_args(argv)
    try:
        info = run(
            args.shards,
            args.out,
            frontend=args.frontend,
            layer=args.layer,
            num_samples=args.num_samples,
            dtype=args.dtype,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            num_gpus=args.num_gpus,
            seed=args.seed,
        )
    except ValueError as exc:
        return bad_input("features", exc)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
