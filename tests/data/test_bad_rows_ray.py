"""One bad row never kills a run, on a local Ray cluster: the training pipeline's tasks skip a
corrupt FLAC blob and a null label, every good row still arrives once, unchanged, and the epoch
clock names the two (utt_id, shard file, reason); the scoring pipelines skip or report the same."""

from __future__ import annotations

import numpy as np
import pytest

from spoofdet.data import pipeline as data
from tests.data.test_bad_rows import BAD_FLAC, T, break_rows, rows_of, write_shards

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A real shard folder (10 rows, 4 per shard) whose shard 1 has, in rows 0 and 1, a corrupt
    FLAC blob and a null label: with 2 rows per map batch, one batch is entirely bad."""
    root = tmp_path_factory.mktemp("bad_rows_ray")
    clean = write_shards(root, seed=5)
    clean_rows = rows_of(clean)
    bad = break_rows(clean, 1, {0: ("audio", BAD_FLAC), 1: ("label", None)})
    (corrupt, shard), (unlabelled, _) = bad.items()
    return {
        "path": clean,
        "clean_rows": clean_rows,
        "bad": [(corrupt, shard, "decode_error"), (unlabelled, shard, "no_label")],
    }


def one_epoch(pipe, epoch: int) -> dict[str, np.ndarray]:
    """utt_id -> wave of every example of ``epoch``, via the training loop's iterator."""
    data.set_epoch(pipe.clock, epoch)
    seen: dict[str, np.ndarray] = {}
    for batch in data.iter_train_batches(
        {"train": pipe.dataset}, shares=None, batch_size=4, shuffle_buffer=4, shuffle_seed=epoch
    ):
        assert batch["wave"].shape == (4, T) and len(batch["utt_id"]) == 4
        for utt, wave in zip(batch["utt_id"], batch["wave"].numpy()):
            assert utt not in seen, f"{utt} seen twice"
            seen[utt] = wave
    return seen


def named(rows: list[dict]) -> list[tuple[str, str, str]]:
    return sorted((r["utt_id"], r["shard"], r["reason"]) for r in rows)


def test_train_pipeline_skips_counts_and_names_bad_rows(cluster, folder):
    pipe = data.build_train_dataset(
        [data.Source(str(folder["path"]))], num_samples=T, seed=5, batch_rows=2
    )
    clean = folder["clean_rows"]
    want = data.prepare_rows(clean, pipe.recipe, 0)
    bad_utts = {u for u, _, _ in folder["bad"]}
    good = {u: w for u, w in zip(want["utt_id"], want["wave"]) if u not in bad_utts}
    assert len(good) == 8  # 10 rows, 2 bad: two full batches of 4

    seen = one_epoch(pipe, 0)
    assert sorted(seen) == sorted(good)
    assert all(np.array_equal(seen[u], good[u]) for u in good)
    rows = data.bad_rows(pipe.clock, 0)
    assert named(rows) == sorted(folder["bad"])
    assert all(r["epoch"] == 0 and r["detail"] for r in rows)
    assert data.bad_row_counts(pipe.clock) == {0: 2}

    # the same epoch again (a restarted attempt) counts nothing twice; another epoch counts its own
    assert sorted(one_epoch(pipe, 0)) == sorted(good)
    assert data.bad_row_counts(pipe.clock) == {0: 2}
    assert sorted(one_epoch(pipe, 1)) == sorted(good)
    assert data.bad_row_counts(pipe.clock) == {0: 2, 1: 2}
    assert named(data.bad_rows(pipe.clock, 1)) == sorted(folder["bad"])
    assert len(data.bad_rows(pipe.clock)) == 4 and data.bad_rows(pipe.clock, 7) == []


def test_the_clock_counts_every_row_and_names_a_bounded_number(cluster):
    clock = data._start_clock()
    rows = [
        {
            "utt_id": f"u{i}",
            "shard": "/s/part-00000.parquet",
            "reason": "decode_error",
            "detail": "x",
            "epoch": 3,
        }
        for i in range(data.MAX_NAMED_BAD_ROWS + 5)
    ]
    ray.get(clock.record.remote(rows))
    ray.get(clock.record.remote(rows[:10]))  # a retried task reports its rows again
    assert data.bad_row_counts(clock) == {3: data.MAX_NAMED_BAD_ROWS + 5}
    assert len(data.bad_rows(clock, 3)) == data.MAX_NAMED_BAD_ROWS
    assert data.bad_rows(clock, 0) == [] and data.bad_row_counts(data._start_clock()) == {}


def test_scoring_pipelines_skip_or_report_the_same_rows(cluster, folder):
    source = data.Source(str(folder["path"]))
    bad_utts = {u for u, _, _ in folder["bad"]}
    clean = folder["clean_rows"]
    good = {str(u) for u in clean["utt_id"]} - bad_utts

    clock = data._start_clock()
    fixed = data.build_eval_dataset(source, num_samples=T, batch_rows=2, clock=clock)
    got = [
        u
        for b in fixed.iter_torch_batches(batch_size=3, collate_fn=data.BatchCollate())
        for u in b["utt_id"]
    ]
    assert sorted(got) == sorted(good)
    full = data.build_eval_dataset(source, num_samples=None, batch_rows=2, clock=clock)
    lengths = {
        b["utt_id"][0]: b["wave"].shape[1]
        for b in full.iter_torch_batches(batch_size=1, collate_fn=data.BatchCollate())
    }
    assert lengths == {
        str(u): int(n) for u, n in zip(clean["utt_id"], clean["num_samples"]) if str(u) in good
    }
    assert named(data.bad_rows(clock, 0)) == sorted(folder["bad"])  # both readers, counted once

    # `spoofdet score`: the undecodable clip is an error row naming its shard; labels do not matter
    from spoofdet.serve.batch import decode_shard_rows, shard_dataset

    decoded = shard_dataset(str(folder["path"])).map_batches(
        decode_shard_rows, batch_size=2, batch_format="numpy", fn_kwargs={"length": "4s"}
    )
    errors = {r["utt_id"]: r["error"] for r in decoded.take_all() if r["error"]}
    (corrupt, shard, _), _ = folder["bad"]
    assert list(errors) == [corrupt]
    assert errors[corrupt].startswith("decode_error: ") and errors[corrupt].endswith(
        f"(shard {shard})"
    )
