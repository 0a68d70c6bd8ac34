"""The training input pipeline's pure parts (no Ray cluster): crop/pad, windowed decode, mixing, rows."""

import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from data_prep import shard
from spoofdet.data import DataError
from spoofdet.data.audio import crop_or_pad, decode_flac
from spoofdet.data.collate import BatchCollate
from spoofdet.data.corpora import prepare_csv
from spoofdet.data.pipeline import READ_COLUMNS, Source, iter_eval_part, shard_files
from spoofdet.data.rawboost import rawboost_params
from spoofdet.data.sampling import copies, mix_factors, read_metadata, realised_mix, row_hash
from spoofdet.data.schema import BONAFIDE, SPOOF
from spoofdet.data.transforms import (
    Recipe,
    _norm_path,
    crop_offset,
    decode_window,
    prepare_full_length,
    prepare_rows,
)

T = 8_000  # short crops keep the tests fast; the code path is the same as for 64,600


def make_source(root, name, seconds_and_labels, seed):
    """Write a CSV corpus of noise clips and shard it (local executor); returns the shard folder."""
    rng = np.random.default_rng(seed)
    audio = root / f"{name}_audio"
    audio.mkdir()
    lines = ["path,label"]
    for i, (seconds, label) in enumerate(seconds_and_labels):
        x = (0.3 * rng.standard_normal(int(16000 * seconds))).clip(-1, 1).astype(np.float32)
        sf.write(audio / f"{name}{i:03d}.wav", x, 16000)
        lines.append(f"{name}{i:03d}.wav,{label}")
    (audio / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = root / name
    shard.run(
        prepare_csv(audio).table,
        str(out),
        corpus="csv",
        shard_rows=4,
        executor="local",
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """Two small shard folders, A (12 rows) and B (6 rows, weight 3): shared with test_data_ray.py."""
    root = tmp_path_factory.mktemp("data")
    a = make_source(
        root, "a", [(0.3 + 0.4 * i, "bonafide" if i % 3 == 0 else "spoof") for i in range(12)], 1
    )
    b = make_source(
        root, "b", [(0.2 + 0.5 * i, "bonafide" if i % 2 else "spoof") for i in range(6)], 2
    )
    return [Source(str(a), name="A"), Source(str(b), name="B", weight=3.0)]


def all_rows(source, with_path=True):
    tables = []
    for f in shard_files(source):
        t = pq.read_table(f, columns=READ_COLUMNS)
        if with_path:
            t = t.append_column("path", pa.array([f] * len(t)))
        tables.append(t)
    t = pa.concat_tables(tables)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


# ----------------------------------------------------------------------------- crop / pad / decode


def test_crop_keeps_first_samples_and_offsets():
    x = np.arange(100, dtype=np.float32)
    assert np.array_equal(crop_or_pad(x, 40), x[:40])
    assert np.array_equal(crop_or_pad(x, 40, offset=60), x[60:])
    assert np.array_equal(crop_or_pad(x, 100), x)
    assert crop_or_pad(x.astype(np.float64), 10).dtype == np.float32


@pytest.mark.parametrize("n, length", [(1, 7), (3, 10), (7, 64), (40, 41), (64, 64)])
def test_short_clips_are_repeat_padded_like_the_seeds(n, length):
    x = np.arange(1, n + 1, dtype=np.float32)
    seeds_rule = np.tile(x, int(math.ceil(length / n)) + 1)[
        :length
    ]  # what SSL_Anti-spoofing's pad() does
    assert np.array_equal(crop_or_pad(x, length), seeds_rule)


def test_crop_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="nothing to crop"):
        crop_or_pad(np.zeros(0, np.float32), 10)
    with pytest.raises(ValueError, match="offset 20"):
        crop_or_pad(np.zeros(10, np.float32), 10, offset=20)


def test_windowed_decode_equals_slicing_the_full_decode(sources):
    rows = all_rows(sources[0])
    data_bytes, n = rows["audio"][-1], int(rows["num_samples"][-1])  # the longest clip
    full, _ = decode_flac(data_bytes)
    assert len(full) == n
    for offset, length in [
        (0, T),
        (1, T),
        (4095, T),
        (n - T, T),
        (n - 5, T),
        (0, None),
        (12345, None),
    ]:
        got = decode_window(data_bytes, offset, length)
        want = full[offset:] if length is None else full[offset : offset + length]
        assert got.dtype == np.float32 and np.array_equal(got, want), (offset, length)


def test_crop_offsets_stay_inside_the_clip():
    rng = np.random.default_rng(0)
    offsets = {crop_offset(10_000, T, "random", rng) for _ in range(500)}
    assert min(offsets) >= 0 and max(offsets) <= 10_000 - T and len(offsets) > 100
    assert crop_offset(10_000, T, "first", rng) == 0
    assert crop_offset(T, T, "random", rng) == 0  # AASIST's pad_random crashed on exactly N
    assert crop_offset(10, T, "random", rng) == 0
    with pytest.raises(DataError, match="data.crop"):
        crop_offset(10, T, "middle", rng)


# ----------------------------------------------------------------------------- mixing


def test_mix_by_size_takes_every_row_once():
    assert mix_factors([{1: 10, 0: 90}, {1: 5, 0: 5}]) == [{1: 1.0, 0: 1.0}, {1: 1.0, 0: 1.0}]


def test_balanced_mix_and_weights():
    counts = [{1: 10, 0: 90}, {1: 5, 0: 5}]  # sizes 100 and 10, epoch of 110 rows
    bal = mix_factors(counts, mix="balanced")
    assert bal[0][1] == pytest.approx(0.55) and bal[1][0] == pytest.approx(5.5)
    w = mix_factors(counts, mix="weights", weights=[1, 10], epoch_size=220)
    assert w[0][0] * 100 == pytest.approx(20) and w[1][0] * 10 == pytest.approx(200)
    cb = mix_factors(counts, class_balance=True)  # each source keeps its size, classes split 50/50
    assert cb[0][1] * 10 == pytest.approx(50) and cb[0][0] * 90 == pytest.approx(50)
    assert cb[1][1] * 5 == pytest.approx(5) and cb[1][0] * 5 == pytest.approx(5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mix": "zipf"}, "data.mix"),
        ({"mix": "weights", "weights": [0, 0]}, "weights must be >= 0 with a positive sum"),
        ({"mix": "weights", "weights": [1]}, "not every source has a weight"),
        ({"epoch_size": -3}, "epoch_size"),
    ],
)
def test_bad_mix_settings_are_named(kwargs, match):
    with pytest.raises(DataError, match=match):
        mix_factors([{1: 10, 0: 90}, {1: 5, 0: 5}], **kwargs)


