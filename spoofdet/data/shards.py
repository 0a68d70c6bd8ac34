"""The on-disk layout of a shard folder (what ``spoofdet prepare`` writes), in one place.

    shards/part-00000.parquet ...  rows of UTTERANCE_SCHEMA; `audio` = 16 kHz mono FLAC bytes
    metadata.parquet               the same rows without the audio column
    quarantine.parquet             utt_id, source_path, reason, detail: every input row not written
    summary.json                   rows_in, rows_written, quarantined, by_reason, shards, ...
    _work/                         plan.json, input.parquet, quarantine/part-NNNNN.parquet

Paths are joined with ``/`` so that any pyarrow filesystem works (local, s3://, gs://); every file
appears by an atomic rename from a ``.tmp-`` name. A job is complete when every shard of its plan
and ``summary.json`` exist (:func:`is_complete`). Readers of a local folder ask
:func:`has_metadata` (finished: ``metadata.parquet`` is written at the end, also by
``data_prep.features``, whose folders have no plan or summary) and :func:`is_readable` (finished
and holding ``shards/``). The writer is :mod:`spoofdet.data.shard_writer`;
the why is in ``docs/design/sharding.md``.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SHARDS_DIR = "shards"
METADATA_FILE = "metadata.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.json"
WORK_DIR = "_work"
PLAN_FILE = f"{WORK_DIR}/plan.json"
INPUT_FILE = f"{WORK_DIR}/input.parquet"
QUARANTINE_PARTS_DIR = f"{WORK_DIR}/quarantine"
#: A file being written carries this mark plus a random suffix until its atomic rename.
TMP_MARK = ".tmp-"
#: The columns of ``quarantine.parquet`` and of its per-shard parts.
QUARANTINE_SCHEMA = pa.schema(
    [
        ("utt_id", pa.string()),
        ("source_path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


class ShardError(RuntimeError):
    """The output folder holds a different job, or the job broke its own invariants."""


def part_name(index: int) -> str:
    """``part-NNNNN.parquet``: the file name of shard ``index`` (and of its quarantine part)."""
    return f"part-{index:05d}.parquet"


def shard_path(base: str, index: int) -> str:
    return f"{base}/{SHARDS_DIR}/{part_name(index)}"


def quarantine_part_path(base: str, index: int) -> str:
    return f"{base}/{QUARANTINE_PARTS_DIR}/{part_name(index)}"


def resolve_out(out: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, base path)`` for a local path or any pyarrow URI (s3://, gs://, file://)."""
    if filesystem is not None:
        return filesystem, out.rstrip("/")
    if "://" in out:
        fs, path = pafs.FileSystem.from_uri(out)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(out))


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_json(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    with fs.open_input_stream(path) as fh:
        return json.loads(fh.read())


def tmp_name(path: str) -> str:
    """A temporary name beside ``path``: files appear only by an atomic rename to ``path``."""
    return f"{path}{TMP_MARK}{uuid.uuid4().hex}"


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    tmp = tmp_name(path)
    with fs.open_output_stream(tmp) as fh:
        fh.write(data)
    fs.move(tmp, path)


def write_table_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    tmp = tmp_name(path)
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, path)


def remove_stale_tmp(fs: pafs.FileSystem, folder: str) -> int:
    """Delete the temporary files a killed writer left in ``folder``; how many were deleted."""
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if TMP_MARK in info.base_name:
            fs.delete_file(info.path)
            removed += 1
    return removed


def done_shards(fs: pafs.FileSystem, base: str, n_shards: int) -> set[int]:
    """Indices of the planned shards whose file exists (a shard file exists only when complete)."""
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{SHARDS_DIR}", allow_not_found=True))
    names = {i.base_name for i in infos}
    return {i for i in range(n_shards) if part_name(i) in names}


def is_finished(fs: pafs.FileSystem, base: str, n_shards: int, done: set[int]) -> bool:
    """The writer's own test: all ``n_shards`` planned shards are ``done`` and summary.json exists."""
    return len(done) == n_shards and exists(fs, f"{base}/{SUMMARY_FILE}")


def is_complete(folder: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> bool:
    """Whether ``folder`` (a path or pyarrow URI) holds a finished shard job: its plan exists and
    every planned shard file and ``summary.json`` exist, as the writer decides on a re-run."""
    fs, base = resolve_out(os.fspath(folder), filesystem)
    if not exists(fs, f"{base}/{PLAN_FILE}"):
        return False
    n_shards = read_json(fs, f"{base}/{PLAN_FILE}")["shards"]
    return is_finished(fs, base, n_shards, done_shards(fs, base, n_shards))


def has_metadata(folder: str | os.PathLike) -> bool:
    """Whether local ``folder`` holds ``metadata.parquet``, which both writers (the shard job and
    ``data_prep.features``) write when they finish: the one test of "finished?" for readers."""
    return (Path(folder) / METADATA_FILE).is_file()


def is_readable(folder: str | os.PathLike) -> bool:
    """Whether local ``folder`` can be read as a source: finished (:func:`has_metadata`) and
    holding ``shards/`` (audio shards or cached features)."""
    return has_metadata(folder) and (Path(folder) / SHARDS_DIR).is_dir()
