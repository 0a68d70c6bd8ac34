"""The on-disk layout of a shard folder (what ``spoofdet prepare`` writes), in one place.

    shards/part-00000.parquet ...  rows of UTTERANCE_SCHEMA; `audio` = 16 kHz mono FLAC bytes
    metadata.parquet               the same rows without the audio column
    quarantine.parquet             utt_id, source_path, reason, detail: every input row not written
    summary.json                   rows_in, rows_written, quarantined, by_reason, shards, ...
    files.json                     the file list: name, rows, bytes, sha256 of every shard,
                                   metadata.parquet and quarantine.parquet (written last)
    _work/                         plan.json, input.parquet, quarantine/part-NNNNN.parquet

Paths are joined with ``/`` so that any pyarrow filesystem works (local, s3://, gs://); every file
appears by an atomic rename from a ``.tmp-`` name. A job is complete when every shard of its plan,
``metadata.parquet``, ``quarantine.parquet``, ``summary.json`` and ``files.json`` exist and match
the list, and no shard waits for a retry of unreadable (``io_error``) files (:func:`is_complete`).
Cached-feature folders (``data_prep.features``) have ``shards/``, ``metadata.parquet`` and a
``files.json`` too, but no plan or summary.

Readers take their shard files from :func:`checked_shard_files`, which compares the folder with
its file list (names and sizes, no checksums: cheap) and refuses a missing, stray or truncated
file, naming it. :func:`has_metadata` and :func:`is_readable` stay the quick "finished?" tests of
a local folder. The writer is :mod:`spoofdet.data.shard_writer`, ``--verify``/``--repair`` are
:mod:`spoofdet.data.shard_verify`; the why is in ``docs/design/sharding.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from spoofdet.data import DataError
from spoofdet.data.features import FEATURES_FILE  # a feature folder: it cannot be repaired
from spoofdet.errors import Problems

SHARDS_DIR = "shards"
METADATA_FILE = "metadata.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SUMMARY_FILE = "summary.json"
#: The file list: name, rows, bytes and sha256 of every shard, metadata.parquet and
#: quarantine.parquet (feature folders: shards and metadata.parquet); written last.
FILES_FILE = "files.json"
FILE_LIST_VERSION = 1
WORK_DIR = "_work"
PLAN_FILE = f"{WORK_DIR}/plan.json"
INPUT_FILE = f"{WORK_DIR}/input.parquet"
QUARANTINE_PARTS_DIR = f"{WORK_DIR}/quarantine"
#: A file being written carries this mark plus a random suffix until its atomic rename.
TMP_MARK = ".tmp-"
#: Quarantine reasons that may pass (a fixed permission, a flaky mount): a shard holding such a
#: row is not done, so the next ``prepare`` run rewrites it and retries those files.
RETRY_REASONS = ("io_error",)
#: The columns of ``quarantine.parquet`` and of its per-shard parts.
QUARANTINE_SCHEMA = pa.schema(
    [
        ("utt_id", pa.string()),
        ("source_path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
#: Problems listed in a reader's error message; the others are counted.
_LISTED = 10


class ShardError(DataError):
    """A shard folder is damaged, unfinished or holds a different job; the message names the
    file and says what to do (a :class:`~spoofdet.errors.SpoofdetError`: the CLI exits 2)."""


def part_name(index: int) -> str:
    """``part-NNNNN.parquet``: the file name of shard ``index`` (and of its quarantine part)."""
    return f"part-{index:05d}.parquet"


def shard_name(index: int) -> str:
    """``shards/part-NNNNN.parquet``: shard ``index`` relative to the folder (as files.json names it)."""
    return f"{SHARDS_DIR}/{part_name(index)}"


def shard_path(base: str, index: int) -> str:
    return f"{base}/{shard_name(index)}"


def quarantine_part_path(base: str, index: int) -> str:
    return f"{base}/{QUARANTINE_PARTS_DIR}/{part_name(index)}"


def job_file_names(n_shards: int) -> list[str]:
    """What the file list of a ``spoofdet prepare`` folder covers, relative to the folder."""
    return [shard_name(i) for i in range(n_shards)] + [METADATA_FILE, QUARANTINE_FILE]


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


def needs_retry(fs: pafs.FileSystem, base: str, index: int) -> bool:
    """Whether shard ``index`` must be written again although its file exists: its quarantine
    part is missing or unreadable, or holds rows quarantined for a reason in RETRY_REASONS."""
    try:
        with fs.open_input_file(quarantine_part_path(base, index)) as fh:
            reasons = pq.read_table(fh, columns=["reason"]).column("reason").to_pylist()
    except (OSError, pa.ArrowException):
        return True
    return any(r in RETRY_REASONS for r in reasons)


def written_shards(fs: pafs.FileSystem, base: str, n_shards: int) -> set[int]:
    """Indices of the planned shards whose file exists (a shard file exists only when complete)."""
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{SHARDS_DIR}", allow_not_found=True))
    names = {i.base_name for i in infos}
    return {i for i in range(n_shards) if part_name(i) in names}


def done_shards(fs: pafs.FileSystem, base: str, n_shards: int) -> set[int]:
    """Indices of the planned shards that are done: written (:func:`written_shards`) and no row
    of them waits for a retry (:func:`needs_retry`)."""
    return {i for i in written_shards(fs, base, n_shards) if not needs_retry(fs, base, i)}


def is_finished(fs: pafs.FileSystem, base: str, n_shards: int, done: set[int]) -> bool:
    """The writer's own test: all ``n_shards`` planned shards are ``done``, summary.json exists
    and the folder matches its file list (which lists metadata.parquet and quarantine.parquet)."""
    if len(done) != n_shards or not exists(fs, f"{base}/{SUMMARY_FILE}"):
        return False
    listing, _ = read_file_list(fs, base)
    if listing is None or {e["name"] for e in listing["files"]} != set(job_file_names(n_shards)):
        return False
    return not compare_with_list(fs, base, listing)


def is_complete(folder: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> bool:
    """Whether ``folder`` (a path or pyarrow URI) holds a finished shard job, as the writer
    decides on a re-run (:func:`is_finished`): a re-run of ``prepare`` would change nothing."""
    fs, base = resolve_out(os.fspath(folder), filesystem)
    if not exists(fs, f"{base}/{PLAN_FILE}"):
        return False
    n_shards = read_json(fs, f"{base}/{PLAN_FILE}")["shards"]
    return is_finished(fs, base, n_shards, done_shards(fs, base, n_shards))


def has_metadata(folder: str | os.PathLike) -> bool:
    """Whether local ``folder`` holds ``metadata.parquet``, which both writers (the shard job and
    ``data_prep.features``) write when they finish: the quick "finished?" test of readers (the
    full one, against the file list, is :func:`checked_shard_files`)."""
    return (Path(folder) / METADATA_FILE).is_file()


def is_readable(folder: str | os.PathLike) -> bool:
    """Whether local ``folder`` can be read as a source: finished (:func:`has_metadata`) and
    holding ``shards/`` (audio shards or cached features)."""
    return has_metadata(folder) and (Path(folder) / SHARDS_DIR).is_dir()


# ----------------------------------------------------------------------------- the file list


def problem(file: str, text: str, kind: str, utt_id: str | None = None) -> dict[str, Any]:
    """One problem of a folder: ``file`` relative to the folder, ``kind`` (missing, size, stray,
    checksum, no_list, bad_list, unreadable, rows, row, metadata, ...), optionally the row."""
    item: dict[str, Any] = {"file": file, "kind": kind, "problem": text}
    if utt_id is not None:
        item["utt_id"] = utt_id
    return item


def problem_line(item: dict[str, Any]) -> str:
    """``file: row UTT: text`` (or ``file: text``): how a problem is printed."""
    row = f"row {item['utt_id']}: " if item.get("utt_id") is not None else ""
    return f"{item['file']}: {row}{item['problem']}"


def sha256_file(fs: pafs.FileSystem, path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with fs.open_input_stream(path) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_entry(fs: pafs.FileSystem, base: str, name: str) -> dict[str, Any]:
    """``{name, rows, bytes, sha256}`` of ``base/name`` (rows from a Parquet footer, else None)."""
    path = f"{base}/{name}"
    rows = None
    if name.endswith(".parquet"):
        with fs.open_input_file(path) as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
    return {
        "name": name,
        "rows": rows,
        "bytes": fs.get_file_info(path).size,
        "sha256": sha256_file(fs, path),
    }


def write_file_list(fs: pafs.FileSystem, base: str, names: list[str]) -> dict[str, Any]:
    """Write ``files.json`` for ``names`` (relative to ``base``) by an atomic rename; the list.

    Writers call it last: a folder with a file list is finished. The JSON holds no time or
    absolute path, so the same files give the same bytes.
    """
    listing = {
        "version": FILE_LIST_VERSION,
        "files": [file_entry(fs, base, n) for n in sorted(names)],
    }
    write_bytes_atomic(fs, f"{base}/{FILES_FILE}", (json.dumps(listing, indent=1) + "\n").encode())
    return listing


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return False
    name = entry["name"]
    return (
        not name.startswith("/")
        and ".." not in name.split("/")
        and isinstance(entry.get("bytes"), int)
        and isinstance(entry.get("sha256"), str)
        and (entry.get("rows") is None or isinstance(entry.get("rows"), int))
    )


def read_file_list(
    fs: pafs.FileSystem, base: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(files.json contents, [])``, or ``(None, [the problem])`` when it is absent or malformed."""
    path = f"{base}/{FILES_FILE}"
    try:
        listing = read_json(fs, path)
    except FileNotFoundError:
        return None, [problem(FILES_FILE, "missing: the folder has no file list", "no_list")]
    except (OSError, ValueError) as exc:
        return None, [problem(FILES_FILE, f"not readable JSON ({exc})", "bad_list")]
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, list) or not all(_valid_entry(e) for e in files):
        return None, [
            problem(
                FILES_FILE,
                'not a file list: expected {"version", "files": [{name, rows, bytes, sha256}]}',
                "bad_list",
            )
        ]
    return listing, []