def test_class_balance_needs_both_classes():
    with pytest.raises(DataError, match="B: data.class_balance needs both classes .* no bonafide"):
        mix_factors([{1: 3, 0: 3}, {0: 4}], class_balance=True, names=["A", "B"])
    with pytest.raises(DataError, match="B: the source has no rows"):
        mix_factors([{1: 3}, {}], names=["A", "B"])


def test_copies_have_the_right_expectation():
    hashes = [row_hash(7, 0, "c", f"u{i}") for i in range(20_000)]
    for factor in (0.0, 0.3, 1.0, 2.0, 2.75):
        drawn = np.array([copies(h, factor) for h in hashes])
        assert set(np.unique(drawn)) <= {math.floor(factor), math.floor(factor) + 1}
        assert drawn.mean() == pytest.approx(factor, abs=0.02)
    assert row_hash(7, 0, "c", "u1") != row_hash(7, 1, "c", "u1") != row_hash(8, 0, "c", "u1")


# ----------------------------------------------------------------------------- rows -> examples


def test_prepare_rows_batch_contract_and_first_crop(sources):
    rows = all_rows(sources[0], with_path=False)
    out = prepare_rows(rows, Recipe(num_samples=T), epoch=0)
    n = len(rows["utt_id"])
    assert out["wave"].shape == (n, T) and out["wave"].dtype == np.float32
    assert out["label"].dtype == np.int64 and set(out["label"]) == {BONAFIDE, SPOOF}
    assert list(out["utt_id"]) == list(rows["utt_id"]) and not out["augmented"].any()
    for i in range(n):
        full, _ = decode_flac(rows["audio"][i])
        assert np.array_equal(out["wave"][i], crop_or_pad(full, T))


