"""The resumable shard writer: manifest rows -> a shard folder (:mod:`spoofdet.data.shards`).

:func:`run` plans once (:mod:`spoofdet.data.shard_plan`), writes each missing shard
with :func:`write_shard` (in-process or as one Ray Data task per shard), then :func:`finalize`
gathers ``metadata.parquet``, ``quarantine.parquet`` and ``summary.json`` and writes the file
list ``files.json`` last. Every file appears by an atomic rename, so a re-run resumes after a
crash and a finished job is a no-op; a shard holding unreadable (``io_error``) rows is written
again on every re-run. Always ``rows_in = rows_written + quarantined``.

Before resuming, :func:`run` refuses stray or changed shard files; for a folder without a
file list it first checks every row (``_verify``, the full check). ``spoofdet prepare --verify``
and ``--repair`` are :mod:`spoofdet.data.shard_verify`, which builds on this module (never the
reverse). Why it is built this way: ``docs/design/sharding.md``.

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

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from spoofdet.data.audio import AudioError, decode_flac, encode_flac, load_16k
from spoofdet.data.schema import METADATA_COLUMNS, SAMPLE_RATE, UTTERANCE_SCHEMA, TableBuilder
from spoofdet.data.shard_plan import (
    PLAN_VERSION,
    balanced_rows_per_shard,
    estimate_rows_per_shard,
    fingerprint,
    make_plan,
)
from spoofdet.data.shards import (
    FEATURES_FILE,
    FILES_FILE,
    INPUT_FILE,
    METADATA_FILE,
    PLAN_FILE,
    QUARANTINE_FILE,
    QUARANTINE_PARTS_DIR,
    QUARANTINE_SCHEMA,
    RETRY_REASONS,
    SHARDS_DIR,
    SUMMARY_FILE,
    TMP_MARK,
    ShardError,
    compare_with_list,
    done_shards,
    exists,
    is_finished,
    job_file_names,
    part_name,
    problem,
    problem_line,
    quarantine_part_path,
    read_file_list,
    read_json,
    remove_stale_tmp,
    resolve_out,
    sha256_file,
    shard_name,
    shard_path,
    stray_problems,
    tmp_name,
    write_bytes_atomic,
    write_file_list,
    write_table_atomic,
    written_shards,
)
from spoofdet.errors import Problems

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
#: Problem kinds that make a shard file unusable: ``shard_verify.repair`` deletes and rewrites it.
BROKEN_KINDS = frozenset(
    {"size", "checksum", "stray", "unreadable", "schema", "rows", "row", "plan"}
)


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
    if exists(fs, shard_path(base, index)):
        # written again (rows to retry, or a repair): without the old file, a crash before the
        # rename below leaves the shard missing, never an old shard beside a new quarantine part
        fs.delete_file(shard_path(base, index))
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


def _read_table(fs: pafs.FileSystem, base: str, name: str, columns=None) -> pa.Table:
    """``base/name`` as a table, or a ShardError naming the file and what to do."""
    try:
        with fs.open_input_file(f"{base}/{name}") as fh:
            return pq.read_table(fh, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(
            f"{base}/{name}: cannot be read ({exc}). See every problem with "
            f"`spoofdet prepare --verify --out {base}`, then `spoofdet prepare --repair --out {base}`"
        ) from None


def finalize(fs: pafs.FileSystem, base: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Gather quarantine parts and shard metadata into quarantine.parquet / metadata.parquet,
    check the bookkeeping, write summary.json and, last, the file list files.json."""
    n = plan["shards"]
    quarantine = pa.concat_tables(
        [_read_table(fs, base, f"{QUARANTINE_PARTS_DIR}/{part_name(i)}") for i in range(n)]
    ).combine_chunks()
    meta = pa.concat_tables(
        [_read_table(fs, base, shard_name(i), list(METADATA_COLUMNS)) for i in range(n)]
    )
    written = meta.num_rows
    if written + quarantine.num_rows != plan["rows_in"]:
        raise ShardError(
            f"{base}: bookkeeping broken: {written} written + {quarantine.num_rows} quarantined "
            f"!= {plan['rows_in']} in; run `spoofdet prepare --repair --out {base}`"
        )
    ids = pa.concat_arrays(
        [meta.column("utt_id").combine_chunks(), quarantine.column("utt_id").combine_chunks()]
    )
    if len(ids.unique()) != plan["rows_in"]:
        raise ShardError(
            f"{base}: an utterance appears twice across shards and quarantine; "
            f"run `spoofdet prepare --repair --out {base}`"
        )
    write_table_atomic(fs, f"{base}/{QUARANTINE_FILE}", quarantine)
    write_table_atomic(fs, f"{base}/{METADATA_FILE}", meta)
    durations = meta.column("duration").to_pylist()
    by_reason = dict(sorted(Counter(quarantine.column("reason").to_pylist()).items()))
    summary = {
        "corpus": plan["corpus"],
        "out": base,
        "rows_in": plan["rows_in"],
        "rows_written": written,
        "quarantined": quarantine.num_rows,
        "by_reason": by_reason,
        "retry_on_rerun": sum(by_reason.get(r, 0) for r in RETRY_REASONS),
        "shards": n,
        "audio_hours": round(sum(d for d in durations if d) / 3600, 4),
    }
    write_bytes_atomic(fs, f"{base}/{SUMMARY_FILE}", json.dumps(summary, indent=2).encode())
    write_file_list(fs, base, job_file_names(n))
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
        plus ``shards_done_before`` and ``seconds`` of this invocation, and ``finished_again``
        (True when every shard was written before but the folder had to be finished again:
        metadata.parquet, quarantine.parquet, summary.json or files.json missing or changed).

    Raises:
        ShardError: ``out`` holds another job, or a stray or changed shard file (the message
            names it and says to run ``spoofdet prepare --verify``/``--repair``).
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
    _refuse_damaged_shards(fs, base, n)
    done = done_shards(fs, base, n)
    if is_finished(fs, base, n, done):
        try:
            summary = read_json(fs, f"{base}/{SUMMARY_FILE}")
            return {**summary, "shards_done_before": n, "seconds": _seconds_since(t0)}
        except (OSError, ValueError):
            pass  # an unreadable summary.json: finish the folder again below
    todo = [i for i in range(n) if i not in done]
    if todo:
        results = _shard_results(todo, fs, base, out, min_seconds, executor, num_cpus)
        _show_progress(results, n, len(done), corpus, progress)
    missing = set(range(n)) - written_shards(fs, base, n)
    if missing:
        raise ShardError(
            f"{base}: shards {sorted(missing)[:10]} were not written; "
            "re-run the same command to resume"
        )
    summary = finalize(fs, base, plan)
    return {
        **summary,
        "shards_done_before": len(done),
        "finished_again": not todo,
        "seconds": _seconds_since(t0),
    }


