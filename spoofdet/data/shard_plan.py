"""The plan of a shard job: fixed row ranges chosen once and saved in ``_work/plan.json``.

:func:`make_plan` writes the input manifest with one row group per shard plus the plan (a
fingerprint of the manifest, the settings, rows per shard, shard count), or checks a saved plan
against the given input and settings, so a re-run resumes the same job or is refused. Source
paths are normalised (absolute, no ``.``/``..``) before hashing and before the input manifest is
saved, so the same corpus given as ``./corpus``, ``../x/corpus`` or ``/abs/corpus`` is one input.
"""

from __future__ import annotations

import hashlib
import json
import os
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

#: 2: the fingerprint hashes normalised values (1: raw Arrow buffers; still resumable).
PLAN_VERSION = 2


def _normal_path(path: str | None) -> str | None:
    if path is None or "://" in path:
        return path
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def normalise_source_paths(table: pa.Table) -> pa.Table:
    """``table`` with every local ``source_path`` absolute and normalised (URIs kept): the same
    file has one spelling whatever the working directory or the spelling of ``--root`` was."""
    column = table.column("source_path")
    paths = column.to_pylist()
    normal = [_normal_path(p) for p in paths]
    if normal == paths:
        return table
    index = table.schema.get_field_index("source_path")
    return table.set_column(index, table.schema.field(index), pa.array(normal, column.type))


def fingerprint(table: pa.Table) -> str:
    """Identity of an input manifest: a hash of its ids, normalised source paths and labels, in
    order (value by value, so neither chunking nor the spelling of the root changes it)."""
    h = hashlib.sha256()
    table = normalise_source_paths(table)
    for name in ("utt_id", "source_path", "label"):
        h.update(name.encode())
        for value in table.column(name).to_pylist():
            item = b"\x00" if value is None else b"\x01" + str(value).encode()
            h.update(len(item).to_bytes(8, "little") + item)
    h.update(str(table.num_rows).encode())
    return h.hexdigest()


def _legacy_fingerprint(table: pa.Table) -> str:
    """The fingerprint of plans with version 1 (raw Arrow buffers), to resume those jobs."""
    h = hashlib.sha256()
    for name in ("utt_id", "source_path", "label"):
        for chunk in table.column(name).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    h.update(str(table.num_rows).encode())
    return h.hexdigest()


def same_input(plan: dict[str, Any], table: pa.Table) -> bool:
    """Whether ``table`` is the input manifest ``plan`` was made for."""
    if plan["fingerprint"] == fingerprint(table):
        return True
    return plan.get("version", 1) < 2 and plan["fingerprint"] == _legacy_fingerprint(table)


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
    plan: dict[str, Any], base: str, table: pa.Table, settings: dict[str, Any]
) -> dict[str, Any]:
    """``plan`` if it was made for the same input and settings, else a ShardError."""
    if not same_input(plan, table):
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


def write_input(fs: pafs.FileSystem, base: str, table: pa.Table, rows_per_shard: int) -> None:
    """Save the (normalised) input manifest with one row group per shard, so that
    ``write_shard`` reads exactly its rows."""
    tmp = tmp_name(f"{base}/{INPUT_FILE}")
    pq.write_table(normalise_source_paths(table), tmp, filesystem=fs, row_group_size=rows_per_shard)
    fs.move(tmp, f"{base}/{INPUT_FILE}")


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
    settings = {
        "corpus": corpus,
        "shard_mb": shard_mb,
        "shard_rows": shard_rows,
        "min_seconds": min_seconds,
    }
    if exists(fs, plan_path):
        return _check_saved_plan(read_json(fs, plan_path), base, table, settings)
    table = normalise_source_paths(table)
    rows_per_shard = shard_rows or balanced_rows_per_shard(
        table.num_rows,
        estimate_rows_per_shard(table, shard_mb, min_seconds=min_seconds),
        parallelism,
    )
    fs.create_dir(f"{base}/{QUARANTINE_PARTS_DIR}", recursive=True)
    fs.create_dir(f"{base}/{SHARDS_DIR}", recursive=True)
    write_input(fs, base, table, rows_per_shard)
    plan = {
        "version": PLAN_VERSION,
        "fingerprint": fingerprint(table),
        "corpus": corpus,
        "rows_in": table.num_rows,
        "rows_per_shard": rows_per_shard,
        "shards": max(1, -(-table.num_rows // rows_per_shard)),
        "settings": settings,
    }
    write_bytes_atomic(fs, plan_path, json.dumps(plan, indent=2).encode())
    return plan