def test_random_crops_are_seeded_per_epoch(sources):
    rows = all_rows(sources[0], with_path=False)
    long = rows["num_samples"] > T
    assert long.sum() >= 5
    recipe = Recipe(num_samples=T, crop="random", seed=3)
    e0, e0_again, e1 = (prepare_rows(rows, recipe, epoch=e)["wave"] for e in (0, 0, 1))
    assert np.array_equal(e0, e0_again)
    assert not np.array_equal(e0[long], e1[long])
    for i in np.flatnonzero(long):  # every crop is a real window of the clip
        full, _ = decode_flac(rows["audio"][i])
        windows = np.lib.stride_tricks.sliding_window_view(full, T)
        assert (windows == e0[i]).all(axis=1).any()


def test_rawboost_is_applied_after_the_crop_with_probability_p(sources):
    rows = all_rows(sources[0], with_path=False)
    clean = prepare_rows(rows, Recipe(num_samples=T), epoch=0)["wave"]
    never = prepare_rows(rows, Recipe(num_samples=T, rawboost_algo=5, rawboost_p=0.0), epoch=0)
    assert np.array_equal(never["wave"], clean) and not never["augmented"].any()
    always = prepare_rows(rows, Recipe(num_samples=T, rawboost_algo=5), epoch=0)
    assert always["augmented"].all() and always["wave"].shape == clean.shape
    assert np.isfinite(always["wave"]).all()
    assert all(not np.allclose(a, c) for a, c in zip(always["wave"], clean))
    half = [
        prepare_rows(rows, Recipe(num_samples=T, rawboost_algo=3, rawboost_p=0.5), epoch=e)
        for e in range(6)
    ]
    share = np.mean([h["augmented"].mean() for h in half])
    assert 0.3 < share < 0.7
    for h in half:
        assert np.array_equal(h["wave"][~h["augmented"]], clean[~h["augmented"]])
    again = prepare_rows(rows, Recipe(num_samples=T, rawboost_algo=5), epoch=0)
    assert np.array_equal(again["wave"], always["wave"])


def test_recipe_rejects_bad_settings():
    with pytest.raises(DataError, match="crop 'middle'.*rawboost.algo 12.*rawboost.p must lie"):
        Recipe(crop="middle", rawboost_algo=12, rawboost_p=1.5)


def test_realised_mix_is_exactly_what_the_rows_produce(sources):
    counts = []
    for s in sources:
        labels = read_metadata(s, ("label",))["label"]
        counts.append({BONAFIDE: int((labels == 1).sum()), SPOOF: int((labels == 0).sum())})
    factors = mix_factors(
        counts,
        mix="weights",
        weights=[s.weight for s in sources],
        class_balance=True,
        epoch_size=60,
        names=[s.label for s in sources],
    )
    source_of = {_norm_path(f): i for i, s in enumerate(sources) for f in shard_files(s)}
    recipe = Recipe(num_samples=T, factors=tuple(factors), source_of=source_of, seed=11)
    for epoch in (0, 1):
        expected = realised_mix(sources, factors, seed=11, epoch=epoch)
        got = {}
        for i, s in enumerate(sources):
            out = prepare_rows(all_rows(s), recipe, epoch=epoch)
            got[s.label] = {
                "bonafide": int((out["label"] == 1).sum()),
                "spoof": int((out["label"] == 0).sum()),
            }
        assert got == {k: v["drawn"] for k, v in expected["sources"].items()}
        assert expected["total"] == sum(sum(v.values()) for v in got.values())
    # B (6 rows) holds 3/4 of a 60-row epoch, so it is repeated; A (12 rows) is subsampled
    assert (
        expected["sources"]["B"]["share"] > 0.6 and expected["sources"]["A"]["factor"]["spoof"] < 1
    )
    b = prepare_rows(all_rows(sources[1]), recipe, epoch=0)
    assert np.unique(b["utt_id"], return_counts=True)[1].max() > 1