# ----------------------------------------------------------------------------- checks
# run() refuses damaged shards with them; spoofdet.data.shard_verify (--verify/--repair) too.


def _refuse_damaged_shards(fs: pafs.FileSystem, base: str, n_shards: int) -> None:
    """Before a resume or a no-op: refuse shard files that are stray or changed since the file
    list was written (a missing one is simply written again). A folder finished without a file
    list (an older spoofdet, or files.json deleted) has every row checked first, since the list
    written at the end vouches for the rows."""
    planned = {shard_name(i) for i in range(n_shards)}
    problems = stray_problems(fs, base, planned)
    listing, _ = read_file_list(fs, base)
    if listing is not None:
        problems += [
            p
            for p in compare_with_list(fs, base, listing)
            if p["kind"] == "size" and p["file"] in planned
        ]
    elif exists(fs, f"{base}/{METADATA_FILE}") or exists(fs, f"{base}/{SUMMARY_FILE}"):
        report = _verify(fs, base, checksums=False)
        problems += [
            p for p in report["problems"] if p["kind"] in BROKEN_KINDS and p["kind"] != "stray"
        ]
    if problems:
        found = Problems(limit=10)
        found.extend(problem_line(p) for p in problems)
        raise ShardError(
            f"{base}: shard files are damaged or not part of this job; nothing was written:\n  "
            f"{found.listing()}\nSee every problem with `spoofdet prepare --verify --out {base}`, "
            f"then rewrite them with `spoofdet prepare --repair --out {base}`",
            problems=list(found),
        )


