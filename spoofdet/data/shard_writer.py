"""The resumable shard writer: manifest rows -> a shard folder (:mod:`spoofdet.data.shards`).

:func:`run` plans once (:mod:`spoofdet.data.shard_plan`), writes each missing shard
with :func:`write_shard` (in-process or as one Ray Data task per shard), then :func:`finalize`
gathers ``metadata.parquet``, ``quarantine.parquet`` and ``summary.json``. Every file appears
by an atomic rename, so a re-run resumes after a crash and a finished job is a no-op. Always
``rows_in = rows_written + quarantined``. Why it is built this way: ``docs/design/sharding.md``.

The command line over it is :mod:`spoofdet.data.shard_cli` (``spoofdet prepare``,
``python -m data_prep.shard``). Ray is imported only when the Ray executor runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from spoofdet.data.audio import AudioError, encode_flac, load_16k
from spoofdet.data.schema import METADATA_COLUMNS, SAMPLE_RATE, UTTERANCE_SCHEMA, TableBuilder
from spoofdet.data.shard_plan import (
    PLAN_VERSION,
    balanced_rows_per_shard,
    estimate_rows_per_shard,
    fingerprint,
    make_plan,
)
from spoofdet.data.shards import (
    INPUT_FILE,
    METADATA_FILE,
    PLAN_FILE,
    QUARANTINE_FILE,
    QUARANTINE_PARTS_DIR,
    QUARANTINE_SCHEMA,
    SHARDS_DIR,
    SUMMARY_FILE,
    ShardError,
    done_shards,
    exists,
    is_finished,
    quarantine_part_path,
    read_json,
    remove_stale_tmp,
    resolve_out,
    shard_path,
    tmp_name,
    write_bytes_atomic,
    write_table_atomic,
)

__all__ = [
    "KILL_ENV",
    "PLAN_VERSION",
    "QUARANTINE_SCHEMA",
    "ROW_GROUP_ROWS",
    "ShardError",
    "balanced_rows_per_shard",
    "estimate_rows_per_shard",
    "finalize",
    "fingerprint",
    "make_plan",
    "resolve_out",
    "run",
    "shard_path",
    "write_shard",
]

ROW_GROUP_ROWS = 64
#: Testing aid: SIGKILL the process after writing shard N's temporary file, before its rename.
KILL_ENV = "SPOOFDET_SHARD_KILL_AT"


# ----------------------------------------------------------------------------- one shard


def _encode_rows(
    rows: list[dict[str, Any]], writer: pq.ParquetWriter, min_seconds: float
) -> tuple[int, float, list[dict[str, str]]]:
    """Decode, resample and FLAC-encode ``rows`` into ``writer`` in row groups of ROW_GROUP_ROWS;
    ``(written, audio seconds, quarantined rows)``."""
    quarantined: list[dict[str, str]] = []
    written, audio_seconds = 0, 0.0
    batch = TableBuilder()
    for row in rows:
        try:
            wave, orig_sr = load_16k(row["source_path"], min_seconds=min_seconds)
        except AudioError as exc:
            quarantined.append(
                {
                    "utt_id": row["utt_id"],
                    "source_path": row["source_path"],
                    "reason": exc.reason,
                    "detail": exc.detail,
                }
            )
            continue
        row.update(
            orig_sample_rate=orig_sr,
            num_samples=len(wave),
            duration=len(wave) / SAMPLE_RATE,
            audio=encode_flac(wave),
        )
        batch.append(**row)
        written += 1
        audio_seconds += len(wave) / SAMPLE_RATE
        if len(batch) >= ROW_GROUP_ROWS:
            writer.write_table(batch.to_table())
            batch = TableBuilder()
    if len(batch):
        writer.write_table(batch.to_table())
    return written, audio_seconds, quarantined


def write_shard(
    index: int,
    base: str,
    *,
    min_seconds: float,
    filesystem: pafs.FileSystem | None = None,
    out_uri: str | None = None,
) -> dict[str, Any]:
    """Decode, resample and encode the rows of shard ``index``; write quarantine part, then shard.

    Runs inside a Ray Data task (``out_uri`` given; the filesystem is rebuilt there) or in-process.
    Returns per-shard counts.
    """
    fs, base = (filesystem, base) if filesystem is not None else resolve_out(out_uri or base)
    with fs.open_input_file(f"{base}/{INPUT_FILE}") as fh:
        rows = pq.ParquetFile(fh).read_row_group(index).to_pylist()
    tmp = tmp_name(shard_path(base, index))
    with pq.ParquetWriter(tmp, UTTERANCE_SCHEMA, filesystem=fs, compression="none") as writer:
        written, audio_seconds, quarantined = _encode_rows(rows, writer, min_seconds)
    # quarantine part first: a shard file then always has its part beside it
    write_table_atomic(
        fs,
        quarantine_part_path(base, index),
        pa.Table.from_pylist(quarantined, schema=QUARANTINE_SCHEMA),
    )
    if os.environ.get(KILL_ENV) == str(index):
        os.kill(os.getpid(), signal.SIGKILL)
    fs.move(tmp, shard_path(base, index))
    return {
        "index": index,
        "rows": len(rows),
        "written": written,
        "quarantined": len(quarantined),
        "by_reason": dict(Counter(q["reason"] for q in quarantined)),
        "audio_seconds": audio_seconds,
    }


# ----------------------------------------------------------------------------- the job


def _ray_cpus(num_cpus: int | None) -> int:
    """Start (or join) Ray and return the CPUs of the cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _run_ray(todo: list[int], out_uri: str, base: str, min_seconds: float):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    ds = ray.data.from_items([{"index": i} for i in todo], override_num_blocks=len(todo))
    ds = ds.map(
        _ray_task,
        fn_kwargs={"out_uri": out_uri, "base": base, "min_seconds": min_seconds},
        num_cpus=1,
    )
    yield from ds.iter_rows()


