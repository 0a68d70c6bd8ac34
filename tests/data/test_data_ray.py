"""The training input pipeline on a local Ray cluster: epochs, mixing, eval pipelines, the batch contract."""

import numpy as np
import pytest

from spoofdet.data import pipeline as data
from tests.data.test_data import T, all_rows, sources  # noqa: F401 - the shared shard fixture

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def epoch_examples(pipeline, epoch, batch_size=5):
    data.set_epoch(pipeline.clock, epoch)
    seen = []
    for batch in pipeline.dataset.iter_torch_batches(
        batch_size=batch_size,
        collate_fn=data.BatchCollate(),
        local_shuffle_buffer_size=8,
        local_shuffle_seed=epoch,
    ):
        assert batch["wave"].dtype == torch.float32 and batch["wave"].shape[1] == T
        assert batch["label"].dtype == torch.int64 and batch["wave"].shape[0] == len(
            batch["utt_id"]
        )
        for i, utt in enumerate(batch["utt_id"]):
            seen.append((utt, int(batch["label"][i]), batch["wave"][i].numpy().tobytes()))
    return sorted(seen)


def expected_examples(pipeline, epoch):
    out = []
    for s in pipeline.sources:
        rows = data.prepare_rows(all_rows(s), pipeline.recipe, epoch)
        out += [
            (u, int(lab), w.tobytes())
            for u, lab, w in zip(rows["utt_id"], rows["label"], rows["wave"])
        ]
    return sorted(out)


def test_epochs_are_reproducible_and_different(cluster, sources):
    pipe = data.build_train_dataset(
        sources,
        num_samples=T,
        crop="random",
        rawboost_algo=5,
        rawboost_p=0.5,
        seed=5,
        mix="weights",
        class_balance=True,
        epoch_size=40,
        batch_rows=4,
    )
    e1 = epoch_examples(pipe, 1)
    e0 = epoch_examples(pipe, 0)
    assert e0 == expected_examples(pipe, 0) and e1 == expected_examples(pipe, 1)
    assert e0 != e1
    assert epoch_examples(pipe, 0) == e0  # the same epoch again, in whatever block order
    mix = pipe.mix(0)
    assert mix["total"] == len(e0)
    assert {k: v["drawn"]["bonafide"] for k, v in mix["sources"].items()} == {
        "A": sum(1 for u, lab, _ in e0 if u.startswith("a") and lab == 1),
        "B": sum(1 for u, lab, _ in e0 if u.startswith("b") and lab == 1),
    }


def test_size_mix_reads_every_row_once(cluster, sources):
    pipe = data.build_train_dataset(sources, num_samples=T, seed=5)
    assert pipe.recipe.factors is None
    got = epoch_examples(pipe, 0, batch_size=7)
    assert sorted(u for u, _, _ in got) == sorted(
        str(u) for s in sources for u in all_rows(s)["utt_id"]
    )


def test_eval_pipeline_never_augments_and_crops_the_start(cluster, sources):
    ds = data.build_eval_dataset(sources[0], num_samples=T)
    batches = list(ds.iter_torch_batches(batch_size=4, collate_fn=data.BatchCollate()))
    rows = all_rows(sources[0], with_path=False)
    want = dict(zip(rows["utt_id"], data.prepare_rows(rows, data.Recipe(num_samples=T), 0)["wave"]))
    for b in batches:
        assert not b["augmented"].any()
        for u, w in zip(b["utt_id"], b["wave"]):
            assert np.array_equal(w.numpy(), want[u])
    full = data.build_eval_dataset(sources[0], num_samples=None)
    lengths = {
        b["utt_id"][0]: b["wave"].shape[1]
        for b in full.iter_torch_batches(batch_size=1, collate_fn=data.BatchCollate())
    }
    assert lengths == {u: int(n) for u, n in zip(rows["utt_id"], rows["num_samples"])}
