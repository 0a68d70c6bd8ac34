"""A worker killed mid-run: the 2-worker DeepSpeed run resumes from its last checkpoint, in one MLflow run.

The clean 2-worker run (params, per-epoch metrics, ZeRO parts per rank, registration) is checked by
tests/test_demo.py; resubmitting a stopped job with the same name by tests/test_submit.py."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spoofdet.testing.synthetic import write_shards

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("deepspeed")
psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "ray_jobs" / "configs" / "demo.yaml"
ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards("asvspoof2019-la", tmp_path_factory.mktemp("train"))


def overrides(shards, **extra):
    base = {
        "data.train.0.shards": shards["train"],
        "data.dev.shards": shards["dev"],
        "data.num_samples": 16000,
        "train.batch_size": 4,
        "train.dev_batch_size": 8,
        "data.shuffle_buffer": 8,
        "train.log_every": 1,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def mlflow_runs(storage):
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spoofdet-demo")
    return client, client.search_runs([exp.experiment_id])


def test_a_killed_worker_resumes_from_the_last_checkpoint(shards, tmp_path):
    storage = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "ray_jobs.train",
        "--config",
        str(DEMO),
        "--storage",
        str(storage),
        "--json",
        *overrides(
            shards,
            **{
                "train.epochs": 3,
                "train.average_best": 2,
                "run.max_failures": 2,
                # about resuming: a tiny 3-epoch model may be at chance (its check: test_train_outcomes)
                "train.max_final_dev_eer": "null",
            },
        ),
    ]
    env = {**os.environ, **ENV}
    killed = []

    def killer():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            if any(p.is_dir() for p in (storage / "demo").glob("checkpoint_*")):
                time.sleep(1.0)  # into the next epoch
                for proc in psutil.process_iter(["cmdline"]):
                    if any("RayTrainWorker" in part for part in (proc.info["cmdline"] or [])):
                        proc.kill()
                        killed.append(proc.pid)
                        return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    thread.join(timeout=5)
    assert killed, "no Ray Train worker process was found to kill"
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = mlflow_runs(storage)
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    assert [m.step for m in client.get_metric_history(run_id, "dev_eer")] == [0, 1, 2]
    started = [
        int(m.value)
        for m in sorted(
            client.get_metric_history(run_id, "epoch_started"), key=lambda m: m.timestamp
        )
    ]
    assert started[0] == 0 and started.count(0) == 1  # the checkpointed epoch 0 is never redone
    assert len(started) > 3  # the killed epoch was started twice
    assert (
        json.loads((storage / "demo" / "final" / "summary.json").read_text())["mlflow_run_id"]
        == run_id
    )
    # --json: stdout is the summary alone, one line, though a worker died loudly on the way
    (line,) = done.stdout.splitlines()
    assert json.loads(line)["mlflow_run_id"] == run_id and json.loads(line)["registered"]


def test_training_starts_from_a_published_seed_checkpoint(shards, tmp_path):
    """model.init_from: an AASIST-L checkpoint in clovaai's layout (random tensors) is converted and
    loaded before the first step; with a vanishing learning rate the trained weights stay the file's."""
    import torch

    from spoofdet.models.checkpoints import convert_seed_state_dict
    from spoofdet.testing import random_state_dict, read_layout

    seed_sd = random_state_dict(
        read_layout(ROOT / "tests" / "assets" / "seed_layouts" / "aasist_l.tsv"), seed=5
    )
    ckpt = tmp_path / "AASIST-L.pth"
    torch.save(seed_sd, ckpt)
    storage = tmp_path / "runs"
    recipe = ROOT / "ray_jobs" / "configs" / "aasist_l_19la.yaml"
    cmd = [
        sys.executable,
        "-m",
        "ray_jobs.train",
        "--config",
        str(recipe),
        "--storage",
        str(storage),
        *overrides(
            shards,
            **{
                "train.epochs": 1,
                "train.average_best": 1,
                "scaling.use_gpu": "false",
                "scaling.cpus_per_worker": 0.5,
                "optim.lr": 1e-12,
                "optim.min_lr": 0,  # the recipe's cosine ends at 5e-6, above this lr
                "train.select": "dev_loss",
                "model.init_from": ckpt,
                # the weights stay the file's random ones: no model of chance EER to refuse here
                "train.max_final_dev_eer": "null",
            },
        ),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(storage / "aasist_l_19la" / "final" / "model.pt", weights_only=True)
    head, _ = convert_seed_state_dict(seed_sd, seed="aasist_l")
    params = [
        k for k in head if "running_" not in k and "num_batches" not in k
    ]  # BN statistics do train
    assert len(params) > 100
    for k in params:
        torch.testing.assert_close(final[f"head.{k}"], head[k], rtol=0, atol=1e-6)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spoofdet-asvspoof")
    run = client.search_runs([exp.experiment_id])[0]
    assert run.data.params["model.init_from"] == str(ckpt)