def _ray_task(
    item: dict[str, Any], *, out_uri: str, base: str, min_seconds: float
) -> dict[str, Any]:
    stats = write_shard(int(item["index"]), base, min_seconds=min_seconds, out_uri=out_uri)
    stats["by_reason"] = json.dumps(stats["by_reason"])  # keep Ray Data's row schema flat
    return stats


def finalize(fs: pafs.FileSystem, base: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Gather quarantine parts and shard metadata into quarantine.parquet / metadata.parquet,
    check the bookkeeping, write summary.json."""
    n = plan["shards"]
    quarantine = pa.concat_tables(
        [pq.read_table(quarantine_part_path(base, i), filesystem=fs) for i in range(n)]
    ).combine_chunks()
    meta = pa.concat_tables(
        [
            pq.read_table(shard_path(base, i), columns=list(METADATA_COLUMNS), filesystem=fs)
            for i in range(n)
        ]
    )
    written = meta.num_rows
    if written + quarantine.num_rows != plan["rows_in"]:
        raise ShardError(
            f"bookkeeping broken: {written} written + {quarantine.num_rows} quarantined "
            f"!= {plan['rows_in']} in"
        )
    ids = pa.concat_arrays(
        [meta.column("utt_id").combine_chunks(), quarantine.column("utt_id").combine_chunks()]
    )
    if len(ids.unique()) != plan["rows_in"]:
        raise ShardError("an utterance appears twice across shards and quarantine")
    write_table_atomic(fs, f"{base}/{QUARANTINE_FILE}", quarantine)
    write_table_atomic(fs, f"{base}/{METADATA_FILE}", meta)
    durations = meta.column("duration").to_pylist()
    summary = {
        "corpus": plan["corpus"],
        "out": base,
        "rows_in": plan["rows_in"],
        "rows_written": written,
        "quarantined": quarantine.num_rows,
        "by_reason": dict(sorted(Counter(quarantine.column("reason").to_pylist()).items())),
        "shards": n,
        "audio_hours": round(sum(d for d in durations if d) / 3600, 4),
    }
    write_bytes_atomic(fs, f"{base}/{SUMMARY_FILE}", json.dumps(summary, indent=2).encode())
    return summary


def _check_run_args(
    manifest_table: pa.Table, executor: str, filesystem: pafs.FileSystem | None
) -> None:
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', not {executor!r}")
    if executor == "ray" and filesystem is not None:
        raise ValueError(
            "an in-memory filesystem object cannot reach Ray workers; pass a URI instead"
        )
    if manifest_table.num_rows == 0:
        raise ShardError("the manifest has no rows: nothing to shard (check --root and --split)")


def _shard_results(
    todo: list[int],
    fs: pafs.FileSystem,
    base: str,
    out: str,
    min_seconds: float,
    executor: str,
    num_cpus: int | None,
) -> Iterator[dict[str, Any]]:
    """Write the shards in ``todo`` with ``executor``, yielding each one's counts (lazily: Ray
    starts on the first ``next``)."""
    if executor == "ray":
        _ray_cpus(num_cpus)
        # workers rebuild the filesystem from the URI (or reach the same local path)
        yield from _run_ray(todo, out if "://" in out else base, base, min_seconds)
    else:
        for i in todo:
            yield write_shard(i, base, min_seconds=min_seconds, filesystem=fs)


def _show_progress(
    results: Iterable[dict[str, Any]], total: int, initial: int, corpus: str, progress: bool | None
) -> None:
    """Drain ``results`` under a tqdm bar over all shards (None: only when stderr is a terminal)."""
    bar = tqdm(
        total=total,
        initial=initial,
        desc=f"sharding {corpus}",
        unit="shard",
        file=sys.stderr,
        disable=(not sys.stderr.isatty()) if progress is None else not progress,
    )
    for stats in results:
        bar.update(1)
        bar.set_postfix(quarantined=stats["quarantined"], refresh=False)
    bar.close()


def _seconds_since(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)


def run(
    manifest_table: pa.Table,
    out: str,
    *,
    corpus: str,
    shard_mb: float = 192.0,
    shard_rows: int | None = None,
    min_seconds: float = 0.1,
    executor: str = "ray",
    num_cpus: int | None = None,
    progress: bool | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> dict[str, Any]:
    """Shard ``manifest_table`` (schema rows from a parser) into ``out``; resume if it was started.

    Args:
        executor: ``ray`` (Ray Data tasks, one per shard) or ``local`` (the same work in this process).
        shard_rows: fix rows per shard instead of estimating them from ``shard_mb``.
        progress: tqdm bar over shards (None: only when stderr is a terminal).

    Returns:
        The summary: ``rows_in``, ``rows_written``, ``quarantined``, ``by_reason``, ``shards``,
        plus ``shards_done_before`` and ``seconds`` of this invocation.
    """
    _check_run_args(manifest_table, executor, filesystem)
    t0 = time.perf_counter()
    fs, base = resolve_out(out, filesystem)
    planned = exists(fs, f"{base}/{PLAN_FILE}")
    parallelism = _ray_cpus(num_cpus) if executor == "ray" and not planned else 1
    plan = make_plan(
        fs,
        base,
        manifest_table,
        corpus=corpus,
        shard_mb=shard_mb,
        shard_rows=shard_rows,
        min_seconds=min_seconds,
        parallelism=parallelism,
    )
    n = plan["shards"]
    remove_stale_tmp(fs, f"{base}/{SHARDS_DIR}")
    remove_stale_tmp(fs, f"{base}/{QUARANTINE_PARTS_DIR}")
    done = done_shards(fs, base, n)
    if is_finished(fs, base, n, done):
        summary = read_json(fs, f"{base}/{SUMMARY_FILE}")
        return {**summary, "shards_done_before": n, "seconds": _seconds_since(t0)}
    todo = [i for i in range(n) if i not in done]
    if todo:
        results = _shard_results(todo, fs, base, out, min_seconds, executor, num_cpus)
        _show_progress(results, n, len(done), corpus, progress)
    missing = set(range(n)) - done_shards(fs, base, n)
    if missing:
        raise ShardError(
            f"shards {sorted(missing)[:10]} were not written; re-run the same command to resume"
        )
    summary = finalize(fs, base, plan)
    return {**summary, "shards_done_before": len(done), "seconds": _seconds_since(t0)}
