"""Variable-length training input (unit, no Ray): whole clips cut to max_seconds, batches by total
duration (every clip once, little padding, within budget, seeded), the padded batch contract."""

from __future__ import annotations

import numpy as np
import pytest

from spoofdet.data import DataError
from spoofdet.data.collate import BatchCollate, padding_mask
from spoofdet.data.duration_batches import (
    iter_duration_batches,
    pack_by_duration,
    pad_waves,
    padding_fraction,
)
from spoofdet.data.pipeline import iter_train_batches
from spoofdet.data.transforms import Recipe, decode_window, prepare_rows
from tests.data.test_data import all_rows, sources  # noqa: F401 - the shared shard fixture

BAD_FLAC = b"fLaC" + bytes(range(256)) * 2  # a FLAC signature, then no FLAC stream


def mixed_chunks(n=120, chunk=7, seed=0):
    """``n`` clips of 0.05-0.6 s (800-9,600 samples, uniform) in numpy chunks of ``chunk`` rows;
    each clip's samples are its index (so content can be checked after padding)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(800, 9_601, n)
    chunks = []
    for s in range(0, n, chunk):
        wave = np.empty(min(chunk, n - s), dtype=object)
        for j in range(len(wave)):
            wave[j] = np.full(lengths[s + j], s + j + 1, np.float32)
        chunks.append(
            {
                "wave": wave,
                "label": np.arange(s, s + len(wave)) % 2,
                "utt_id": np.asarray([f"u{i:03d}" for i in range(s, s + len(wave))], object),
            }
        )
    return chunks, lengths


def test_pack_by_duration_groups_neighbouring_lengths_within_budget():
    assert pack_by_duration([5, 1, 3, 9, 2], 9) == [[1, 4, 2], [0], [3]]
    assert pack_by_duration([20, 4], 9) == [[1], [0]]  # too long for the budget: a batch alone
    with pytest.raises(DataError, match="data.batch_seconds must be positive"):
        pack_by_duration([1], 0)


def test_duration_batches_yield_every_clip_once_with_little_padding():
    chunks, lengths = mixed_chunks()
    budget = 32_000
    batches = list(iter_duration_batches(chunks, batch_samples=budget, window=40, seed=3))
    seen = [u for b in batches for u in b["utt_id"]]
    assert sorted(seen) == [f"u{i:03d}" for i in range(len(lengths))]  # each exactly once
    for b in batches:
        B, Tmax = b["wave"].shape
        assert b["wave"].dtype == np.float32 and b["lengths"].dtype == np.int64
        assert Tmax * B <= budget and Tmax == b["lengths"].max()
        for row, utt, n in zip(b["wave"], b["utt_id"], b["lengths"]):
            i = int(utt[1:])
            assert n == lengths[i] and np.all(row[:n] == i + 1) and np.all(row[n:] == 0)
    frac = padding_fraction(b["lengths"] for b in batches)
    assert frac < 0.25
    assert (len(batches), round(frac, 4)) == (26, 0.089)  # pinned for this corpus and seed
    # one window holding everything sorts globally: less padding than windows of 40 rows
    whole = list(iter_duration_batches(chunks, batch_samples=budget, window=1000, seed=3))
    assert padding_fraction(b["lengths"] for b in whole) < frac


def test_duration_batches_are_deterministic_for_a_seed():
    chunks, _ = mixed_chunks()

    def order(seed):
        it = iter_duration_batches(chunks, batch_samples=32_000, window=40, seed=seed)
        return [list(b["utt_id"]) for b in it]

    assert order(3) == order(3)
    assert order(3) != order(4)
    assert sorted(map(sorted, order(3))) == sorted(map(sorted, order(4)))  # same batches


def test_fixed_length_rows_batch_by_duration_without_padding():
    chunk = {"wave": np.ones((10, 1000), np.float32), "utt_id": np.arange(10).astype(str)}
    batches = list(iter_duration_batches([chunk], batch_samples=3500, window=8, seed=0))
    assert [len(b["utt_id"]) for b in batches] == [3, 3, 3, 1]
    assert padding_fraction(b["lengths"] for b in batches) == 0.0
    with pytest.raises(DataError, match="cached-feature sources"):
        list(
            iter_duration_batches(
                [{"feats": np.zeros((1, 2, 3))}], batch_samples=9, window=1, seed=0
            )
        )


def test_collate_pads_and_describes_the_padding():
    wave, lengths = pad_waves([np.ones(3, np.float32), np.ones(5, np.float32)])
    batch = BatchCollate()(
        {
            "wave": wave,
            "lengths": lengths,
            "label": np.array([1, 0]),
            "utt_id": np.array(["a", "b"], object),
            "corpus": np.array(["c", "c"], object),
        }
    )
    assert batch["wave"].shape == (2, 5) and batch["lengths"].tolist() == [3, 5]
    assert padding_mask(batch).tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch["wave"][0, 3:].abs().sum() == 0
    fixed = {k: v for k, v in batch.items() if k != "lengths"}
    assert padding_mask(fixed) is None


def test_crop_none_keeps_whole_clips_and_cuts_long_ones_like_random_crops(sources):  # noqa: F811
    rows = all_rows(sources[0])  # clips of 0.3 + 0.4 i s, i < 12
    M = 24_000  # 1.5 s
    whole = prepare_rows(rows, Recipe(crop="none", max_samples=M, seed=7), epoch=2)
    crops = prepare_rows(rows, Recipe(crop="random", num_samples=M, seed=7), epoch=2)
    assert whole["wave"].dtype == object
    for i, w in enumerate(whole["wave"]):
        full = decode_window(rows["audio"][i], 0, None)
        if len(full) <= M:
            assert np.array_equal(w, full)  # whole, not repeat-padded
        else:  # cut at the offset a random crop of M samples draws (same row hash, epoch, copy)
            assert len(w) == M and np.array_equal(w, crops["wave"][i])
    other = prepare_rows(rows, Recipe(crop="none", max_samples=M, seed=7), epoch=3)
    assert any(not np.array_equal(a, b) for a, b in zip(whole["wave"], other["wave"]))
    uncut = prepare_rows(rows, Recipe(crop="none", seed=7), epoch=2)
    assert [len(w) for w in uncut["wave"]] == list(rows["num_samples"])


def test_crop_none_skips_and_records_bad_rows(sources):  # noqa: F811
    rows = all_rows(sources[0])
    rows["audio"] = rows["audio"].copy()
    rows["audio"][1] = BAD_FLAC
    bad = []
    out = prepare_rows(rows, Recipe(crop="none", max_samples=16_000), epoch=0, bad=bad)
    assert len(out["wave"]) == len(rows["utt_id"]) - 1
    assert [(b["utt_id"], b["reason"]) for b in bad] == [(rows["utt_id"][1], "decode_error")]
    rows["audio"][:] = BAD_FLAC
    empty = prepare_rows(rows, Recipe(crop="none"), epoch=0, bad=[])
    assert empty["wave"].dtype == object and len(empty["wave"]) == 0


def test_max_seconds_needs_crop_none():
    with pytest.raises(DataError, match="max_seconds applies only to crop: none"):
        Recipe(crop="random", max_samples=16_000)


class FakeShard:
    """Stands in for a Ray Data shard: ``iter_batches`` yields the given numpy chunks."""

    def __init__(self, chunks):
        self.chunks = chunks

    def iter_batches(self, **kwargs):
        assert kwargs["batch_format"] == "numpy"
        return iter(self.chunks)


def test_iter_train_batches_batches_by_seconds():
    chunks, lengths = mixed_chunks()
    for c in chunks:
        c["corpus"] = np.full(len(c["utt_id"]), "x", object)
    kw = {"batch_size": 8, "shuffle_buffer": 40, "shuffle_seed": 3}
    batches = list(
        iter_train_batches({"train": FakeShard(chunks)}, shares=None, batch_seconds=2.0, **kw)
    )
    assert sum(len(b["utt_id"]) for b in batches) == len(lengths)
    assert all(b["wave"].shape[0] * b["wave"].shape[1] <= 32_000 for b in batches)
    assert all(b["lengths"].dtype.is_floating_point is False for b in batches)
    with pytest.raises(DataError, match="proportional batches"):
        next(iter_train_batches({}, shares=[0.5, 0.5], batch_seconds=2.0, **kw))
