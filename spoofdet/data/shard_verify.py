"""Check and repair finished shard folders: ``spoofdet prepare --verify`` / ``--repair``.

:func:`verify` checks a folder fully (file list, checksums, every row decodes, metadata equals
the shards, the shards hold their planned rows) and writes nothing; :func:`repair` deletes what
is broken or stray, rewrites it from the saved plan and finishes the folder again, byte for byte
as before.

The folder layout (file names, the file list, the cheap reader check) is owned by
:mod:`spoofdet.data.shards`. The writer, :mod:`spoofdet.data.shard_writer`, writes the folders;
this module sits on top of it: :func:`repair` rewrites shards with the writer's own code, and the
row checks stay in the writer (``_verify``) because :func:`~spoofdet.data.shard_writer.run` uses
them to refuse damaged shards before resuming. Imports run one way, this module -> shard_writer.
The command line over both is :mod:`spoofdet.data.shard_cli`; why: ``docs/design/sharding.md``.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from spoofdet.data.shard_plan import make_plan, same_input, write_input
from spoofdet.data.shard_writer import (
    BROKEN_KINDS,
    _ray_cpus,
    _seconds_since,
    _shard_results,
    _show_progress,
    _verify,
    finalize,
)
from spoofdet.data.shards import (
    FEATURES_FILE,
    INPUT_FILE,
    PLAN_FILE,
    QUARANTINE_PARTS_DIR,
    SHARDS_DIR,
    ShardError,
    done_shards,
    exists,
    read_json,
    remove_stale_tmp,
    resolve_out,
    shard_name,
    written_shards,
)

__all__ = ["repair", "verify"]


def verify(out: str, *, filesystem: pafs.FileSystem | None = None) -> dict[str, Any]:
    """Check the folder ``out`` fully and name every problem; nothing is written.

    Checks: the file list (present, well formed, every listed file there with its size and sha256,
    nothing stray in ``shards/``); every shard opens with the shard schema and each row decodes
    (FLAC -> ``num_samples`` samples at 16 kHz; label 0, 1 or null; feature folders: ``feats``
    holds ``frames x dim`` values); no utterance twice; rows per file as listed;
    ``metadata.parquet`` equals the shards' rows; with a plan, each shard plus its quarantine part
    holds exactly its planned rows, ``summary.json`` exists and written + quarantined = rows_in.

    Returns:
        ``{"out", "ok", "files" (checksums compared), "rows" (rows decoded), "problems": [{"file",
        "kind", "problem", "utt_id"?}]}``.
    """
    fs, base = resolve_out(out, filesystem)
    return _verify(fs, base)


def _plan_for_repair(
    fs: pafs.FileSystem,
    base: str,
    manifest_table: pa.Table | None,
    *,
    corpus: str | None,
    shard_mb: float,
    shard_rows: int | None,
    min_seconds: float,
    parallelism: int,
) -> dict[str, Any]:
    """The saved plan (checked against ``manifest_table`` when given; its input manifest
    rewritten when gone), or a new one from ``manifest_table`` when ``_work/`` is gone."""
    if exists(fs, f"{base}/{PLAN_FILE}"):
        plan = read_json(fs, f"{base}/{PLAN_FILE}")
        if manifest_table is not None and not same_input(plan, manifest_table):
            raise ShardError(
                f"{base} was planned for another input ({plan['rows_in']} rows of "
                f"{plan['corpus']}): give --repair the CORPUS, --root and --split of the original "
                "`spoofdet prepare`, or none of them to use the saved plan"
            )
        if not exists(fs, f"{base}/{INPUT_FILE}"):
            if manifest_table is None:
                raise ShardError(
                    f"{base}/{INPUT_FILE} is missing: give --repair the CORPUS, --root and --split "
                    "of the original `spoofdet prepare` so that it can be written again"
                )
            write_input(fs, base, manifest_table, plan["rows_per_shard"])
        return plan
    if manifest_table is None or corpus is None:
        raise ShardError(
            f"{base} has no {PLAN_FILE}: give --repair the CORPUS, --root, --split and "
            "--shard-rows/--shard-mb of the original `spoofdet prepare`"
        )
    return make_plan(
        fs,
        base,
        manifest_table,
        corpus=corpus,
        shard_mb=shard_mb,
        shard_rows=shard_rows,
        min_seconds=min_seconds,
        parallelism=parallelism,
    )


def repair(
    out: str,
    manifest_table: pa.Table | None = None,
    *,
    corpus: str | None = None,
    shard_mb: float = 192.0,
    shard_rows: int | None = None,
    min_seconds: float = 0.1,
    executor: str = "local",
    num_cpus: int | None = None,
    progress: bool | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> dict[str, Any]:
    """Make ``out`` whole again: delete broken or stray shard files, rewrite every missing shard
    from the saved plan (``_work/``), finish again (metadata, quarantine, summary, file list).

    The same inputs give the same bytes, so a repaired folder is byte-identical to the original.
    ``manifest_table`` (and ``corpus`` and the shard settings) are needed only when ``_work/`` is
    gone; when given with a saved plan they must be its input. Feature folders are refused.

    Returns:
        The summary of :func:`finalize` plus ``deleted`` and ``rewritten`` (file names),
        ``found`` (the problems before), ``verify`` (the report after) and ``seconds``.
    """
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', not {executor!r}")
    t0 = time.perf_counter()
    fs, base = resolve_out(out, filesystem)
    if exists(fs, f"{base}/{FEATURES_FILE}"):
        raise ShardError(
            f"{base} is a feature folder ({FEATURES_FILE}); it cannot be repaired: extract it "
            "again into a new folder with `spoofdet features --shards SOURCE --out NEW_DIR`"
        )
    needs_plan = manifest_table is not None and not exists(fs, f"{base}/{PLAN_FILE}")
    plan = _plan_for_repair(
        fs,
        base,
        manifest_table,
        corpus=corpus,
        shard_mb=shard_mb,
        shard_rows=shard_rows,
        min_seconds=min_seconds,
        parallelism=_ray_cpus(num_cpus) if executor == "ray" and needs_plan else 1,
    )
    n = plan["shards"]
    remove_stale_tmp(fs, f"{base}/{SHARDS_DIR}")
    remove_stale_tmp(fs, f"{base}/{QUARANTINE_PARTS_DIR}")
    before = _verify(fs, base)
    deleted = sorted(
        {
            p["file"]
            for p in before["problems"]
            if p["kind"] in BROKEN_KINDS and p["file"].startswith(f"{SHARDS_DIR}/")
        }
    )
    for name in deleted:
        if fs.get_file_info(f"{base}/{name}").type == pafs.FileType.Directory:
            fs.delete_dir(f"{base}/{name}")
        else:
            fs.delete_file(f"{base}/{name}")
    todo = [i for i in range(n) if i not in done_shards(fs, base, n)]
    min_seconds = plan["settings"]["min_seconds"]
    if todo:
        results = _shard_results(todo, fs, base, out, min_seconds, executor, num_cpus)
        _show_progress(results, n, n - len(todo), plan["corpus"], progress)
    missing = set(range(n)) - written_shards(fs, base, n)
    if missing:
        raise ShardError(
            f"{base}: shards {sorted(missing)[:10]} were not written; run --repair again"
        )
    summary = finalize(fs, base, plan)
    return {
        **summary,
        "deleted": deleted,
        "rewritten": [shard_name(i) for i in todo],
        "found": before["problems"],
        "verify": _verify(fs, base),
        "seconds": _seconds_since(t0),
    }