def test_repeated_rows_get_their_own_crops(sources):
    rows = all_rows(sources[1])
    source_of = {_norm_path(f): 0 for f in shard_files(sources[1])}
    recipe = Recipe(num_samples=T, crop="random", factors=({1: 4.0, 0: 4.0},), source_of=source_of)
    out = prepare_rows(rows, recipe, epoch=0)
    assert len(out["utt_id"]) == 4 * len(rows["utt_id"])
    longest = rows["utt_id"][np.argmax(rows["num_samples"])]
    crops = out["wave"][out["utt_id"] == longest]
    assert len({c.tobytes() for c in crops}) == 4


def test_metadata_and_shards_missing_are_explained(tmp_path):
    with pytest.raises(DataError, match="no shards in .*spoofdet prepare"):
        shard_files(Source(str(tmp_path)))
    with pytest.raises(DataError, match="metadata.parquet is missing"):
        read_metadata(Source(str(tmp_path)))


def test_collate_makes_the_batch_contract(sources):
    torch = pytest.importorskip("torch")
    rows = all_rows(sources[0], with_path=False)
    out = prepare_rows(rows, Recipe(num_samples=T), epoch=0)
    batch = BatchCollate()(out)
    assert batch["wave"].dtype == torch.float32 and batch["wave"].shape == (len(rows["utt_id"]), T)
    assert batch["label"].dtype == torch.int64 and batch["augmented"].dtype == torch.bool
    assert batch["utt_id"] == [str(u) for u in rows["utt_id"]] and batch["corpus"][0] == "csv"
    full = prepare_full_length({k: v[:1] for k, v in rows.items()})
    one = BatchCollate()(full)
    assert one["wave"].shape == (1, int(rows["num_samples"][0]))
    with pytest.raises(DataError, match="batch_size=1"):
        BatchCollate()(prepare_full_length({k: v[:2] for k, v in rows.items()}))
    assert Recipe().rawboost == rawboost_params()


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_eval_parts_cover_every_row_exactly_once(sources, world):
    recipe = Recipe(num_samples=T)
    seen = []
    for rank in range(world):
        for batch in iter_eval_part(sources[0], rank, world, batch_size=5, recipe=recipe):
            assert batch["wave"].shape[1] == T and len(batch["utt_id"]) <= 5
            seen += batch["utt_id"]
    assert sorted(seen) == sorted(str(u) for u in all_rows(sources[0])["utt_id"])
    assert len(seen) == len(set(seen))
    limited = list(iter_eval_part(sources[0], 0, 1, batch_size=2, recipe=recipe, max_batches=3))
    assert len(limited) == 3


# ----------------------------------------------------------------------------- old import paths


def test_old_names_still_resolve_to_the_new_homes():
    """``spoofdet.data.X`` and ``pipeline.X`` find every moved name, for this release only."""
    import spoofdet.data
    from spoofdet.data import collate, pipeline, sampling, transforms

    for home in (sampling, transforms, collate):
        for name in spoofdet.data._HOMES[home.__name__]:
            assert getattr(spoofdet.data, name) is getattr(home, name), name
            assert getattr(pipeline, name) is getattr(home, name), name
    assert spoofdet.data.DataError is pipeline.DataError is DataError
    assert spoofdet.data.read_metadata is pipeline.read_metadata is read_metadata
    assert spoofdet.data.Source is Source and spoofdet.data._norm_path is _norm_path
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        spoofdet.data.nothing_here


def test_the_stage_modules_import_neither_torch_nor_ray():
    code = (
        "import sys, spoofdet.data, spoofdet.data.sampling, spoofdet.data.transforms;"
        "from spoofdet.data import features, schema;"
        "spoofdet.data.mix_factors, spoofdet.data.Recipe, spoofdet.data.read_metadata;"
        "print(','.join(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
