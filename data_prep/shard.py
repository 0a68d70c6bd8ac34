"""Shard a corpus into Parquet with Ray Data: decode once, 16 kHz mono FLAC, nothing lost, resumable.

Run locally (Ray started in-process) or through the CLI::

    python -m data_prep.shard codecfake --root ~/data/Codecfake --out runs/shards/codecfake
    spoofdet prepare codecfake --root ~/data/Codecfake --out runs/shards/codecfake --json

Submit to a cluster (the corpus root must be readable from every node; --out may be any
filesystem pyarrow supports, e.g. s3:// or gs://)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m data_prep.shard codecfake --root /mnt/corpora/Codecfake \\
        --out s3://my-bucket/spoofdet/shards/codecfake --json

Output layout under ``--out``::

    shards/part-00000.parquet ...  rows of spoofdet.data.schema.UTTERANCE_SCHEMA with `audio` = 16 kHz mono FLAC
    metadata.parquet               the same rows without the audio column (counts, durations, breakdowns)
    quarantine.parquet             utt_id, source_path, reason, detail: every input row not written
    summary.json                   rows_in, rows_written, quarantined, by_reason, shards, ...
    _work/                         the plan, the input manifest (one row group per shard), quarantine parts

How it stays correct: the input manifest is split into fixed row ranges ("shards") once, and the
plan is saved. Each shard is one task: it decodes its rows, writes its quarantine part, then
writes its Parquet file under a temporary name and renames it. A shard file exists only when
complete, so re-running the same command after a crash skips finished shards and redoes the
rest; re-running a finished job is a no-op. Always ``rows_in = rows_written + quarantined``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spoofdet.data.audio import AudioError, encode_flac, load_16k
from spoofdet.data.schema import METADATA_COLUMNS, SAMPLE_RATE, TableBuilder

PLAN_VERSION = 1
QUARANTINE_SCHEMA = pa.schema(
    [
        ("utt_id", pa.string()),
        ("source_path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
ROW_GROUP_ROWS = 64
#: Testing aid: SIGKILL the process after writing shard N's temporary file, before its rename.
KILL_ENV = "SPOOFDET_SHARD_KILL_AT"


class ShardError(RuntimeError):
    """The output folder holds a different job, or the job broke its own invariants."""


# ----------------------------------------------------------------------------- filesystem


def resolve_out(out: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, base path)`` for a local path or any pyarrow URI (s3://, gs://, file://)."""
    if filesystem is not None:
        return filesystem, out.rstrip("/")
    if "://" in out:
        fs, path = pafs.FileSystem.from_uri(out)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(out))


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as fh:
        fh.write(data)
    fs.move(tmp, path)


def _write_table_atomic(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, path)


def _remove_stale_tmp(fs: pafs.FileSystem, folder: str) -> int:
    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if ".tmp-" in info.base_name:
            fs.delete_file(info.path)
            removed += 1
    return removed


def shard_path(base: str, index: int) -> str:
    return f"{base}/shards/part-{index:05d}.parquet"


def _quarantine_part(base: str, index: int) -> str:
    return f"{base}/_work/quarantine/part-{index:05d}.parquet"


