"""The final model is averaged, scored and calibrated in a Ray task with one training worker's
resources, never on the driver (issue 16): the driver, forbidden here from building, averaging or
scoring a model, still gets the final metrics, logs them and registers the model; a refused model
reaches it as the same RunFailed and is never logged.

The resources are a unit test; the two Ray tests share one in-process Ray instance."""

import json
from pathlib import Path

import pytest
import torch

from spoofdet.config import load_train_config
from spoofdet.training.final import final_resources
from spoofdet.training.steps import RunFailed

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "ray_jobs" / "configs" / "demo.yaml"
ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "OMP_NUM_THREADS": "1"}


def recipe(*overrides):
    return load_train_config(DEMO, list(overrides), check_paths=False)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], {"num_cpus": 0.5, "num_gpus": 0}),  # demo: 0.5 CPU, no GPU
        (["scaling.use_gpu=false", "scaling.gpus_per_worker=2"], {"num_cpus": 0.5, "num_gpus": 0}),
        (
            ["scaling.use_gpu=true", "scaling.gpus_per_worker=1", "scaling.cpus_per_worker=8"],
            {"num_cpus": 8.0, "num_gpus": 1.0},
        ),
    ],
)
def test_the_final_task_asks_for_one_training_workers_resources(overrides, expected):
    assert final_resources(recipe(*overrides)) == expected


# ----------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    pytest.importorskip("ray")
    from spoofdet.testing.synthetic import write_shards

    return write_shards("asvspoof2019-la", tmp_path_factory.mktemp("final_remote"))


@pytest.fixture(scope="module")
def ray_here():
    """One in-process Ray instance (2 CPUs) for this module; its workers get ``ENV``."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("deepspeed")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture
def driver_cannot_score(monkeypatch):
    """In this process (the driver) every way to build, average or score a model raises; the
    calls are recorded, since MLflow turns an error while validating an example into a warning."""
    import spoofdet.models
    import spoofdet.models.cached
    import spoofdet.serve.registry
    from spoofdet.training import final

    calls = []

    def forbidden(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"the driver called {name}")

        return call

    for module, name in [
        (spoofdet.models, "build_model"),
        (final, "build_model"),
        (spoofdet.models.cached, "waveform_detector"),
        (final, "waveform_detector"),
        (final, "average_state_dicts"),
        (final, "calibrate_on_dev"),
        (spoofdet.serve.registry, "build_detector"),
    ]:
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))
    return calls


def overrides(shards, **extra):
    base = {
        "data.train.0.shards": shards["train"],
        "data.dev.shards": shards["dev"],
        "data.num_samples": 16000,
        "data.rawboost.algo": 0,
        "train.batch_size": 4,
        "train.dev_batch_size": 8,
        "data.shuffle_buffer": 8,
        "train.epochs": 2,
        "train.average_best": 2,
        "train.max_final_dev_eer": "null",  # a tiny model after 2 epochs may be at chance
        "mlflow.system_metrics": "false",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.mark.integration
def test_a_driver_that_cannot_score_still_gets_the_final_model(
    shards, tmp_path, ray_here, driver_cannot_score, monkeypatch, capsys
):
    """2 workers train; the final average is scored and calibrated in the Ray task: summary.json,
    the run's final_dev_* metrics and the registered version all come back."""
    from mlflow.tracking import MlflowClient

    from ray_jobs import train

    storage = tmp_path / "runs"
    argv = ["--config", str(DEMO), "--storage", str(storage), *overrides(shards)]
    assert train.main(argv) == 0, capsys.readouterr().err[-3000:]
    assert driver_cannot_score == []
    out = storage / "demo" / "final"
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["averaged_epochs"]) == [0, 1] and summary["scored_on"] == "cpu"
    assert summary["final_dev_n"] == 16 and summary["final_dev_bad_rows"] == 0
    assert 0.0 <= summary["final_dev_eer"] <= 100.0
    assert summary["registered"] == {"name": "spoofdet-demo", "version": 1}
    assert (out / "model.pt").is_file() and (out / "model_config.json").is_file()
    if "calibration" in summary:
        assert Path(summary["calibration"]) == out / "calibration.json"
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final_dev_eer"] == pytest.approx(summary["final_dev_eer"])
    assert run.data.metrics["final_dev_n"] == 16
    assert run.data.tags["final.averaged_epochs"] == ",".join(map(str, summary["averaged_epochs"]))
    # the registered version states the averaged model's dev numbers, not an epoch's
    version = client.get_model_version("spoofdet-demo", "1")
    assert f"final dev EER {summary['final_dev_eer']:.2f} %" in version.description
    assert "the average of epochs" in version.description
    model = client.get_logged_model(summary["model_uri"].split("/")[-1])
    linked = {m.key: m.value for m in model.metrics or []}
    assert linked["final_dev_eer"] == pytest.approx(summary["final_dev_eer"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """One reported checkpoint of the demo model (seeded), made before the driver is forbidden."""
    import ray.train

    from spoofdet.models import build_model
    from spoofdet.training.steps import model_kwargs

    folder = tmp_path_factory.mktemp("reported") / "checkpoint_000000"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(build_model(**model_kwargs(recipe())).state_dict(), folder / "model.pt")
    return ray.train.Checkpoint.from_directory(folder)


@pytest.mark.integration
def test_a_model_refused_in_the_task_reaches_the_driver_as_run_failed(
    shards, checkpoint, tmp_path, ray_here, driver_cannot_score
):
    """The check in the task refuses the average (a limit no model passes): the driver raises the
    same RunFailed (reason and message), after logging the final metrics; nothing is logged as a
    model, registered or summarised. One reported checkpoint stands in for training."""
    from mlflow.tracking import MlflowClient

    from spoofdet.training.final import finish_remote

    cfg = recipe(f"data.dev.shards={shards['dev']}", "data.num_samples=16000")
    cfg.train.max_final_dev_eer = 0.0  # below any EER: what "no better than chance" triggers
    result = type("Result", (), {})()
    result.best_checkpoints = [(checkpoint, {"dev_loss": 0.5, "epoch": 0})]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("spoofdet-demo", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(exp).info.run_id
    with pytest.raises(RunFailed) as info:
        finish_remote(result, cfg, run_id=run_id, uri=uri, storage=str(tmp_path))
    assert type(info.value) is RunFailed and info.value.reason == "chance_eer"
    assert driver_cannot_score == []
    metrics = client.get_run(run_id).data.metrics
    assert metrics["final_dev_n"] == 16 and metrics["final_dev_bad_rows"] == 0
    assert str(info.value).startswith(
        f"run demo: the final model's dev EER is {metrics['final_dev_eer']:.2f}% over 16 clips, "
        "not below train.max_final_dev_eer=0.0"
    )
    assert client.search_logged_models(experiment_ids=[exp]) == []
    assert client.search_registered_models() == []
    assert (tmp_path / "demo" / "final" / "model.pt").is_file()  # the task averaged it
    assert not (tmp_path / "demo" / "final" / "summary.json").exists()