def stray_problems(fs: pafs.FileSystem, base: str, allowed: set[str]) -> list[dict[str, Any]]:
    """Every entry of ``shards/`` not in ``allowed`` (names relative to ``base``), except a
    writer's temporary ``.tmp-`` files: readers would read a stray copy's rows twice."""
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{SHARDS_DIR}", allow_not_found=True))
    out = []
    for info in sorted(infos, key=lambda i: i.base_name):
        name = f"{SHARDS_DIR}/{info.base_name}"
        if name in allowed or TMP_MARK in info.base_name:
            continue
        what = "folder" if info.type == pafs.FileType.Directory else "file"
        out.append(
            problem(
                name,
                f"a stray {what}, not in {FILES_FILE} (readers would read its rows as well)",
                "stray",
            )
        )
    return out


def compare_with_list(
    fs: pafs.FileSystem, base: str, listing: dict[str, Any]
) -> list[dict[str, Any]]:
    """The cheap check (names and sizes, no checksums): every listed file exists with its listed
    size, and ``shards/`` holds nothing else."""
    problems = []
    for entry in listing["files"]:
        info = fs.get_file_info(f"{base}/{entry['name']}")
        rows = f"{entry['rows']:,} rows, " if entry.get("rows") is not None else ""
        if info.type == pafs.FileType.NotFound:
            problems.append(
                problem(
                    entry["name"],
                    f"missing ({FILES_FILE} lists {rows}{entry['bytes']:,} bytes)",
                    "missing",
                )
            )
        elif info.size != entry["bytes"]:
            problems.append(
                problem(
                    entry["name"],
                    f"{info.size:,} bytes, but {FILES_FILE} lists {entry['bytes']:,} "
                    "(truncated or rewritten since it was written)",
                    "size",
                )
            )
    listed = {e["name"] for e in listing["files"]}
    return problems + stray_problems(fs, base, listed)


