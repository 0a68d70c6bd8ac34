"""A model family over seeds selected on several dev sets (issue 19, AMSDF's M1-M3 recipe):
``train --seeds A B`` trains one run per seed, ``<name>-seed<S>``, each registered as a version of
the same model tagged with the family and its seed; ``data.dev`` a list scores every dev set each
epoch and selects on the mean. The unit-level contracts (config checks, the means) are in
tests/training/test_multi_dev.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "ray_jobs" / "configs" / "demo.yaml"

pytestmark = pytest.mark.integration


def _tone_noise_shards(root, per_class):
    """A shard folder of noise (bona fide) / tone (spoof) clips (spoofdet.testing)."""
    from spoofdet.data import shard_writer
    from spoofdet.data.corpora import prepare_csv
    from spoofdet.testing import write_tone_noise_corpus

    corpus = write_tone_noise_corpus(root / "corpus", per_class=per_class, long_every=0)
    out = root / "shards"
    shard_writer.run(
        prepare_csv(corpus["manifest"]).table,
        str(out),
        corpus="csv",
        shard_rows=4,
        executor="local",
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """16 clips."""
    return _tone_noise_shards(tmp_path_factory.mktemp("family"), 8)


@pytest.fixture(scope="module")
def few_shards(tmp_path_factory):
    """8 clips: AMSDF's views of a 64,600-sample clip cost about a second each on a CPU."""
    return _tone_noise_shards(tmp_path_factory.mktemp("amsdf"), 4)


def test_seeds_train_a_registered_family_selected_on_two_dev_sets(
    shards, tmp_path, monkeypatch, capfd
):
    ray = pytest.importorskip("ray")
    pytest.importorskip("deepspeed")
    from mlflow.tracking import MlflowClient

    from ray_jobs import train

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    storage = tmp_path / "runs"
    overrides = {
        "name": "fam",
        "data.train.0.shards": shards,
        "data.dev": f"[{{shards: {shards}, name: devA}}, {{shards: {shards}, name: devB}}]",
        "data.num_samples": 8000,
        "data.rawboost.algo": 0,
        "data.shuffle_buffer": 8,
        "train.epochs": 1,
        "train.average_best": 1,
        "train.patience": 1,
        "train.max_final_dev_eer": "null",  # about the family, not about learning
        "scaling.num_workers": 1,
        "mlflow.register_as": "fam-model",
        "mlflow.system_metrics": "false",
    }
    argv = ["--config", str(RECIPE), "--storage", str(storage), "--seeds", "11", "12", "--json"]
    argv += [f"{k}={v}" for k, v in overrides.items()]
    try:
        assert train.main(argv) == 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
    out = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert out["family"] == "fam" and [m["seed"] for m in out["members"]] == [11, 12]
    assert {"best", "mean", "std"} <= set(out["over_seeds"]["final_dev_eer"])

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'fam-model'")
    assert sorted(v.tags["spoofdet.family_seed"] for v in versions) == ["11", "12"]
    assert {v.tags["spoofdet.family"] for v in versions} == {"fam"}
    exp = client.get_experiment_by_name("spoofdet-demo").experiment_id
    for seed in (11, 12):
        (run,) = client.search_runs([exp], filter_string=f"tags.mlflow.runName = 'fam-seed{seed}'")
        assert run.data.params["seed"] == str(seed)
        m = run.data.metrics
        # two dev sets scored each epoch; the selection metric is their mean
        assert m["dev.devA.n"] == m["dev.devB.n"] == 16
        assert m["dev_eer"] == pytest.approx((m["dev.devA.eer"] + m["dev.devB.eer"]) / 2)
        assert m["dev_loss"] == pytest.approx((m["dev.devA.loss"] + m["dev.devB.loss"]) / 2)
        # the final (averaged) model too: each set, and their mean as the run's final dev EER
        final = (m["final_dev.devA.eer"] + m["final_dev.devB.eer"]) / 2
        assert m["final_dev_eer"] == pytest.approx(final) and m["final_dev_n"] == 32


def test_the_amsdf_recipe_trains_with_a_tiny_front_end(few_shards, tmp_path, monkeypatch):
    """The shipped AMSDF recipe, as it stands (three dev sets, selection on their mean EER, the
    ACRNN trained too), with only the front-end made tiny, the GPU taken away and the run cut to
    one epoch: it trains, registers, and the registered model scores a 64,600-sample clip."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("deepspeed")
    import torch

    from ray_jobs import train
    from spoofdet.serve.registry import load_detector

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    storage = tmp_path / "runs"
    devs = ", ".join(f"{{shards: {few_shards}, name: {n}}}" for n in ("la19", "for", "favc"))
    overrides = {
        "data.train.0.shards": few_shards,
        "data.dev": f"[{devs}]",
        "data.shuffle_buffer": 8,
        "model.frontend": "tiny",
        "model.head_kwargs.emotion_weights": "null",  # the seed's ACRNN file is not here
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.dev_batch_size": 8,
        "train.max_final_dev_eer": "null",
        "scaling.use_gpu": "false",
        "scaling.cpus_per_worker": 0.5,
        "mlflow.register_as": "amsdf-tiny",
        "mlflow.system_metrics": "false",
    }
    recipe = ROOT / "ray_jobs" / "configs" / "amsdf_19la.yaml"
    argv = ["--config", str(recipe), "--storage", str(storage)]
    argv += [f"{k}={v}" for k, v in overrides.items()]
    try:
        assert train.main(argv) == 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
    det = load_detector("models:/amsdf-tiny/1", tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    with torch.no_grad():
        score = det.model.score(0.1 * torch.randn(2, 64_600))
    assert score.shape == (2,) and torch.isfinite(score).all()
