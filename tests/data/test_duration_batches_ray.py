"""Variable-length training input on a local Ray cluster: whole clips (crop none, cut to
max_seconds) through the Ray Data pipeline, batched by total duration: every clip once, each
exactly as prepare_rows makes it, within batch_seconds, padding under 25 %."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from spoofdet.data import pipeline as data
from spoofdet.data import shard_writer
from spoofdet.data.corpora import prepare_csv
from spoofdet.data.duration_batches import padding_fraction
from tests.data.test_data import all_rows

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

MAX_SECONDS = 1.5
BATCH_SECONDS = 6.0


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A shard folder of 30 noise clips of 0.2-2.5 s (some longer than MAX_SECONDS)."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(11)
    audio = root / "audio"
    audio.mkdir()
    lines = ["path,label"]
    for i in range(30):
        x = (0.3 * rng.standard_normal(int(16000 * rng.uniform(0.2, 2.5)))).clip(-1, 1)
        sf.write(audio / f"m{i:03d}.wav", x.astype(np.float32), 16000)
        lines.append(f"m{i:03d}.wav,{'bonafide' if i % 3 == 0 else 'spoof'}")
    (audio / "manifest.csv").write_text("\n".join(lines) + "\n")
    shard_writer.run(
        prepare_csv(audio).table,
        str(root / "shards"),
        corpus="csv",
        shard_rows=4,
        executor="local",
        progress=False,
    )
    return data.Source(str(root / "shards"), name="mixed")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def test_one_epoch_of_duration_batches_sees_every_clip_once(cluster, mixed):
    pipe = data.build_train_dataset(
        [mixed], crop="none", max_seconds=MAX_SECONDS, seed=5, batch_rows=4
    )
    data.set_epoch(pipe.clock, 1)
    batches = list(
        data.iter_train_batches(
            {"train": pipe.dataset},
            shares=None,
            batch_size=4,
            shuffle_buffer=12,
            shuffle_seed=1,
            batch_seconds=BATCH_SECONDS,
        )
    )
    expected = data.prepare_rows(all_rows(mixed), pipe.recipe, 1)
    want = {u: w for u, w in zip(expected["utt_id"], expected["wave"])}
    seen = [u for b in batches for u in b["utt_id"]]
    assert sorted(seen) == sorted(want) and len(seen) == 30  # every clip exactly once
    assert max(len(w) for w in want.values()) == int(MAX_SECONDS * 16000)  # some were cut
    for b in batches:
        B, Tmax = b["wave"].shape
        assert b["wave"].dtype == torch.float32 and b["lengths"].dtype == torch.int64
        assert B * Tmax <= BATCH_SECONDS * 16000
        for row, utt, n in zip(b["wave"], b["utt_id"], b["lengths"].tolist()):
            assert np.array_equal(row[:n].numpy(), want[utt]) and not row[n:].any()
    assert padding_fraction(b["lengths"].tolist() for b in batches) < 0.25
    assert data.bad_row_counts(pipe.clock) == {}
