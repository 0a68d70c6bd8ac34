"""What a person sees of a training run: one ``epoch N/M`` line per epoch and a final block, none
of Ray's per-report lines; and the run's lineage in MLflow (dataset inputs, recipe, commit)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spoofdet.testing.synthetic import write_shards
from spoofdet.tracking import shard_dataset

pytestmark = pytest.mark.integration
pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")
pytest.importorskip("deepspeed")

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "ray_jobs" / "configs" / "demo.yaml"


def test_a_run_prints_one_line_per_epoch_and_logs_its_lineage(tmp_path):
    folders = write_shards("asvspoof2019-la", tmp_path)
    storage, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'elsewhere.db'}"
    overrides = {
        "data.train.0.shards": folders["train"],
        "data.dev.shards": folders["dev"],
        "data.num_samples": 16000,
        "train.batch_size": 4,
        "train.dev_batch_size": 8,
        "data.shuffle_buffer": 8,
        "train.epochs": 2,
        "train.average_best": 1,
        "train.max_final_dev_eer": "null",  # a tiny model at chance
    }
    cmd = [sys.executable, "-m", "ray_jobs.train", "--config", str(DEMO), "--storage", str(storage)]
    cmd += ["--tracking-uri", db, *[f"{k}={v}" for k, v in overrides.items()]]
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    out = done.stdout + done.stderr
    epochs = [ln for ln in done.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in epochs] == ["1/2", "2/2"]
    for line in epochs:
        assert re.search(r"train loss \d+\.\d{4}  dev loss \d+\.\d{4}  EER \d+\.\d\d%", line)
        assert "minDCF" in line and "clips/s" in line and "left ~" in line and "checkpoint" in line
    assert "done: final model = average of epochs" in done.stdout
    assert "registered  models:/spoofdet-demo/1" in done.stdout
    assert "Reporting training result" not in out and "Checkpoint successfully created" not in out
    assert len(out.splitlines()) < 150, out

    client = mlflow.tracking.MlflowClient(tracking_uri=db)  # --tracking-uri was obeyed
    (run,) = client.search_runs([client.get_experiment_by_name("spoofdet-demo").experiment_id])
    inputs = {
        (i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}["mlflow.data.context"])
        for i in run.inputs.dataset_inputs
    }
    assert inputs == {
        ("asvspoof2019-la-train", shard_dataset(str(folders["train"]), "")["digest"], "training"),
        ("asvspoof2019-la-dev", shard_dataset(str(folders["dev"]), "")["digest"], "validation"),
    }
    profile = json.loads(run.inputs.dataset_inputs[0].dataset.profile)
    assert profile["rows"] == 16
    assert [a.path for a in client.list_artifacts(run.info.run_id, "recipe")] == [
        "recipe/demo.yaml"
    ]
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if head:  # run from a git checkout
        assert run.data.tags["mlflow.source.git.commit"] == head
        assert run.data.tags["spoofdet.git.dirty"] in ("true", "false")
