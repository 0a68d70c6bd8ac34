"""The shard writer in-process (executor=local): formats, quarantine, resume, idempotence,
filesystems; the shard-folder layout (spoofdet.data.shards) and the old data_prep.shard path."""

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import spoofdet.data.shard_writer as shard
import spoofdet.data.shards as shards
from spoofdet.data.audio import decode_flac
from spoofdet.data.corpora import prepare, prepare_csv
from spoofdet.data.schema import METADATA_COLUMNS, UTTERANCE_SCHEMA, validate_table


def _read_shards(out):
    files = sorted((out / "shards").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by("utt_id")


@pytest.fixture()
def mixed_rate_csv(tmp_path):
    rows = ["path,label"]
    for i, (sr, ch, fmt) in enumerate(
        [
            (16000, 1, "wav"),
            (22050, 1, "flac"),
            (24000, 2, "wav"),
            (44100, 1, "flac"),
            (44100, 2, "wav"),
            (8000, 1, "wav"),
        ]
    ):
        seconds = 1.0 + 0.25 * i
        t = np.arange(int(sr * seconds)) / sr
        x = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        sf.write(tmp_path / f"c{i}.{fmt}", np.stack([x] * ch, 1) if ch > 1 else x, sr)
        rows.append(f"c{i}.{fmt},{'bonafide' if i % 2 else 'spoof'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_mixed_rates_come_out_16k(mixed_rate_csv, tmp_path):
    m = prepare_csv(mixed_rate_csv)
    out = tmp_path / "out"
    s = shard.run(m.table, str(out), corpus="csv", shard_rows=4, executor="local")
    assert (s["rows_in"], s["rows_written"], s["quarantined"], s["shards"]) == (6, 6, 0, 2)
    t = _read_shards(out)
    assert t.schema.equals(UTTERANCE_SCHEMA, check_metadata=False)
    validate_table(t)
    for row in t.to_pylist():
        i = int(row["utt_id"][1])
        sr = row["orig_sample_rate"]
        seconds = 1.0 + 0.25 * i
        wave, out_sr = decode_flac(row["audio"])
        assert out_sr == 16000 and len(wave) == row["num_samples"]
        assert abs(row["num_samples"] - seconds * 16000) <= 1
        assert row["duration"] == pytest.approx(seconds, abs=1e-4)
        peak = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
        assert abs(peak - 440) < 3, (sr, peak)
    meta = pq.read_table(out / "metadata.parquet")
    assert "audio" not in meta.column_names and tuple(meta.column_names) == METADATA_COLUMNS
    assert sorted(meta.column("orig_sample_rate").to_pylist()) == [
        8000,
        16000,
        22050,
        24000,
        44100,
        44100,
    ]


@pytest.mark.parametrize("corpus", ["asvspoof2019-la", "codecfake", "in-the-wild", "csv"])
def test_every_quarantine_reason_is_counted(synth, tmp_path, corpus):
    info = synth[corpus]
    m = prepare(corpus, info["root"])
    out = tmp_path / "out"
    s = shard.run(m.table, str(out), corpus=corpus, shard_rows=5, executor="local")
    q = pq.read_table(out / "quarantine.parquet")
    assert (
        dict(zip(q.column("utt_id").to_pylist(), q.column("reason").to_pylist())) == info["broken"]
    )
    assert s["rows_in"] == s["rows_written"] + s["quarantined"] == info["rows"]
    assert s["by_reason"] == {
        r: list(info["broken"].values()).count(r) for r in set(info["broken"].values())
    }
    written = set(pq.read_table(out / "metadata.parquet").column("utt_id").to_pylist())
    assert written.isdisjoint(info["broken"]) and len(written) == s["rows_written"]
    assert json.loads((out / "summary.json").read_text())["rows_written"] == s["rows_written"]


def test_min_seconds_is_configurable(synth, tmp_path):
    m = prepare("in-the-wild", synth["in-the-wild"]["root"])
    s = shard.run(
        m.table,
        str(tmp_path / "o"),
        corpus="in-the-wild",
        shard_rows=50,
        executor="local",
        min_seconds=3.0,
    )
    assert s["by_reason"]["too_short"] > 1
    durations = pq.read_table(tmp_path / "o" / "metadata.parquet").column("duration").to_pylist()
    assert min(durations) >= 3.0


def test_idempotent_rerun_is_a_noop(synth, tmp_path):
    m = prepare("codecfake", synth["codecfake"]["root"])
    out = tmp_path / "out"
    first = shard.run(m.table, str(out), corpus="codecfake", shard_rows=7, executor="local")
    assert shards.is_complete(out) and shards.is_complete(str(out))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = shard.run(m.table, str(out), corpus="codecfake", shard_rows=7, executor="local")
    assert (
        again["shards_done_before"] == first["shards"]
        and again["rows_written"] == first["rows_written"]
    )
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_other_input_or_settings_refused(synth, tmp_path):
    out = str(tmp_path / "out")
    m = prepare("codecfake", synth["codecfake"]["root"])
    shard.run(m.table, out, corpus="codecfake", shard_rows=7, executor="local")
    with pytest.raises(shard.ShardError, match="different input manifest"):
        shard.run(m.table.slice(1), out, corpus="codecfake", shard_rows=7, executor="local")
    with pytest.raises(shard.ShardError, match="other settings"):
        shard.run(m.table, out, corpus="codecfake", shard_rows=8, executor="local")


def test_kill_and_resume(synth, tmp_path):
    """SIGKILL the job after shard 2 wrote its temporary file; the re-run ends with exactly the
    rows of an uninterrupted run, no duplicate, no loss, and no temporary file left."""
    root = synth["codecfake"]["root"]
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "data_prep.shard",
        "codecfake",
        "--root",
        root,
        "--out",
        str(out),
        "--shard-rows",
        "6",
        "--executor",
        "local",
        "--json",
    ]
    env = {**os.environ, shard.KILL_ENV: "2"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert sorted(p.name for p in (out / "shards").glob("part-*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert len(list((out / "shards").glob("*.tmp-*"))) == 1 and not (out / "summary.json").exists()
    assert not shards.is_complete(out)

    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    s = json.loads(resumed.stdout)
    assert s["shards_done_before"] == 2 and s["rows_in"] == s["rows_written"] + s["quarantined"]
    assert not list(out.rglob("*.tmp-*")) and shards.is_complete(out)

    ref = tmp_path / "ref"
    shard.run(
        prepare("codecfake", root).table,
        str(ref),
        corpus="codecfake",
        shard_rows=6,
        executor="local",
    )
    a, b = _read_shards(out), _read_shards(ref)
    assert (
        a.num_rows == s["rows_written"] and len(set(a.column("utt_id").to_pylist())) == a.num_rows
    )
    assert a.equals(b)
    assert (
        pq.read_table(out / "quarantine.parquet")
        .sort_by("utt_id")
        .equals(pq.read_table(ref / "quarantine.parquet").sort_by("utt_id"))
    )


def test_any_pyarrow_filesystem(synth):
    """Nothing assumes a local disk for --out: run against pyarrow's in-memory filesystem."""
    fs = pafs._MockFileSystem()
    m = prepare("in-the-wild", synth["in-the-wild"]["root"])
    s = shard.run(
        m.table, "bucket/itw", corpus="in-the-wild", shard_rows=8, executor="local", filesystem=fs
    )
    assert s["rows_written"] + s["quarantined"] == m.table.num_rows
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector("bucket/itw", recursive=True))}
    assert {"metadata.parquet", "quarantine.parquet", "summary.json", "part-00000.parquet"} <= names
    meta = pq.read_table("bucket/itw/metadata.parquet", filesystem=fs)
    assert meta.num_rows == s["rows_written"]
    assert shards.is_complete("bucket/itw", filesystem=fs)


def test_shard_size_follows_shard_mb(synth, tmp_path):
    m = prepare("asvspoof2019-la", synth["asvspoof2019-la"]["root"])
    out = tmp_path / "out"
    target_mb = 0.4
    s = shard.run(m.table, str(out), corpus="asvspoof2019-la", shard_mb=target_mb, executor="local")
    sizes = [p.stat().st_size / 2**20 for p in sorted((out / "shards").glob("part-*.parquet"))]
    assert s["shards"] == len(sizes) >= 3
    assert all(size < 2.5 * target_mb for size in sizes) and np.median(sizes) > target_mb / 2.5


def test_cli_prepare_json(synth, tmp_path, capsys):
    from spoofdet.cli import main

    rc = main(
        [
            "prepare",
            "asvspoof2021-df",
            "--root",
            synth["asvspoof2021-df"]["root"],
            "--out",
            str(tmp_path / "o"),
            "--shard-rows",
            "10",
            "--executor",
            "local",
            "--json",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert {"rows_in", "rows_written", "quarantined", "by_reason", "shards"} <= set(s)
    assert s["rows_in"] == s["rows_written"] + s["quarantined"] == synth["asvspoof2021-df"]["rows"]
    rc = main(
        [
            "prepare",
            "asvspoof2021-df",
            "--root",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o2"),
        ]
    )
    assert rc == 2 and "trial_metadata.txt" in capsys.readouterr().err


@pytest.mark.parametrize(
    "n_rows,size_rows,par,expected_shards",
    [
        (20000, 1540, 1, 13),  # one process: sized by shard_mb only
        (20000, 1540, 2, 14),  # 13 rounded up to a multiple of 2 CPUs
        (5000, 1700, 2, 8),  # small corpus: at least 4 shards per CPU
        (10, 1000, 4, 10),  # never an empty shard
        (1, 1000, 8, 1),
    ],
)
def test_balanced_rows_per_shard(n_rows, size_rows, par, expected_shards):
    rows = shard.balanced_rows_per_shard(n_rows, size_rows, par)
    assert rows <= size_rows and -(-n_rows // rows) == expected_shards


def test_layout_names_and_incomplete_folders(tmp_path):
    assert shards.shard_path("s3://b/x", 7) == "s3://b/x/shards/part-00007.parquet"
    assert shards.quarantine_part_path("b", 12) == "b/_work/quarantine/part-00012.parquet"
    assert not shards.is_complete(tmp_path / "nowhere") and not shards.is_complete(tmp_path)
    # a folder with shards and metadata.parquet but no plan is not a finished job of the writer
    (tmp_path / "shards").mkdir()
    (tmp_path / "metadata.parquet").write_bytes(b"")
    assert not shards.is_complete(tmp_path)


def test_readers_accept_shard_and_feature_folders(tmp_path):
    """Readers' "finished?" is metadata.parquet (both writers write it last; feature folders from
    data_prep.features have no plan or summary); readable also needs shards/."""
    assert not shards.has_metadata(tmp_path) and not shards.is_readable(tmp_path / "nowhere")
    (tmp_path / shards.METADATA_FILE).write_bytes(b"")
    assert shards.has_metadata(tmp_path) and not shards.is_readable(tmp_path)
    (tmp_path / shards.SHARDS_DIR).mkdir()
    (tmp_path / "features.json").write_text("{}")
    assert shards.is_readable(tmp_path) and not shards.is_complete(tmp_path)


def test_old_path_data_prep_shard_keeps_its_names():
    """``data_prep.shard`` re-exports the library for this release only: the same objects."""
    import spoofdet.data.shard_cli as shard_cli
    from data_prep import shard as old

    for name in ("run", "ShardError", "KILL_ENV", "balanced_rows_per_shard", "write_shard"):
        assert getattr(old, name) is getattr(shard, name), name
    assert old.format_summary is shard_cli.format_summary
    assert old.run_from_args is shard_cli.run_from_args
