"""The plan of a shard job: fixed row ranges chosen once and saved in ``_work/plan.json``.

:func:`make_plan` writes the input manifest with one row group per shard plus the plan (a
fingerprint of the manifest, the settings, rows per shard, shard count), or checks a saved plan
against the given input and settings, so a re-run resumes the same job or is refused.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spoofdet.data.audio import AudioError, encode_flac, load_16k
from spoofdet.data.schema import SAMPLE_RATE
from spoofdet.data.shards import (
    INPUT_FILE,
    PLAN_FILE,
    QUARANTINE_PARTS_DIR,
    SHARDS_DIR,
    ShardError,
    exists,
    read_json,
    tmp_name,
    write_bytes_atomic,
)

PLAN_VERSION = 1


def fingerprint(table: pa.Table) -> str:
    """Identity of an input manifest: a hash of its ids, paths and labels, in order."""
    h = hashlib.sha256()
    for name in ("utt_id", "source_path", "label"):
        for chunk in table.column(name).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    h.update(str(table.num_rows).encode())
    return h.hexdigest()


def estimate_rows_per_shard(
    table: pa.Table, shard_mb: float, *, probes: int = 24, min_seconds: float = 0.0
) -> int:
    """Rows per shard so that a shard holds about ``shard_mb`` MiB: encode a few evenly spaced
    files for real and divide (failed probes are ignored; none usable -> 4 s of audio per row)."""
    paths = table.column("source_path").to_pylist()
    step = max(1, len(paths) // probes)
    sizes = []
    for p in paths[::step][:probes]:
        try:
            wave, _ = load_16k(p, min_seconds=min_seconds)
        except AudioError:
            continue
        sizes.append(len(encode_flac(wave)) + 256)
    per_row = sum(sizes) / len(sizes) if sizes else 4 * SAMPLE_RATE * 2 * 0.6
    return max(1, int(shard_mb * 2**20 / per_row))


def balanced_rows_per_shard(n_rows: int, size_rows: int, parallelism: int) -> int:
    """Rows per shard: at most ``size_rows``; for ``parallelism`` > 1, a shard count that is a
    multiple of ``parallelism`` and at least ``4 * parallelism``."""
    n = -(-n_rows // max(1, size_rows))
    if parallelism > 1:
        n = max(n, 4 * parallelism)
        n = -(-n // parallelism) * parallelism
    return max(1, -(-n_rows // n))


def _check_saved_plan(
    plan: dict[str, Any], base: str, fp: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """``plan`` if it was made for the same input and settings, else a ShardError."""
    if plan["fingerprint"] != fp:
        raise ShardError(
            f"{base} already holds shards of a different input manifest "
            f"({plan['rows_in']} rows of {plan['corpus']}); "
            "use a new --out, or delete it to start over"
        )
    changed = {
        k: (plan["settings"].get(k), v) for k, v in settings.items() if plan["settings"].get(k) != v
    }
    if changed:
        raise ShardError(
            f"{base} was started with other settings {changed} (saved, given); "
            "re-run with the saved settings or use a new --out"
        )
    return plan


def make_plan(
    fs: pafs.FileSystem,
    base: str,
    table: pa.Table,
    *,
    corpus: str,
    shard_mb: float,
    shard_rows: int | None,
    min_seconds: float,
    parallelism: int = 1,
) -> dict[str, Any]:
    """Create the plan and the row-grouped input manifest, or load and check an existing one.

    Without ``shard_rows``, rows per shard come from ``shard_mb``; with ``parallelism`` > 1 the
    shard count is raised to at least 4 per CPU and rounded up to a multiple of the CPU count,
    so that no CPU idles through a last lone shard.

    Raises:
        ShardError: ``base`` holds a plan for different input or different settings.
    """
    plan_path = f"{base}/{PLAN_FILE}"
    fp = fingerprint(table)
    settings = {
        "corpus": corpus,
        "shard_mb": shard_mb,
        "shard_rows": shard_rows,
        "min_seconds": min_seconds,
    }
    if exists(fs, plan_path):
        return _check_saved_plan(read_json(fs, plan_path), base, fp, settings)
    rows_per_shard = shard_rows or balanced_rows_per_shard(
        table.num_rows,
        estimate_rows_per_shard(table, shard_mb, min_seconds=min_seconds),
        parallelism,
    )
    fs.create_dir(f"{base}/{QUARANTINE_PARTS_DIR}", recursive=True)
    fs.create_dir(f"{base}/{SHARDS_DIR}", recursive=True)
    # one row group per shard: write_shard reads exactly its rows
    tmp = tmp_name(f"{base}/{INPUT_FILE}")
    pq.write_table(table, tmp, filesystem=fs, row_group_size=rows_per_shard)
    fs.move(tmp, f"{base}/{INPUT_FILE}")
    plan = {
        "version": PLAN_VERSION,
        "fingerprint": fp,
        "corpus": corpus,
        "rows_in": table.num_rows,
        "rows_per_shard": rows_per_shard,
        "shards": max(1, -(-table.num_rows // rows_per_shard)),
        "settings": settings,
    }
    write_bytes_atomic(fs, plan_path, json.dumps(plan, indent=2).encode())
    return plan