def folder_problems(fs: pafs.FileSystem, base: str) -> tuple[dict | None, list[dict[str, Any]]]:
    """``(file list or None, problems of the cheap check)`` for the folder at ``base``."""
    listing, problems = read_file_list(fs, base)
    if listing is None:
        return None, problems
    problems = compare_with_list(fs, base, listing)
    if METADATA_FILE not in {e["name"] for e in listing["files"]}:
        problems.append(problem(FILES_FILE, f"does not list {METADATA_FILE}", "bad_list"))
    return listing, problems


def _what_to_do(shown: str, fs: pafs.FileSystem, base: str, kinds: set[str]) -> str:
    """The advice that ends a reader's error for the folder spelled ``shown``."""
    if exists(fs, f"{base}/{FEATURES_FILE}"):
        return (
            f"A feature folder cannot be repaired: extract it again into a new folder with "
            f"`spoofdet features --shards SOURCE --out NEW_DIR` (SOURCE is in {FEATURES_FILE}); "
            f"`spoofdet prepare --verify --out {shown}` lists every problem."
        )
    if kinds <= {"no_list"}:
        if not exists(fs, f"{base}/{METADATA_FILE}") and not exists(fs, f"{base}/{SHARDS_DIR}"):
            return (
                f"Write the shards with `spoofdet prepare CORPUS --root ROOT --out {shown}` "
                "(or re-run the same command to finish an interrupted job)."
            )
        return (
            f"It was written by a spoofdet older than file lists, or its job did not finish: "
            f"re-run the same `spoofdet prepare CORPUS --root ROOT --out {shown}` command (it "
            f"checks every row and writes {FILES_FILE}), or run "
            f"`spoofdet prepare --repair --out {shown}`."
        )
    return (
        f"See every problem with `spoofdet prepare --verify --out {shown}`, then rewrite what is "
        f"broken with `spoofdet prepare --repair --out {shown}` (add CORPUS --root ROOT if "
        f"{shown}/{WORK_DIR}/ is gone)."
    )


