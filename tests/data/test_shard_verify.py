"""Shard folders are verified: the file list (files.json) written last, the cheap reader check
(`checked_shard_files`), `prepare --verify` and `--repair` (byte-identical), re-runs that finish a
folder again, io_error rows retried, and resuming with another spelling of the same root.

All in-process (executor=local), no Ray."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import spoofdet.data.audio as audio
import spoofdet.data.shard_verify as shard_verify
import spoofdet.data.shard_writer as shard
import spoofdet.data.shards as shards
from spoofdet.cli import main
from spoofdet.data.corpora import prepare
from spoofdet.data.schema import UTTERANCE_SCHEMA
from spoofdet.data.shard_cli import format_summary
from spoofdet.data.shard_plan import fingerprint
from spoofdet.errors import SpoofdetError

ROWS = 10  # rows per shard: the codecfake corpus of `synth` (54 rows) gives SHARDS shards
SHARDS = 6


@pytest.fixture(autouse=True)
def _no_ray():
    """These are unit tests: nothing here may start Ray (the CLI's default executor is ray)."""
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "a unit test started Ray"


def sha256s(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (``_work/`` included), by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def table(synth):
    t = prepare("codecfake", synth["codecfake"]["root"]).table
    assert -(-t.num_rows // ROWS) == SHARDS
    return t


@pytest.fixture(scope="module")
def reference(table, tmp_path_factory):
    """A finished shard folder and the sha256 of each of its files."""
    out = tmp_path_factory.mktemp("ref") / "out"
    shard.run(table, str(out), corpus="codecfake", shard_rows=ROWS, executor="local")
    return out, sha256s(out)


@pytest.fixture()
def folder(reference, tmp_path):
    """A fresh copy of the reference folder (the copy's summary.json names another `out`)."""
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    return out


def without_summary(hashes: dict[str, str]) -> dict[str, str]:
    """A copy's sha256 equal the original's except summary.json's, which records `out`."""
    return {k: v for k, v in hashes.items() if k != shards.SUMMARY_FILE}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``spoofdet prepare ARGS --executor local`` (no Ray): exit code, stdout, stderr."""
    rc = main(["prepare", *args, "--executor", "local"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ----------------------------------------------------------------------------- the file list


def test_file_list_names_every_file_with_rows_bytes_and_sha256(reference):
    out, hashes = reference
    listing = json.loads((out / shards.FILES_FILE).read_text())
    assert listing["version"] == 1
    names = [e["name"] for e in listing["files"]]
    assert names == sorted(
        [f"shards/part-{i:05d}.parquet" for i in range(SHARDS)]
        + ["metadata.parquet", "quarantine.parquet"]
    )
    for e in listing["files"]:
        path = out / e["name"]
        assert e["bytes"] == path.stat().st_size and e["sha256"] == hashes[e["name"]]
        assert e["rows"] == pq.read_metadata(path).num_rows
    assert sum(e["rows"] for e in listing["files"] if e["name"].startswith("shards/")) == (
        pq.read_metadata(out / "metadata.parquet").num_rows
    )
    assert shards.checked_shard_files(out) == [
        os.path.join(str(out), "shards", f"part-{i:05d}.parquet") for i in range(SHARDS)
    ]
    assert shards.checked_shard_files(str(out) + "/")[0] == str(out / "shards/part-00000.parquet")
    assert shards.is_complete(out)


def test_shard_error_is_a_bad_input_error():
    assert issubclass(shards.ShardError, SpoofdetError) and issubclass(
        shards.ShardError, ValueError
    )


def _damage(out: Path, how: str) -> str:
    """Damage ``out`` in one of the ways readers must catch; the file that names it."""
    one = out / "shards" / "part-00001.parquet"
    if how == "deleted":
        one.unlink()
        return "shards/part-00001.parquet"
    if how == "stray_copy":
        shutil.copy(one, out / "shards" / "part-00001 copy.parquet")
        return "shards/part-00001 copy.parquet"
    if how == "truncated":
        one.write_bytes(one.read_bytes()[:-100])
        return "shards/part-00001.parquet"
    if how == "metadata_truncated":
        meta = out / "metadata.parquet"
        meta.write_bytes(meta.read_bytes()[:-10])
        return "metadata.parquet"
    raise ValueError(how)


DAMAGE = ["deleted", "stray_copy", "truncated", "metadata_truncated"]


@pytest.mark.parametrize("how", DAMAGE)
def test_readers_refuse_a_damaged_folder_naming_the_file(folder, how):
    name = _damage(folder, how)
    with pytest.raises(shards.ShardError) as err:
        shards.checked_shard_files(folder)
    text = str(err.value)
    assert f"{folder}/{name}: " in text and any(name in p for p in err.value.problems)
    assert f"spoofdet prepare --verify --out {folder}" in text
    assert f"spoofdet prepare --repair --out {folder}" in text
    # the quick tests keep their meaning: the folder still "looks" finished
    assert shards.is_readable(folder) or how == "metadata_truncated"
    assert not shards.is_complete(folder)


@pytest.mark.parametrize("how", [*DAMAGE, "bit_flip"])
def test_verify_names_the_damage_and_repair_restores_every_byte(folder, reference, capsys, how):
    if how == "bit_flip":  # same size: only checksums and decoding see it
        one = folder / "shards" / "part-00002.parquet"
        data = bytearray(one.read_bytes())
        data[len(data) // 2] ^= 0xFF
        one.write_bytes(bytes(data))
        name = "shards/part-00002.parquet"
        shards.checked_shard_files(folder)  # cheap check: sizes agree
    else:
        name = _damage(folder, how)
    rc, stdout, _ = cli(capsys, "--verify", "--out", str(folder))
    assert rc == 2 and f"{name}: " in stdout and "problem(s)" in stdout
    assert "fix: spoofdet prepare --repair" in stdout

    rc, stdout, _ = cli(capsys, "--repair", "--out", str(folder), "--json")
    result = json.loads(stdout)
    assert rc == 0 and result["verify"]["ok"], result["verify"]
    assert any(p["file"] == name for p in result["found"])
    assert without_summary(sha256s(folder)) == without_summary(reference[1])
    assert shards.is_complete(folder) and len(shards.checked_shard_files(folder)) == SHARDS
    rc, stdout, _ = cli(capsys, "--verify", "--out", str(folder))
    assert rc == 0 and stdout.startswith(f"verify {folder}: ok (8 file(s)")


def test_repair_in_place_gives_the_original_bytes_including_summary(reference, table):
    """Repairing the reference folder itself (same --out): every file, summary.json included,
    is byte-identical; nothing is rewritten that was whole."""
    out, hashes = reference
    (out / "shards" / "part-00004.parquet").unlink()
    shutil.copy(out / "shards" / "part-00000.parquet", out / "shards" / "part-00000 (1).parquet")
    result = shard_verify.repair(str(out))
    assert result["deleted"] == ["shards/part-00000 (1).parquet"]
    assert result["rewritten"] == ["shards/part-00004.parquet"]
    assert sha256s(out) == hashes


def test_verify_names_bad_rows_by_utt_id(folder, capsys):
    """A shard whose rows are wrong but whose file list was rewritten to match it: only the
    row checks see it, and they name the file and the row."""
    path = folder / "shards" / "part-00003.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[0]["audio"] = rows[0]["audio"][:200]  # cut FLAC
    rows[1]["num_samples"] += 7
    rows[2]["label"] = 3
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCE_SCHEMA), path)
    listing = shards.write_file_list(
        shards.resolve_out(str(folder))[0], str(folder), shards.job_file_names(SHARDS)
    )
    assert listing["files"]
    shards.checked_shard_files(folder)  # cheap check passes: the list was rewritten
    report = shard_verify.verify(str(folder))
    bad = {(p["file"], p.get("utt_id")): p["problem"] for p in report["problems"]}
    name = "shards/part-00003.parquet"
    assert not report["ok"]
    assert (
        "does not decode" in bad[(name, rows[0]["utt_id"])]
        or "samples" in bad[(name, rows[0]["utt_id"])]
    )
    assert f"num_samples {rows[1]['num_samples']}" in bad[(name, rows[1]["utt_id"])]
    assert "label 3 is not 0, 1 or null" in bad[(name, rows[2]["utt_id"])]
    assert ("metadata.parquet", rows[1]["utt_id"]) in bad  # metadata differs from the shard row
    rc, stdout, _ = cli(capsys, "--verify", "--out", str(folder), "--json")
    assert rc == 2 and json.loads(stdout)["problems"] == report["problems"]
    result = shard_verify.repair(str(folder))
    assert result["deleted"] == [name] and result["verify"]["ok"]


def test_metadata_rows_must_equal_the_shards(folder):
    meta = pq.read_table(folder / "metadata.parquet")
    dropped = meta.column("utt_id")[3].as_py()
    kept = meta.filter(pc.not_equal(meta.column("utt_id"), dropped))
    pq.write_table(kept, folder / "metadata.parquet")
    report = shard_verify.verify(str(folder))
    found = [p for p in report["problems"] if p.get("utt_id") == dropped]
    assert found and found[0]["file"] == "metadata.parquet"
    assert "not in metadata.parquet" in found[0]["problem"]


# ----------------------------------------------------------------------------- re-runs


@pytest.mark.parametrize("lost", ["metadata.parquet", "files.json", "summary.json"])
def test_rerun_after_a_lost_file_finishes_the_folder_again(folder, table, lost):
    before = sha256s(folder)
    (folder / lost).unlink()
    if lost != "summary.json":  # readers need metadata.parquet and the list, not the summary
        with pytest.raises(shards.ShardError, match=lost):
            shards.checked_shard_files(folder)
    assert not shards.is_complete(folder)
    s = shard.run(table, str(folder), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert s["finished_again"] and s["shards_done_before"] == SHARDS
    text = format_summary(s)
    assert "already complete" not in text and "finished the folder again" in text
    assert without_summary(sha256s(folder)) == without_summary(before)
    assert json.loads((folder / "summary.json").read_text())["out"] == str(folder)
    assert shards.is_complete(folder)
    again = shard.run(table, str(folder), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert "already complete: nothing to do" in format_summary(again)


def test_rerun_rewrites_a_deleted_shard(folder, table):
    before = sha256s(folder)
    _damage(folder, "deleted")
    s = shard.run(table, str(folder), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert s["shards_done_before"] == SHARDS - 1
    assert without_summary(sha256s(folder)) == without_summary(before)


@pytest.mark.parametrize("how", ["stray_copy", "truncated"])
def test_rerun_refuses_stray_or_changed_shards(folder, table, how):
    name = _damage(folder, how)
    before = sha256s(folder)
    with pytest.raises(shards.ShardError) as err:
        shard.run(table, str(folder), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert name in str(err.value) and "--repair" in str(err.value)
    assert sha256s(folder) == before  # nothing was written


def test_folder_without_file_list_is_refused_then_checked_and_listed(folder, table, capsys):
    """A folder written before file lists: readers refuse it and say to re-run prepare, which
    checks every row (a bad row is named) before it writes the list."""
    (folder / shards.FILES_FILE).unlink()
    with pytest.raises(shards.ShardError) as err:
        shards.checked_shard_files(folder)
    assert "no files.json" in str(err.value) and "re-run the same `spoofdet prepare" in str(
        err.value
    )
    path = folder / "shards" / "part-00000.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[1]["audio"] = b"fLaC" + b"\x00" * 40
    pq.write_table(pa.Table.from_pylist(rows, schema=UTTERANCE_SCHEMA), path)
    with pytest.raises(shards.ShardError) as err:
        shard.run(table, str(folder), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert f"shards/part-00000.parquet: row {rows[1]['utt_id']}" in str(err.value)
    assert not (folder / shards.FILES_FILE).exists()
    rc, stdout, _ = cli(capsys, "--repair", "--out", str(folder))
    assert rc == 0 and "rewrote shards/part-00000.parquet" in stdout
    shards.checked_shard_files(folder)


def test_readers_refuse_empty_and_malformed_folders(tmp_path, folder):
    with pytest.raises(shards.ShardError, match="no shards in .*spoofdet prepare CORPUS"):
        shards.checked_shard_files(tmp_path / "empty")
    (folder / shards.FILES_FILE).write_text('{"version": 1, "files": [{"name": "../x"}]}')
    with pytest.raises(shards.ShardError, match="files.json: not a file list"):
        shards.checked_shard_files(folder)
    (folder / shards.FILES_FILE).write_text("{not json")
    with pytest.raises(shards.ShardError, match="files.json: not readable JSON"):
        shards.checked_shard_files(folder)


# ----------------------------------------------------------------------------- repair inputs


def test_repair_without_work_needs_the_original_arguments(folder, reference, table):
    shutil.rmtree(folder / "_work")
    (folder / "shards" / "part-00005.parquet").unlink()
    with pytest.raises(shards.ShardError, match="no _work/plan.json: give --repair the CORPUS"):
        shard_verify.repair(str(folder))
    result = shard_verify.repair(str(folder), table, corpus="codecfake", shard_rows=ROWS)
    assert result["verify"]["ok"]
    assert without_summary(sha256s(folder)) == without_summary(reference[1])


def test_repair_refuses_another_input(folder, table):
    with pytest.raises(shards.ShardError, match="planned for another input"):
        shard_verify.repair(str(folder), table.slice(2), corpus="codecfake")


def test_repair_with_corpus_and_root_on_the_command_line(folder, reference, synth, capsys):
    _damage(folder, "truncated")
    rc, stdout, err = cli(
        capsys, "codecfake", "--root", synth["codecfake"]["root"], "--out", str(folder), "--repair"
    )
    assert rc == 0, err
    assert "deleted shards/part-00001.parquet" in stdout and f"verify {folder}: ok" in stdout
    assert without_summary(sha256s(folder)) == without_summary(reference[1])


def test_prepare_arguments(capsys, tmp_path):
    rc, _, err = cli(capsys, "--out", str(tmp_path / "o"))
    assert rc == 2 and "CORPUS and --root are required" in err
    rc, _, err = cli(capsys, "codecfake", "--out", str(tmp_path / "o"))
    assert rc == 2 and "CORPUS and --root go together" in err
    rc, stdout, _ = cli(capsys, "--verify", "--out", str(tmp_path / "nowhere"), "--json")
    report = json.loads(stdout)
    assert rc == 2 and not report["ok"] and "is not a folder" in report["problems"][0]["problem"]
    with pytest.raises(SystemExit):
        main(["prepare", "--verify", "--repair", "--out", str(tmp_path)])


# ----------------------------------------------------------------------------- io_error rows


@pytest.fixture()
def io_error_reason(monkeypatch):
    """``io_error`` as an AudioError reason (spoofdet.data.audio gains it in the same change)."""
    if "io_error" not in audio.REASONS:
        monkeypatch.setattr(audio, "REASONS", (*audio.REASONS, "io_error"))


def test_io_error_rows_are_retried_by_the_next_run(
    io_error_reason, synth, table, reference, tmp_path, monkeypatch, capsys
):
    paths = table.column("source_path").to_pylist()
    locked = {paths[12], paths[13]}  # both in shard 1 (rows 10..19)
    real = shard.load_16k

    def flaky(path, **kwargs):
        if path in locked:
            raise audio.AudioError("io_error", f"[Errno 13] Permission denied: {path}")
        return real(path, **kwargs)

    monkeypatch.setattr(shard, "load_16k", flaky)
    out = tmp_path / "out"
    s = shard.run(table, str(out), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert s["by_reason"]["io_error"] == 2 and s["retry_on_rerun"] == 2
    assert json.loads((out / "summary.json").read_text())["retry_on_rerun"] == 2
    assert "2 file(s) could not be read" in format_summary(s)
    assert "re-running the same command retries them" in format_summary(s)
    assert not shards.is_complete(out)  # a re-run has work to do
    shards.checked_shard_files(out)  # but the folder is whole: readers may use it

    locked.clear()  # the permission is fixed
    rc, stdout, err = cli(
        capsys,
        "codecfake",
        "--root",
        synth["codecfake"]["root"],
        "--out",
        str(out),
        "--shard-rows",
        str(ROWS),
        "--json",
    )
    again = json.loads(stdout)
    assert rc == 0, err
    assert again["shards_done_before"] == SHARDS - 1 and again["retry_on_rerun"] == 0
    assert "io_error" not in again["by_reason"]
    assert without_summary(sha256s(out)) == without_summary(reference[1])
    assert shards.is_complete(out)


# ----------------------------------------------------------------------------- input identity


def test_fingerprint_normalises_paths_and_ignores_chunking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = pa.table(
        {
            "utt_id": ["a", "b"],
            "source_path": ["corpus/x/../a.wav", "corpus/b.wav"],
            "label": pa.array([1, 0], pa.int8()),
        }
    )
    absolute = t.set_column(
        1, "source_path", pa.array([str(tmp_path / "corpus/a.wav"), str(tmp_path / "corpus/b.wav")])
    )
    chunked = pa.concat_tables([absolute.slice(0, 1), absolute.slice(1)])
    assert fingerprint(t) == fingerprint(absolute) == fingerprint(chunked)
    other = absolute.set_column(1, "source_path", pa.array(["/elsewhere/a.wav", "/b.wav"]))
    assert fingerprint(other) != fingerprint(absolute)
    relabelled = absolute.set_column(2, "label", pa.array([0, 0], pa.int8()))
    assert fingerprint(relabelled) != fingerprint(absolute)


def test_resume_with_another_spelling_of_the_same_root(synth, tmp_path, monkeypatch):
    root = Path(synth["codecfake"]["root"])
    out = tmp_path / "out"
    kill_at = {"n": 0}
    real = shard.write_shard

    def stop_after_two(index, base, **kwargs):
        if kill_at["n"] == 2:
            raise KeyboardInterrupt
        kill_at["n"] += 1
        return real(index, base, **kwargs)

    monkeypatch.setattr(shard, "write_shard", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        shard.run(
            prepare("codecfake", str(root)).table,
            str(out),
            corpus="codecfake",
            shard_rows=ROWS,
            executor="local",
        )
    monkeypatch.setattr(shard, "write_shard", real)
    monkeypatch.chdir(root.parent)
    first = shard.run(
        prepare("codecfake", f"./{root.name}").table,
        str(out),
        corpus="codecfake",
        shard_rows=ROWS,
        executor="local",
    )
    assert first["shards_done_before"] == 2
    monkeypatch.chdir(root)
    again = shard.run(
        prepare("codecfake", f"../{root.name}/").table,
        str(out),
        corpus="codecfake",
        shard_rows=ROWS,
        executor="local",
    )
    assert again["shards_done_before"] == SHARDS


def test_a_crash_while_retrying_leaves_the_shard_missing_not_stale(
    io_error_reason, table, reference, tmp_path, monkeypatch
):
    """A shard written again loses its old file first: a crash in the middle of the retry leaves
    it missing (the next run writes it), never the old shard beside a new quarantine part."""
    paths = table.column("source_path").to_pylist()
    real = shard.load_16k
    state = {"mode": "locked"}

    def flaky(path, **kwargs):
        if path == paths[12] and state["mode"] == "locked":
            raise audio.AudioError("io_error", f"Input/output error: {path}")
        if path == paths[15] and state["mode"] == "crash":
            raise KeyboardInterrupt
        return real(path, **kwargs)

    monkeypatch.setattr(shard, "load_16k", flaky)
    out = tmp_path / "out"
    shard.run(table, str(out), corpus="codecfake", shard_rows=ROWS, executor="local")
    old_part = (out / "_work" / "quarantine" / "part-00001.parquet").read_bytes()
    state["mode"] = "crash"
    with pytest.raises(KeyboardInterrupt):
        shard.run(table, str(out), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert not (out / "shards" / "part-00001.parquet").exists()
    assert (out / "_work" / "quarantine" / "part-00001.parquet").read_bytes() == old_part
    state["mode"] = "fixed"
    s = shard.run(table, str(out), corpus="codecfake", shard_rows=ROWS, executor="local")
    assert s["retry_on_rerun"] == 0
    assert without_summary(sha256s(out)) == without_summary(reference[1])


def test_verify_and_readers_on_any_pyarrow_filesystem(table):
    import pyarrow.fs as pafs

    fs = pafs._MockFileSystem()
    shard.run(
        table, "bucket/x", corpus="codecfake", shard_rows=ROWS, executor="local", filesystem=fs
    )
    assert shard_verify.verify("bucket/x", filesystem=fs)["ok"]
    files = shards.checked_shard_files("bucket/x", filesystem=fs)
    assert files == [f"bucket/x/shards/part-{i:05d}.parquet" for i in range(SHARDS)]
    fs.delete_file("bucket/x/shards/part-00002.parquet")
    with pytest.raises(shards.ShardError, match="shards/part-00002.parquet: missing"):
        shards.checked_shard_files("bucket/x", filesystem=fs)
    assert shard_verify.repair("bucket/x", filesystem=fs)["verify"]["ok"]
    assert shards.is_complete("bucket/x", filesystem=fs)