def _feature_info(fs: pafs.FileSystem, base: str) -> dict[str, Any] | None:
    """features.json of a feature folder (``data_prep.features``), else None."""
    if not exists(fs, f"{base}/{FEATURES_FILE}"):
        return None
    try:
        return read_json(fs, f"{base}/{FEATURES_FILE}")
    except (OSError, ValueError):
        return {}


def _check_audio_rows(pf: pq.ParquetFile, name: str) -> list[dict[str, Any]]:
    """Every row of an audio shard: its FLAC decodes to ``num_samples`` samples at 16 kHz and its
    label is 0, 1 or null (unlabelled)."""
    problems = []
    columns = ["utt_id", "label", "num_samples", "audio"]
    for batch in pf.iter_batches(batch_size=ROW_GROUP_ROWS, columns=columns):
        for uid, label, n, audio in zip(*(batch.column(c).to_pylist() for c in columns)):
            if label not in (0, 1, None):
                problems.append(problem(name, f"label {label} is not 0, 1 or null", "row", uid))
            if audio is None:
                problems.append(problem(name, "no audio bytes", "row", uid))
                continue
            try:
                wave, sr = decode_flac(audio)
            except (RuntimeError, TypeError, ValueError) as exc:
                problems.append(problem(name, f"audio does not decode as FLAC ({exc})", "row", uid))
                continue
            if sr != SAMPLE_RATE or len(wave) != n:
                problems.append(
                    problem(
                        name,
                        f"audio decodes to {len(wave)} samples at {sr} Hz; the row says "
                        f"num_samples {n} at {SAMPLE_RATE} Hz",
                        "row",
                        uid,
                    )
                )
    return problems