def checked_shard_files(
    folder: str | os.PathLike, filesystem: pafs.FileSystem | None = None
) -> list[str]:
    """The shard files of a finished folder, sorted, after comparing it with its file list.

    Readers call this instead of listing ``shards/``: a deleted shard would silently shrink a set,
    a stray copy would duplicate rows, a truncated one would fail late naming no file. The check is
    cheap (names and sizes; checksums are for ``spoofdet prepare --verify``). Paths are
    ``folder`` as given joined with ``shards/part-...`` (local paths or pyarrow URIs).

    Raises:
        ShardError: naming every missing, stray or size-changed file (metadata.parquet included),
            or the missing/malformed file list, and saying what to do.
    """
    shown = os.fspath(folder).rstrip("/") or "/"
    fs, base = resolve_out(os.fspath(folder), filesystem)
    listing, problems = folder_problems(fs, base)
    if problems:
        found = Problems(limit=_LISTED)
        found.extend(f"{shown}/{problem_line(p)}" for p in problems)
        if {p["kind"] for p in problems} <= {"no_list"}:
            if exists(fs, f"{base}/{METADATA_FILE}") or exists(fs, f"{base}/{SHARDS_DIR}"):
                head = f"{shown}: no {FILES_FILE}, so its files cannot be checked."
            else:
                head = f"{shown}: no shards in {shown}/{SHARDS_DIR} (and no {FILES_FILE})."
        else:
            head = f"{shown} does not match its file list {FILES_FILE}:\n  {found.listing()}\n"
        advice = _what_to_do(shown, fs, base, {p["kind"] for p in problems})
        sep = "" if head.endswith("\n") else " "
        raise ShardError(f"{head}{sep}{advice}", problems=list(found))
    assert listing is not None
    names = sorted(e["name"] for e in listing["files"] if e["name"].startswith(f"{SHARDS_DIR}/"))
    if "://" in shown:
        return [f"{shown}/{n}" for n in names]
    return [os.path.join(shown, *n.split("/")) for n in names]
