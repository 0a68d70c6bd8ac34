"""One bad row never kills a run: the training and scoring readers skip, count and name rows they
cannot use (a corrupt FLAC blob, empty audio, a null label, a label other than 0/1, a cached-feature
blob of the wrong size), and every other row comes out exactly as without them (unit, no Ray)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spoofdet.data import features as feature_cache
from spoofdet.data import shard_writer
from spoofdet.data.collate import BatchCollate
from spoofdet.data.corpora import prepare_csv
from spoofdet.data.pipeline import READ_COLUMNS, Source, iter_eval_part, shard_files
from spoofdet.data.sampling import mix_factors, realised_mix
from spoofdet.data.shards import METADATA_FILE, resolve_out, write_file_list
from spoofdet.data.transforms import (
    SKIP_REASONS,
    Recipe,
    _norm_path,
    decode_window,
    label_of,
    prepare_full_length,
    prepare_rows,
)
from spoofdet.testing.synthetic import write_corpus

T = 8_000  # short crops keep the tests fast; the code path is the same as for 64,600
#: A FLAC signature followed by bytes that are no FLAC stream: libsndfile refuses to open it.
BAD_FLAC = b"fLaC" + bytes(range(256)) * 2


# ----------------------------------------------------------------------------- shard folders


def write_shards(root: Path, seed: int = 3) -> Path:
    """A real shard folder: a synthetic CSV corpus of 10 clips (1-6 s), 4 rows per shard."""
    corpus = write_corpus("csv", root / "corpus", per_split=5, seed=seed, broken=False)
    out = root / "shards"
    summary = shard_writer.run(
        prepare_csv(corpus["root"]).table,
        str(out),
        corpus="csv",
        shard_rows=4,
        executor="local",
        progress=False,
    )
    assert summary["rows_written"] == 10 and summary["shards"] == 3, summary
    return out


def break_rows(folder: Path, shard: int, changes: dict[int, tuple[str, Any]]) -> dict[str, str]:
    """Rewrite shard ``shard`` of ``folder`` in place (same file name, schema and row groups) with
    ``changes`` ``{row: (column, new value)}``; returns ``{utt_id: shard file}`` of those rows."""
    path = shard_files(Source(str(folder)))[shard]
    table = pq.read_table(path)
    for column in {c for c, _ in changes.values()}:
        values = table.column(column).to_pylist()
        for row, (c, value) in changes.items():
            if c == column:
                values[row] = value
        i = table.schema.get_field_index(column)
        table = table.set_column(
            i, table.schema.field(i), pa.array(values, table.schema.field(i).type)
        )
    tmp = f"{path}.rewrite"
    pq.write_table(table, tmp, row_group_size=shard_writer.ROW_GROUP_ROWS)
    os.replace(tmp, path)
    _relist(folder, path, len(table))
    utts = table.column("utt_id").to_pylist()
    return {utts[row]: path for row in changes}


def _relist(folder: Path, path: str, rows: int) -> None:
    """Update the rewritten shard's entry (bytes, sha256, rows) in the folder's ``files.json``
    (the file list that shard verification compares a folder with), so the folder stays valid
    and only its rows are bad."""
    listing_path = folder / "files.json"
    if not listing_path.is_file():
        return
    listing = json.loads(listing_path.read_text())
    name = os.path.relpath(path, folder).replace(os.sep, "/")
    entry = next(e for e in listing["files"] if e["name"] == name)
    data = Path(path).read_bytes()
    entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), rows=rows)
    listing_path.write_text(json.dumps(listing, indent=1) + "\n")


def rows_of(folder: Path) -> dict[str, np.ndarray]:
    """Every shard row of ``folder`` as the readers see it (numpy columns + ``path``)."""
    tables = []
    for f in shard_files(Source(str(folder))):
        t = pq.read_table(f, columns=READ_COLUMNS)
        tables.append(t.append_column("path", pa.array([f] * len(t))))
    t = pa.concat_tables(tables)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Any]:
    """A clean shard folder and a copy with 5 bad rows: one in shard 0 (among good rows) and all
    four rows of shard 1 (a batch that is entirely bad)."""
    root = tmp_path_factory.mktemp("bad_rows")
    clean = write_shards(root)
    broken = root / "broken"
    shutil.copytree(clean, broken)
    reasons: dict[str, str] = {}
    first = break_rows(broken, 0, {1: ("audio", BAD_FLAC)})
    reasons.update(dict.fromkeys(first, "decode_error"))
    second = break_rows(
        broken, 1, {0: ("label", None), 1: ("label", 7), 2: ("audio", b""), 3: ("audio", BAD_FLAC)}
    )
    for (utt, _), reason in zip(
        second.items(), ["no_label", "bad_label", "empty_audio", "decode_error"]
    ):
        reasons[utt] = reason
    return {"clean": clean, "broken": broken, "reasons": reasons, "shard": {**first, **second}}


def named(bad: list[dict]) -> list[tuple[str, str, str, int]]:
    return sorted((r["utt_id"], r["shard"], r["reason"], r["epoch"]) for r in bad)


def expected(folders: dict[str, Any], epoch: int) -> list[tuple[str, str, str, int]]:
    return sorted((u, folders["shard"][u], r, epoch) for u, r in folders["reasons"].items())


def good_part(out: dict[str, np.ndarray], bad_utts: set[str]) -> dict[str, np.ndarray]:
    keep = np.asarray([str(u) not in bad_utts for u in out["utt_id"]], dtype=bool)
    return {k: v[keep] for k, v in out.items()}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert np.array_equal(got[key], want[key]), key


# ----------------------------------------------------------------------------- prepare_rows


def _recipes(folder: Path) -> dict[str, Recipe]:
    source_of = {_norm_path(f): 0 for f in shard_files(Source(str(folder)))}
    return {
        "first": Recipe(num_samples=T),
        "random+rawboost": Recipe(num_samples=T, crop="random", rawboost_algo=5, rawboost_p=0.5),
        "mixing": Recipe(
            num_samples=T, crop="random", factors=({1: 2.0, 0: 1.5},), source_of=source_of
        ),
    }


@pytest.mark.parametrize("kind", ["first", "random+rawboost", "mixing"])
def test_prepare_rows_skips_and_names_bad_rows_and_keeps_the_good_ones_unchanged(folders, kind):
    clean_rows, broken_rows = rows_of(folders["clean"]), rows_of(folders["broken"])
    assert list(clean_rows["utt_id"]) == list(broken_rows["utt_id"])
    assert np.isnan(broken_rows["label"]).sum() == 1  # the null label, as pyarrow hands it over
    bad: list[dict] = []
    got = prepare_rows(broken_rows, _recipes(folders["broken"])[kind], epoch=1, bad=bad)
    want = prepare_rows(clean_rows, _recipes(folders["clean"])[kind], epoch=1)
    assert named(bad) == expected(folders, 1)
    assert_same(got, good_part(want, set(folders["reasons"])))
    assert len(got["utt_id"]) >= 5 and set(got["utt_id"]).isdisjoint(folders["reasons"])
    details = {r["reason"]: r["detail"] for r in bad}
    # libsndfile's own words vary by version; the address of the in-memory file is left out
    assert details["decode_error"].startswith("LibsndfileError: Error opening the audio bytes: ")
    assert "0x" not in details["decode_error"]
    assert details["no_label"].startswith("label is null")
    assert details["bad_label"] == "label 7 is not 0 (spoof) or 1 (bona fide)"
    assert details["empty_audio"] == "the audio column holds no bytes"
    assert all("\n" not in r["detail"] and r["reason"] in SKIP_REASONS for r in bad)
    # without a list the rows are skipped all the same, and nothing raises
    assert_same(prepare_rows(broken_rows, _recipes(folders["broken"])[kind], epoch=1), got)


def test_a_batch_of_only_bad_rows_is_an_empty_batch_the_collate_accepts(folders):
    pytest.importorskip("torch")
    rows = rows_of(folders["broken"])
    only_bad = np.asarray([str(u) in folders["reasons"] for u in rows["utt_id"]])
    batch = {k: v[only_bad] for k, v in rows.items()}
    bad: list[dict] = []
    out = prepare_rows(batch, Recipe(num_samples=T), epoch=0, bad=bad)
    assert len(bad) == 5 and out["wave"].shape == (0, T) and out["wave"].dtype == np.float32
    assert out["label"].dtype == np.int64 and out["augmented"].dtype == bool
    assert out["utt_id"].shape == out["corpus"].shape == (0,)
    collated = BatchCollate()(out)
    assert collated["wave"].shape == (0, T) and collated["utt_id"] == []
    full = prepare_full_length(batch)
    assert len(full["wave"]) == 0 and full["label"].dtype == np.int64
    assert BatchCollate()(full)["wave"].shape == (0, 0)
    assert prepare_rows({k: v[:0] for k, v in rows.items()}, Recipe(num_samples=T), 0)[
        "wave"
    ].shape == (0, T)


def test_full_length_scoring_skips_the_same_rows(folders):
    rows = rows_of(folders["broken"])
    bad: list[dict] = []
    out = prepare_full_length(rows, bad=bad)
    assert named(bad) == expected(folders, 0)
    clean = rows_of(folders["clean"])
    want = {
        str(u): decode_window(a, 0, None)
        for u, a in zip(clean["utt_id"], clean["audio"])
        if str(u) not in folders["reasons"]
    }
    assert list(out["utt_id"]) == list(want)
    for u, w, lab in zip(out["utt_id"], out["wave"], out["label"]):
        assert np.array_equal(w, want[u]) and lab in (0, 1)


def test_a_label_its_source_metadata_lacks_is_a_bad_label(folders):
    rows = rows_of(folders["clean"])
    source_of = {_norm_path(f): 0 for f in shard_files(Source(str(folders["clean"])))}
    recipe = Recipe(num_samples=T, factors=({0: 1.0},), source_of=source_of)  # "spoof only"
    bad: list[dict] = []
    out = prepare_rows(rows, recipe, epoch=0, bad=bad)
    bona = sorted(str(u) for u, lab in zip(rows["utt_id"], rows["label"]) if lab == 1)
    assert sorted(r["utt_id"] for r in bad) == bona and {r["reason"] for r in bad} == {"bad_label"}
    assert "metadata.parquet" in bad[0]["detail"] and (out["label"] == 0).all()


@pytest.mark.parametrize(
    "value, label, reason",
    [
        (1, 1, ""),
        (0.0, 0, ""),
        (np.int8(1), 1, ""),
        (None, -1, "no_label"),
        (float("nan"), -1, "no_label"),
        (7, -1, "bad_label"),
        (0.5, -1, "bad_label"),
        (-1, -1, "bad_label"),
        ("bonafide", -1, "bad_label"),
    ],
)
def test_label_of(value, label, reason):
    got = label_of(value)
    assert got[:2] == (label, reason) and bool(got[2]) == bool(reason)


# ----------------------------------------------------------------------------- dev/eval sets in-process


@pytest.mark.parametrize("world", [1, 2])
def test_eval_parts_skip_and_name_bad_rows_and_keep_the_rest(folders, world):
    recipe = Recipe(num_samples=T)
    want = {}
    for rank in range(world):
        for b in iter_eval_part(
            Source(str(folders["clean"])), rank, world, batch_size=3, recipe=recipe
        ):
            want.update(zip(b["utt_id"], b["wave"].numpy()))
    got, bad = {}, []
    for rank in range(world):
        for b in iter_eval_part(
            Source(str(folders["broken"])), rank, world, batch_size=3, recipe=recipe, bad=bad
        ):
            assert 0 < len(b["utt_id"]) <= 3 and b["wave"].shape[1] == T
            for u, w in zip(b["utt_id"], b["wave"].numpy()):
                assert u not in got  # every row at most once
                got[u] = w
    assert named(bad) == expected(folders, 0)
    assert sorted(got) == sorted(u for u in want if u not in folders["reasons"])
    assert all(np.array_equal(got[u], want[u]) for u in got)


def test_eval_parts_without_a_list_log_what_they_skip(folders, caplog):
    with caplog.at_level(logging.WARNING, logger="spoofdet.data.pipeline"):
        batches = list(
            iter_eval_part(
                Source(str(folders["broken"])), 0, 1, batch_size=4, recipe=Recipe(num_samples=T)
            )
        )
    assert sum(len(b["utt_id"]) for b in batches) == 5
    text = caplog.text
    for utt, reason in folders["reasons"].items():
        assert f"skipped row {utt} of {folders['shard'][utt]}: {reason}:" in text


# ----------------------------------------------------------------------------- cached features


def feature_batch(n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feats = [feature_cache.encode_feats(rng.standard_normal((3, 2)), "float16") for _ in range(n)]
    return {
        "utt_id": np.asarray([f"u{i}" for i in range(n)], dtype=object),
        "corpus": np.asarray(["c"] * n, dtype=object),
        "label": np.asarray([i % 2 for i in range(n)], dtype=np.float64),
        "num_samples": np.full(n, 16000, dtype=np.int64),
        "feats": np.asarray(feats, dtype=object),
        "frames": np.full(n, 3, dtype=np.int64),
        "dim": np.full(n, 2, dtype=np.int64),
        "path": np.asarray(["/f/part-00000.parquet"] * n, dtype=object),
    }


def test_feature_rows_of_the_wrong_size_or_without_label_are_skipped():
    recipe = Recipe(num_samples=16000, features_dtype="float16")
    clean = prepare_rows(feature_batch(), recipe, epoch=0)
    batch = feature_batch()
    batch["feats"][1] = batch["feats"][1][:-2]  # one value short
    batch["label"][3] = np.nan
    bad: list[dict] = []
    got = prepare_rows(batch, recipe, epoch=0, bad=bad)
    assert [(r["utt_id"], r["shard"], r["reason"]) for r in bad] == [
        ("u3", "/f/part-00000.parquet", "no_label"),
        ("u1", "/f/part-00000.parquet", "decode_error"),
    ]
    assert bad[1]["detail"].startswith("FeatureError: feats holds 10 bytes, expected frames 3")
    assert_same(got, good_part(clean, {"u1", "u3"}))
    only_bad = {k: v[[1, 3]] for k, v in batch.items()}
    empty = prepare_rows(only_bad, recipe, epoch=0)
    assert empty["feats"].shape == (0, 3, 2) and empty["feats"].dtype == np.float32


# ----------------------------------------------------------------------------- scoring and mixing


def test_scoring_errors_carry_the_same_reasons_and_the_shard(folders):
    from spoofdet.serve.batch import decode_shard_rows

    rows = rows_of(folders["broken"])
    batch = {k: rows[k] for k in ("utt_id", "audio", "path")}
    out = decode_shard_rows(batch, length="4s")
    errors = {str(u): str(e) for u, e in zip(out["utt_id"], out["error"]) if e}
    undecodable = {
        u: r for u, r in folders["reasons"].items() if r in ("decode_error", "empty_audio")
    }
    assert set(errors) == set(undecodable)  # labels do not matter to scoring
    for utt, reason in undecodable.items():
        assert errors[utt].startswith(f"{reason}: ") and errors[utt].endswith(
            f" (shard {folders['shard'][utt]})"
        )
    assert (out["wave"][[not e for e in out["error"]]] != 0).any(axis=1).all()


def test_realised_mix_leaves_unlabelled_metadata_rows_out(tmp_path):
    table = pa.table(
        {
            "utt_id": ["a", "b", "c", "d", "e"],
            "corpus": ["x"] * 5,
            "label": pa.array([1, 0, None, 0, 7], pa.int8()),
        }
    )
    pq.write_table(table, tmp_path / METADATA_FILE)
    write_file_list(*resolve_out(str(tmp_path)), [METADATA_FILE])
    source = Source(str(tmp_path), name="S")
    factors = mix_factors([{1: 1, 0: 2}], class_balance=True, epoch_size=6)
    mix = realised_mix([source], factors, seed=1, epoch=0)
    entry = mix["sources"]["S"]
    assert entry["available"] == {"bonafide": 1, "spoof": 2} and entry["unlabelled"] == 2
    assert mix["total"] == sum(entry["drawn"].values())