def _check_feature_rows(
    pf: pq.ParquetFile, name: str, info: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every row of a feature shard: ``feats`` holds ``frames x dim`` values of the folder's dtype."""
    itemsize = np.dtype(info.get("dtype", "float16")).itemsize
    problems = []
    columns = ["utt_id", "label", "feats", "frames", "dim"]
    for batch in pf.iter_batches(batch_size=ROW_GROUP_ROWS, columns=columns):
        for uid, label, feats, frames, dim in zip(*(batch.column(c).to_pylist() for c in columns)):
            if label not in (0, 1, None):
                problems.append(problem(name, f"label {label} is not 0, 1 or null", "row", uid))
            if feats is None or len(feats) != frames * dim * itemsize:
                problems.append(
                    problem(
                        name,
                        f"feats holds {0 if feats is None else len(feats)} bytes, expected "
                        f"{frames} x {dim} x {itemsize}",
                        "row",
                        uid,
                    )
                )
    return problems


def _check_shard(
    fs: pafs.FileSystem,
    base: str,
    name: str,
    entry: dict[str, Any] | None,
    features: dict[str, Any] | None,
) -> tuple[pa.Table | None, list[dict[str, Any]]]:
    """Read shard ``name`` fully: ``(its metadata columns or None, problems)``."""
    from spoofdet.data.features import FEATURE_COLUMNS

    expected = FEATURE_COLUMNS if features is not None else list(UTTERANCE_SCHEMA.names)
    keep = ["utt_id"] if features is not None else list(METADATA_COLUMNS)
    try:
        with fs.open_input_file(f"{base}/{name}") as fh:
            pf = pq.ParquetFile(fh)
            have = pf.schema_arrow.names
            if (features is None and not pf.schema_arrow.equals(UTTERANCE_SCHEMA)) or (
                features is not None and not set(expected) <= set(have)
            ):
                return None, [
                    problem(name, f"columns {have} are not the shard schema {expected}", "schema")
                ]
            if features is None:
                problems = _check_audio_rows(pf, name)
            else:
                problems = _check_feature_rows(pf, name, features)
            table = pf.read(columns=keep)
    except (OSError, pa.ArrowException) as exc:
        return None, [problem(name, f"not a readable Parquet file ({exc})", "unreadable")]
    if entry is not None and entry.get("rows") is not None and entry["rows"] != table.num_rows:
        problems.append(
            problem(
                name, f"holds {table.num_rows} rows, {FILES_FILE} lists {entry['rows']}", "rows"
            )
        )
    return table, problems


def _check_planned_rows(
    fs: pafs.FileSystem, base: str, index: int, name: str, ids: list[str]
) -> list[dict[str, Any]]:
    """Shard ``index`` and its quarantine part together hold exactly the rows of its plan (row
    group ``index`` of _work/input.parquet)."""
    try:
        with fs.open_input_file(f"{base}/{INPUT_FILE}") as fh:
            planned = pq.ParquetFile(fh).read_row_group(index, columns=["utt_id"])
    except (OSError, pa.ArrowException, IndexError) as exc:
        return [problem(INPUT_FILE, f"row group {index} cannot be read ({exc})", "unreadable")]
    try:
        with fs.open_input_file(quarantine_part_path(base, index)) as fh:
            held = pq.read_table(fh, columns=["utt_id"]).column("utt_id").to_pylist()
    except (OSError, pa.ArrowException) as exc:
        return [problem(name, f"its quarantine part cannot be read ({exc})", "plan")]
    got = ids + held
    want = planned.column("utt_id").to_pylist()
    if sorted(got) != sorted(want):
        return [
            problem(
                name,
                f"holds other rows than its plan: with its quarantine part {len(got)} rows, "
                f"row group {index} of {INPUT_FILE} has {len(want)} "
                f"({len(set(want) - set(got))} missing, {len(set(got) - set(want))} foreign)",
                "plan",
            )
        ]
    return []


def _compare_metadata(
    fs: pafs.FileSystem,
    base: str,
    shard_meta: pa.Table,
    file_of: dict[str, str],
    features: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """metadata.parquet holds exactly the shards' rows (feature folders: the same utt_ids)."""
    try:
        with fs.open_input_file(f"{base}/{METADATA_FILE}") as fh:
            meta = pq.read_table(fh)
    except FileNotFoundError:
        return [problem(METADATA_FILE, "missing", "missing")]
    except (OSError, pa.ArrowException) as exc:
        return [problem(METADATA_FILE, f"not a readable Parquet file ({exc})", "unreadable")]
    if features is None and meta.equals(shard_meta):
        return []
    meta_ids = meta.column("utt_id").to_pylist() if "utt_id" in meta.column_names else []
    shard_ids = shard_meta.column("utt_id").to_pylist()
    problems = [
        problem(METADATA_FILE, "in metadata.parquet but in no shard", "metadata", uid)
        for uid in sorted(set(meta_ids) - set(shard_ids))
    ] + [
        problem(METADATA_FILE, f"in {file_of[uid]} but not in metadata.parquet", "metadata", uid)
        for uid in sorted(set(shard_ids) - set(meta_ids))
    ]
    if problems or features is not None:
        return problems
    if meta.column_names != shard_meta.column_names:
        return [problem(METADATA_FILE, f"columns {meta.column_names} differ", "metadata")]
    theirs = {r["utt_id"]: r for r in shard_meta.to_pylist()}
    problems = [
        problem(
            METADATA_FILE,
            f"differs from its row in {file_of[r['utt_id']]}",
            "metadata",
            r["utt_id"],
        )
        for r in meta.to_pylist()
        if r != theirs[r["utt_id"]]
    ]
    return problems or [
        problem(METADATA_FILE, "rows are in another order than the shards'", "metadata")
    ]


def _present_shards(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{SHARDS_DIR}", allow_not_found=True))
    return sorted(
        f"{SHARDS_DIR}/{i.base_name}"
        for i in infos
        if i.type == pafs.FileType.File and TMP_MARK not in i.base_name
    )


def _verify(
    fs: pafs.FileSystem, base: str, *, checksums: bool = True, rows: bool = True
) -> dict[str, Any]:
    """The full check of :func:`spoofdet.data.shard_verify.verify` on an open filesystem."""
    report: dict[str, Any] = {"out": base, "ok": False, "files": 0, "rows": 0, "problems": []}
    problems: list[dict[str, Any]] = report["problems"]
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        problems.append(problem(".", f"{base} is not a folder", "missing"))
        return report
    features = _feature_info(fs, base)
    plan = None
    if features is None and exists(fs, f"{base}/{PLAN_FILE}"):
        try:
            plan = read_json(fs, f"{base}/{PLAN_FILE}")
        except (OSError, ValueError) as exc:
            problems.append(problem(PLAN_FILE, f"not readable JSON ({exc})", "unreadable"))
    listing, list_problems = read_file_list(fs, base)
    entries = {e["name"]: e for e in listing["files"]} if listing is not None else {}
    if listing is not None:
        problems += compare_with_list(fs, base, listing)
        names = sorted(n for n in entries if n.startswith(f"{SHARDS_DIR}/"))
        if plan is not None and set(entries) != set(job_file_names(plan["shards"])):
            problems.append(
                problem(
                    FILES_FILE, f"does not list the files of the plan in {PLAN_FILE}", "bad_list"
                )
            )
    else:
        problems += list_problems
        names = _present_shards(fs, base)
        if plan is not None:
            planned = {shard_name(i) for i in range(plan["shards"])}
            problems += stray_problems(fs, base, planned)
            problems += [
                problem(n, "missing (planned, never written or deleted)", "missing")
                for n in sorted(planned - set(names))
            ]
            names = [n for n in names if n in planned]
    gone = {p["file"] for p in problems if p["kind"] in ("missing", "size")}
    if checksums:
        for name, entry in entries.items():
            if name in gone:
                continue
            report["files"] += 1
            if sha256_file(fs, f"{base}/{name}") != entry["sha256"]:
                problems.append(
                    problem(
                        name,
                        f"sha256 differs from {FILES_FILE} (the file changed after it was written)",
                        "checksum",
                    )
                )
    if not rows:
        report["ok"] = not problems
        return report
    tables, file_of = [], {}
    index_of = {shard_name(i): i for i in range(plan["shards"])} if plan is not None else {}
    whole = not any(p["file"].startswith(f"{SHARDS_DIR}/") for p in problems)
    for name in names:
        if name in gone and not exists(fs, f"{base}/{name}"):
            continue
        table, found = _check_shard(fs, base, name, entries.get(name), features)
        problems += found
        if table is None:
            whole = False
            continue
        report["rows"] += table.num_rows
        ids = table.column("utt_id").to_pylist()
        for uid in ids:
            if uid in file_of:
                problems.append(problem(name, f"also in {file_of[uid]}", "duplicate", uid))
            file_of.setdefault(uid, name)
        if name in index_of and exists(fs, f"{base}/{INPUT_FILE}"):
            problems += _check_planned_rows(fs, base, index_of[name], name, ids)
        tables.append(table)
    if not exists(fs, f"{base}/{METADATA_FILE}"):
        if METADATA_FILE not in gone:
            problems.append(problem(METADATA_FILE, "missing", "missing"))
    elif whole:  # compared only when every shard was read: else every row of a lost one shows
        shard_meta = pa.concat_tables(tables) if tables else UTTERANCE_SCHEMA.empty_table()
        if features is None:
            shard_meta = shard_meta.select(list(METADATA_COLUMNS))
        problems += _compare_metadata(fs, base, shard_meta, file_of, features)
    if plan is not None:
        written = sum(t.num_rows for t in tables)
        problems += _check_bookkeeping(fs, base, plan, written, whole, gone)
    report["ok"] = not problems
    return report


def _check_bookkeeping(
    fs: pafs.FileSystem,
    base: str,
    plan: dict[str, Any],
    written: int,
    whole: bool,
    gone: set[str],
) -> list[dict[str, Any]]:
    """A prepare folder: summary.json exists; quarantine.parquet reads; written + quarantined
    = rows_in (when every shard was read). Files in ``gone`` were reported already."""
    problems = []
    if not exists(fs, f"{base}/{SUMMARY_FILE}"):
        problems.append(problem(SUMMARY_FILE, "missing: the job did not finish", "missing"))
    if QUARANTINE_FILE in gone:  # missing or resized: named already, its rows are not counted
        return problems
    try:
        with fs.open_input_file(f"{base}/{QUARANTINE_FILE}") as fh:
            quarantined = pq.ParquetFile(fh).metadata.num_rows
    except FileNotFoundError:
        return problems + [problem(QUARANTINE_FILE, "missing", "missing")]
    except (OSError, pa.ArrowException) as exc:
        return problems + [problem(QUARANTINE_FILE, f"not readable ({exc})", "unreadable")]
    if whole and written + quarantined != plan["rows_in"]:
        problems.append(
            problem(
                QUARANTINE_FILE,
                f"{written} rows in shards + {quarantined} quarantined != {plan['rows_in']} "
                f"rows in ({PLAN_FILE})",
                "bookkeeping",
            )
        )
    return problems