# ----------------------------------------------------------------------------- planning


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
    plan_path = f"{base}/_work/plan.json"
    fp = fingerprint(table)
    settings = {
        "corpus": corpus,
        "shard_mb": shard_mb,
        "shard_rows": shard_rows,
        "min_seconds": min_seconds,
    }
    if _exists(fs, plan_path):
        with fs.open_input_stream(plan_path) as fh:
            plan = json.loads(fh.read())
        if plan["fingerprint"] != fp:
            raise ShardError(
                f"{base} already holds shards of a different input manifest "
                f"({plan['rows_in']} rows of {plan['corpus']}); use a new --out, or delete it to start over"
            )
        changed = {
            k: (plan["settings"].get(k), v)
            for k, v in settings.items()
            if plan["settings"].get(k) != v
        }
        if changed:
            raise ShardError(
                f"{base} was started with other settings {changed} (saved, given); "
                "re-run with the saved settings or use a new --out"
            )
        return plan
    rows_per_shard = shard_rows or balanced_rows_per_shard(
        table.num_rows,
        estimate_rows_per_shard(table, shard_mb, min_seconds=min_seconds),
        parallelism,
    )
    fs.create_dir(f"{base}/_work/quarantine", recursive=True)
    fs.create_dir(f"{base}/shards", recursive=True)
    tmp = f"{base}/_work/input.parquet.tmp-{uuid.uuid4().hex}"
    pq.write_table(table, tmp, filesystem=fs, row_group_size=rows_per_shard)
    fs.move(tmp, f"{base}/_work/input.parquet")
    n_shards = max(1, -(-table.num_rows // rows_per_shard))
    plan = {
        "version": PLAN_VERSION,
        "fingerprint": fp,
        "corpus": corpus,
        "rows_in": table.num_rows,
        "rows_per_shard": rows_per_shard,
        "shards": n_shards,
        "settings": settings,
    }
    _write_bytes_atomic(fs, plan_path, json.dumps(plan, indent=2).encode())
    return plan


# ----------------------------------------------------------------------------- one shard


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
    with fs.open_input_file(f"{base}/_work/input.parquet") as fh:
        rows = pq.ParquetFile(fh).read_row_group(index).to_pylist()
    quarantined: list[dict[str, str]] = []
    tmp = f"{shard_path(base, index)}.tmp-{uuid.uuid4().hex}"
    written, audio_seconds = 0, 0.0
    from spoofdet.data.schema import UTTERANCE_SCHEMA

    with pq.ParquetWriter(tmp, UTTERANCE_SCHEMA, filesystem=fs, compression="none") as writer:
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
    _write_table_atomic(
        fs,
        _quarantine_part(base, index),
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


def _done(fs: pafs.FileSystem, base: str, n_shards: int) -> set[int]:
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/shards", allow_not_found=True))
    names = {i.base_name for i in infos}
    return {i for i in range(n_shards) if f"part-{i:05d}.parquet" in names}


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
        [pq.read_table(_quarantine_part(base, i), filesystem=fs) for i in range(n)]
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
            f"bookkeeping broken: {written} written + {quarantine.num_rows} quarantined != {plan['rows_in']} in"
        )
    ids = pa.concat_arrays(
        [meta.column("utt_id").combine_chunks(), quarantine.column("utt_id").combine_chunks()]
    )
    if len(ids.unique()) != plan["rows_in"]:
        raise ShardError("an utterance appears twice across shards and quarantine")
    _write_table_atomic(fs, f"{base}/quarantine.parquet", quarantine)
    _write_table_atomic(fs, f"{base}/metadata.parquet", meta)
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
    _write_bytes_atomic(fs, f"{base}/summary.json", json.dumps(summary, indent=2).encode())
    return summary


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
    if executor not in ("ray", "local"):
        raise ValueError(f"executor must be 'ray' or 'local', not {executor!r}")
    if executor == "ray" and filesystem is not None:
        raise ValueError(
            "an in-memory filesystem object cannot reach Ray workers; pass a URI instead"
        )
    if manifest_table.num_rows == 0:
        raise ShardError("the manifest has no rows: nothing to shard (check --root and --split)")
    t0 = time.perf_counter()
    fs, base = resolve_out(out, filesystem)
    planned = _exists(fs, f"{base}/_work/plan.json")
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
    _remove_stale_tmp(fs, f"{base}/shards")
    _remove_stale_tmp(fs, f"{base}/_work/quarantine")
    done = _done(fs, base, n)
    todo = [i for i in range(n) if i not in done]
    if not todo and _exists(fs, f"{base}/summary.json"):
        with fs.open_input_stream(f"{base}/summary.json") as fh:
            summary = json.loads(fh.read())
        return {**summary, "shards_done_before": n, "seconds": round(time.perf_counter() - t0, 3)}
    if todo:
        from tqdm import tqdm

        bar = tqdm(
            total=n,
            initial=len(done),
            desc=f"sharding {corpus}",
            unit="shard",
            file=sys.stderr,
            disable=(not sys.stderr.isatty()) if progress is None else not progress,
        )
        if executor == "ray":
            _ray_cpus(num_cpus)
            results = _run_ray(todo, out if "://" in out else base, base, min_seconds)
        else:
            results = (write_shard(i, base, min_seconds=min_seconds, filesystem=fs) for i in todo)
        for stats in results:
            bar.update(1)
            bar.set_postfix(quarantined=stats["quarantined"], refresh=False)
        bar.close()
    missing = set(range(n)) - _done(fs, base, n)
    if missing:
        raise ShardError(
            f"shards {sorted(missing)[:10]} were not written; re-run the same command to resume"
        )
    summary = finalize(fs, base, plan)
    return {
        **summary,
        "shards_done_before": len(done),
        "seconds": round(time.perf_counter() - t0, 3),
    }


# ----------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spoofdet.data.corpora import CORPORA

    parser.add_argument(
        "corpus", choices=list(CORPORA), metavar="CORPUS", help="one of: " + ", ".join(CORPORA)
    )
    parser.add_argument("--root", required=True, help="corpus root (as for `spoofdet manifest`)")
    parser.add_argument(
        "--out",
        required=True,
        help="output folder: local path or a pyarrow URI (s3://..., gs://...)",
    )
    parser.add_argument(
        "--split",
        default=None,
        help="restrict to one split/phase/subset (as for `spoofdet manifest`)",
    )
    parser.add_argument(
        "--shard-mb", type=float, default=192.0, help="target shard size in MiB (default 192)"
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=None,
        help="fix rows per shard instead (overrides --shard-mb)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.1,
        help="quarantine clips shorter than this (default 0.1 s)",
    )
    parser.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="ray: Ray Data tasks, one per shard (default); local: one process, no Ray",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="CPUs for a Ray started in-process (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{s['corpus']} -> {s['out']}",
        f"  rows in {s['rows_in']:,} = written {s['rows_written']:,} + quarantined {s['quarantined']:,}"
        f"   ({s['shards']} shard(s), {s['audio_hours']} h of audio)",
    ]
    if s["by_reason"]:
        lines.append(
            "  quarantined by reason: "
            + ", ".join(f"{k} {v}" for k, v in s["by_reason"].items())
            + f"  (see {s['out']}/quarantine.parquet)"
        )
    if s.get("shards_done_before") == s["shards"]:
        lines.append("  already complete: nothing to do")
    elif s.get("shards_done_before"):
        lines.append(f"  resumed: {s['shards_done_before']} shard(s) were already written")
    lines.append(f"  {s['seconds']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.shard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    from spoofdet.data.corpora import ManifestError, prepare

    try:
        manifest = prepare(args.corpus, args.root, args.split, check_audio=False)
        summary = run(
            manifest.table,
            args.out,
            corpus=args.corpus,
            shard_mb=args.shard_mb,
            shard_rows=args.shard_rows,
            min_seconds=args.min_seconds,
            executor=args.executor,
            num_cpus=args.num_cpus,
        )
    except (ManifestError, ShardError, ValueError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
