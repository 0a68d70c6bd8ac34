"""Training on whole clips batched by total duration (issue 16): the shipped recipe
ray_jobs/configs/demo_duration.yaml (data.crop none, data.max_seconds, data.batch_seconds) trains
2 workers over clips of mixed lengths; every clip is trained on once per epoch and the zero
padding of the batches stays under 25 %. The pipeline-level proof that each clip comes exactly
once is tests/data/test_duration_batches_ray.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "ray_jobs" / "configs" / "demo_duration.yaml"
N_CLIPS = 24

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A shard folder of 24 noise/tone clips of 0.2-2.5 s (a third longer than max_seconds)."""
    from spoofdet.data import shard_writer
    from spoofdet.data.corpora import prepare_csv

    root = tmp_path_factory.mktemp("duration")
    rng = np.random.default_rng(7)
    audio = root / "audio"
    audio.mkdir()
    lines = ["path,label"]
    for i in range(N_CLIPS):
        n = int(16000 * rng.uniform(0.2, 2.5))
        t = np.arange(n) / 16000
        bona = i % 3 == 0
        x = 0.3 * np.sin(2 * np.pi * 220 * t) if bona else 0.3 * rng.standard_normal(n)
        sf.write(audio / f"c{i:03d}.wav", x.clip(-1, 1).astype(np.float32), 16000)
        lines.append(f"c{i:03d}.wav,{'bonafide' if bona else 'spoof'}")
    (audio / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = root / "shards"
    shard_writer.run(
        prepare_csv(audio).table,
        str(out),
        corpus="csv",
        shard_rows=4,
        executor="local",
        progress=False,
    )
    return out


def test_duration_batches_train_every_clip_once_per_epoch_with_little_padding(
    mixed, tmp_path, monkeypatch
):
    ray = pytest.importorskip("ray")
    pytest.importorskip("deepspeed")
    from mlflow.tracking import MlflowClient

    from ray_jobs import train

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    storage = tmp_path / "runs"
    overrides = {
        "data.train.0.shards": mixed,
        "data.dev.shards": mixed,
        "data.num_samples": 16000,
        "data.max_seconds": 1.5,
        "data.batch_seconds": 6.0,
        "data.rawboost.algo": 0,
        "data.shuffle_buffer": 12,
        "train.epochs": 2,
        "train.average_best": 2,
        "train.max_final_dev_eer": "null",  # a tiny model after 2 epochs may be at chance
        "mlflow.system_metrics": "false",
    }
    argv = ["--config", str(RECIPE), "--storage", str(storage)]
    argv += [f"{k}={v}" for k, v in overrides.items()]
    try:
        assert train.main(argv) == 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("spoofdet-demo").experiment_id],
        filter_string="tags.mlflow.runName = 'demo_duration'",
    )
    rows = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_rows")}
    padding = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_padding")}
    assert rows == {0: N_CLIPS, 1: N_CLIPS}  # nothing dropped, nothing twice (2 workers)
    assert set(padding) == {0, 1} and all(0.0 < p < 0.25 for p in padding.values()), padding
    assert run.data.params["data.batch_seconds"] == "6.0"
