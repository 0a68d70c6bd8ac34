"""Nothing silently wrong in training: a run that learned nothing ends non-zero, registers nothing
and leaves its MLflow run FAILED with the reason; a non-finite step is skipped and counted; a
checkpoint file never runs code; ``--json`` prints one line.

Unit tests first (the checks with pinned values, the step's skip, DeepSpeed checkpoint loading in
one process, no Ray), then the Ray runs (``integration``): a NaN loss (fault injection, as a
subprocess with ``--json``), an epoch without a step and an error escaping ``main`` (in-process,
sharing one Ray instance)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spoofdet.config import load_train_config
from spoofdet.errors import SpoofdetError
from spoofdet.training.final import check_final
from spoofdet.training.steps import (
    FAULT_NONFINITE_LOSS,
    RunFailed,
    check_bad_rows,
    check_training,
    epoch_totals,
    make_step,
    restore_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "ray_jobs" / "configs" / "demo.yaml"
ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "OMP_NUM_THREADS": "1"}


def recipe(*overrides):
    return load_train_config(DEMO, list(overrides), check_paths=False)


# ----------------------------------------------------------------------------- the checks


def test_an_epoch_without_a_step_fails_the_run():
    cfg = recipe("train.batch_size=64", "data.shuffle_buffer=64")
    state = {}
    parts = [dict.fromkeys(("steps", "rows", "nonfinite", "skipped", "loss_sum", "finite"), 0)] * 2
    totals = epoch_totals(parts, state)
    assert math.isnan(totals["train_loss_epoch"])  # not 0.0: no step, no loss
    with pytest.raises(RunFailed) as info:
        check_training(cfg, state, totals, epoch=0)
    assert info.value.reason == "no_steps"
    assert str(info.value) == (
        "run demo trained no step in epoch 0: no worker got a full batch of train.batch_size=64 "
        "rows (a last partial batch is dropped). Lower train.batch_size or scaling.num_workers, "
        "or train on more rows."
    )


def counts(steps, nonfinite, skipped=0, loss_sum=1.0):
    finite = steps - nonfinite
    counted = dict(steps=steps, rows=4 * steps, nonfinite=nonfinite, skipped=skipped)
    return dict(counted, loss_sum=loss_sum, finite=finite)


def test_non_finite_steps_over_the_share_fail_the_run():
    cfg = recipe("train.max_nonfinite_share=0.05")
    state = {}
    totals = epoch_totals([counts(50, 2, 2), counts(50, 3, 3)], state)  # 5 of 100: at the limit
    assert totals["nonfinite_steps"] == 3 and totals["skipped_steps"] == 3
    assert totals["rank_steps"] == 100 and totals["rows"] == 400
    check_training(cfg, state, totals, epoch=0)
    totals = epoch_totals([counts(50, 1, 1), counts(50, 1, 1)], state)  # 7 of 200 so far: fine
    check_training(cfg, state, totals, epoch=1)
    totals = epoch_totals([counts(10, 10, 10), counts(10, 10, 10)], state)  # 27 of 220: 12 %
    with pytest.raises(RunFailed) as info:
        check_training(cfg, state, totals, epoch=2)
    assert info.value.reason == "nonfinite"
    assert "27 of 220 training steps so far (12.3%" in str(info.value)
    assert "train.max_nonfinite_share=0.05" in str(info.value)


def test_too_many_undecodable_rows_fail_the_run_naming_them():
    cfg = recipe("data.max_bad_rows=0.001")
    rows = [
        {"utt_id": f"LA_T_{i}", "shard": "/s/part-00000.parquet", "reason": "decode_error"}
        for i in range(5)
    ]
    check_bad_rows(cfg, "train rows read in epoch 0", 1, 999, rows[:1], "data/x.json")  # 0.1 %
    with pytest.raises(RunFailed) as info:
        check_bad_rows(cfg, "train rows read in epoch 0", 2, 998, rows, "data/x.json")
    text = str(info.value)
    assert info.value.reason == "bad_rows"
    assert "2 of 1000 train rows read in epoch 0 (0.20%) could not be decoded" in text
    assert "LA_T_0 in /s/part-00000.parquet (decode_error); LA_T_1" in text and "LA_T_3" not in text
    assert "data/x.json" in text


@pytest.mark.parametrize(
    "eer, limit, fails",
    [(50.0, 50.0, True), (49.99, 50.0, False), (float("nan"), 50.0, True), (80.0, None, False)],
)
def test_a_final_model_no_better_than_chance_fails(eer, limit, fails):
    cfg = recipe()
    cfg.train.max_final_dev_eer = limit
    summary = {"averaged_epochs": [0], "final_dev_eer": eer, "final_dev_n": 40}
    weights = {"w": torch.ones(2), "n": torch.tensor(3)}
    if not fails:
        check_final(cfg, summary, weights, [])
        return
    with pytest.raises(RunFailed) as info:
        check_final(cfg, summary, weights, [])
    assert info.value.reason == "chance_eer"
    assert f"not below train.max_final_dev_eer={limit}" in str(info.value)


def test_non_finite_final_weights_fail():
    cfg = recipe()
    summary = {"averaged_epochs": [1, 2], "final_dev_eer": 10.0, "final_dev_n": 40}
    with pytest.raises(RunFailed) as info:
        check_final(cfg, summary, {"head.w": torch.tensor([1.0, float("nan")])}, [])
    assert info.value.reason == "nonfinite_weights" and "head.w" in str(info.value)


# ----------------------------------------------------------------------------- the step


def tiny(cfg):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return model, optimizer


@pytest.mark.parametrize("grad_clip", ["null", "1.0"])
def test_plain_step_skips_a_non_finite_update(monkeypatch, grad_clip):
    cfg = recipe("deepspeed.enabled=false", f"optim.grad_clip={grad_clip}")
    model, optimizer = tiny(cfg)
    class_w = torch.tensor([0.1, 0.9])
    wave, label = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    monkeypatch.setenv(FAULT_NONFINITE_LOSS, "1")
    loss, skipped = make_step(cfg, model, model, optimizer, class_w)(wave, label)
    assert math.isnan(loss.item()) and skipped
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    monkeypatch.delenv(FAULT_NONFINITE_LOSS)
    loss, skipped = make_step(cfg, model, model, optimizer, class_w)(wave, label)
    assert math.isfinite(loss.item()) and not skipped
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ----------------------------------------------------------------------------- DeepSpeed files


@pytest.fixture(scope="module")
def one_process_group(tmp_path_factory):
    """A one-rank gloo process group, as DeepSpeed needs, for this module only."""
    pytest.importorskip("deepspeed")
    import torch.distributed as dist

    store = tmp_path_factory.mktemp("pg") / "store"
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()


def ds_engine(cfg):
    from spoofdet.training.steps import deepspeed_engine

    model, optimizer = tiny(cfg)
    engine, ds_optimizer = deepspeed_engine(cfg, model, optimizer, torch.device("cpu"))
    return engine, model, ds_optimizer


@pytest.mark.parametrize("zero", [0, 1, 2])
def test_deepspeed_step_skips_and_resumes_weights_only(one_process_group, tmp_path, zero):
    """A NaN loss is a skipped step that leaves the weights finite (ZeRO 0 fp32: our check;
    ZeRO 1/2: DeepSpeed's); a checkpoint saved at this ZeRO stage loads back with
    ``weights_only=True`` and only the allowlisted DeepSpeed classes."""
    cfg = recipe(f"deepspeed.zero_stage={zero}", "train.batch_size=4", "optim.grad_clip=1.0")
    engine, model, optimizer = ds_engine(cfg)
    class_w = torch.tensor([0.1, 0.9])
    wave, label = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    os.environ[FAULT_NONFINITE_LOSS] = "1"
    try:
        loss, skipped = make_step(cfg, engine, model, optimizer, class_w)(wave, label)
    finally:
        del os.environ[FAULT_NONFINITE_LOSS]
    assert math.isnan(loss.item()) and skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
    loss, skipped = make_step(cfg, engine, model, optimizer, class_w)(wave, label)
    assert not skipped
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    engine.save_checkpoint(str(tmp_path), tag="ds")
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 3}))
    fresh, fresh_model, fresh_opt = ds_engine(cfg)
    assert restore_checkpoint(tmp_path, cfg, fresh, fresh_model, fresh_opt, "cpu") == {"epoch": 3}
    for key, value in fresh_model.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: what a tampered checkpoint could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_planted_deepspeed_file_is_refused_and_never_runs(one_process_group, tmp_path):
    cfg = recipe("deepspeed.zero_stage=1", "train.batch_size=4")
    engine, model, optimizer = ds_engine(cfg)
    folder = tmp_path / "checkpoint_000001"
    engine.save_checkpoint(str(folder), tag="ds")
    (folder / "state.json").write_text(json.dumps({"epoch": 1}))
    planted = folder / "ds" / "mp_rank_00_model_states.pt"
    marker = tmp_path / "payload-ran"
    torch.save({"module": model.state_dict(), "x": Payload(marker)}, planted)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(planted))
    assert unsafe == [f"{os.mkdir.__module__}.mkdir"]  # the payload is there, and would run
    with pytest.raises(SpoofdetError) as info:
        restore_checkpoint(folder, cfg, engine, model, optimizer, "cpu")
    assert not marker.exists()
    assert str(planted) in str(info.value) and f"{os.mkdir.__module__}.mkdir" in str(info.value)
    assert "refused to load" in str(info.value)


def test_a_planted_plain_checkpoint_is_refused_and_never_runs(tmp_path):
    cfg = recipe("deepspeed.enabled=false")
    model, optimizer = tiny(cfg)
    marker = tmp_path / "payload-ran"
    (tmp_path / "state.json").write_text("{}")
    torch.save({"w": Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(SpoofdetError, match=r"model\.pt: refused to load"):
        restore_checkpoint(tmp_path, cfg, model, model, optimizer, "cpu")
    assert not marker.exists()


# ----------------------------------------------------------------------------- Ray runs


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Synthetic ASVspoof 2019 LA train/dev shards, and ``train_bad``: the train shards with a
    quarter of the rows' audio replaced by bytes no decoder reads."""
    pytest.importorskip("ray")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spoofdet.data import shards as layout
    from spoofdet.testing.synthetic import write_shards

    root = tmp_path_factory.mktemp("outcomes")
    out = write_shards("asvspoof2019-la", root)
    bad = root / "shards" / "train_bad"
    import shutil

    shutil.copytree(out["train"], bad)
    spoiled = []
    for part in sorted((bad / "shards").glob("*.parquet")):
        t = pq.read_table(part)
        audio = t.column("audio").to_pylist()
        for i in range(0, len(audio), 4):
            audio[i] = b"RIFF but not audio"
            spoiled.append(t.column("utt_id")[i].as_py())
        t = t.set_column(t.column_names.index("audio"), "audio", pa.array(audio, pa.binary()))
        pq.write_table(t, part, row_group_size=64)
    if (bad / layout.FILES_FILE).is_file():  # the file list names sizes and checksums
        names = [e["name"] for e in json.loads((bad / layout.FILES_FILE).read_text())["files"]]
        layout.write_file_list(*layout.resolve_out(str(bad)), names)
    out["train_bad"], out["spoiled"] = bad, spoiled
    return out


def overrides(shards, **extra):
    base = {
        "data.train.0.shards": shards["train"],
        "data.dev.shards": shards["dev"],
        "data.num_samples": 16000,
        "data.rawboost.algo": 0,
        "train.batch_size": 4,
        "train.dev_batch_size": 8,
        "data.shuffle_buffer": 8,
        "train.log_every": 1,
        "train.epochs": 2,
        "train.average_best": 1,
        "mlflow.system_metrics": "false",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def the_run(storage):
    """(client, the one training run, registered model names) of the SQLite store in ``storage``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spoofdet-demo")
    (run,) = client.search_runs([exp.experiment_id])
    registered = [m.name for m in client.search_registered_models()]
    logged = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert registered == [] and logged == [], (registered, logged)  # nothing registered or logged
    return client, run


@pytest.mark.integration
def test_a_nan_loss_run_fails_registers_nothing_and_prints_one_json_line(shards, tmp_path):
    """Every loss NaN (fault injection): DeepSpeed (ZeRO 1) skips every step, the run stops after
    epoch 0 with exit 1, FAILED, tagged; ``--json`` stdout is exactly one line."""
    storage = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ray_jobs.train", "--config", str(DEMO)]
    cmd += ["--storage", str(storage), "--json", *overrides(shards)]
    env = {**os.environ, **ENV, FAULT_NONFINITE_LOSS: "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout[-3000:]
    summary = json.loads(lines[0])
    assert summary["failure"] == "nonfinite" and summary["name"] == "demo"
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("train: error: ")]
    assert len(errors) == 1 and "train.max_nonfinite_share=0.05" in errors[0], errors
    assert "(100.0%, counted on every worker)" in errors[0]
    client, run = the_run(storage)
    assert run.info.run_id == summary["mlflow_run_id"]
    assert run.info.status == "FAILED" and run.data.tags["spoofdet.failure"] == "nonfinite"
    steps = client.get_metric_history(run.info.run_id, "steps")
    skipped = client.get_metric_history(run.info.run_id, "skipped_steps")
    nonfinite = client.get_metric_history(run.info.run_id, "nonfinite_steps")
    assert [m.step for m in skipped] == [0] and skipped[0].value == steps[0].value > 0
    assert nonfinite[0].value == steps[0].value
    assert not (storage / "demo" / "final" / "summary.json").exists()
    assert not list((storage / "demo").glob("checkpoint_*"))  # a failed epoch is not kept


@pytest.fixture(scope="module")
def ray_here():
    """One in-process Ray instance for the in-process runs of this module."""
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.mark.integration
def test_an_epoch_without_a_step_fails_and_registers_nothing(shards, tmp_path, ray_here, capsys):
    """A batch larger than each worker's rows (the last partial batch is dropped): no step."""
    from ray_jobs import train

    storage = tmp_path / "runs"
    argv = ["--config", str(DEMO), "--storage", str(storage)]
    argv += overrides(shards, **{"train.batch_size": 64, "data.shuffle_buffer": 64})
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("train: error: ")]
    assert errors == [
        "train: error: run demo trained no step in epoch 0: no worker got a full batch of "
        "train.batch_size=64 rows (a last partial batch is dropped). Lower train.batch_size or "
        "scaling.num_workers, or train on more rows."
    ]
    client, run = the_run(storage)
    assert run.info.status == "FAILED" and run.data.tags["spoofdet.failure"] == "no_steps"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "steps")] == [0]


@pytest.mark.integration
def test_undecodable_rows_past_the_share_fail_the_run_naming_them(shards, tmp_path, ray_here):
    """A quarter of the train rows cannot be decoded: counted (metric ``bad_rows``), listed (the
    epoch's artifact), and the run fails naming some."""
    from ray_jobs import train

    storage = tmp_path / "runs"
    argv = ["--config", str(DEMO), "--storage", str(storage)]
    argv += overrides(shards, **{"data.train.0.shards": shards["train_bad"]})
    assert train.main(argv) == 1
    client, run = the_run(storage)
    assert run.info.status == "FAILED" and run.data.tags["spoofdet.failure"] == "bad_rows"
    message = run.data.tags["spoofdet.failure_message"]
    assert "train rows read in epoch 0" in message and "data.max_bad_rows=0.001" in message
    assert any(utt in message for utt in shards["spoiled"]) and "decode_error" in message
    (bad,) = client.get_metric_history(run.info.run_id, "bad_rows")
    assert bad.value == len(shards["spoiled"])
    listed = client.download_artifacts(run.info.run_id, "data/bad_rows_epoch0.json", str(tmp_path))
    rows = json.loads(Path(listed).read_text())["train"]["rows"]
    assert sorted(r["utt_id"] for r in rows) == sorted(shards["spoiled"])
    assert {r["reason"] for r in rows} == {"decode_error"}


@pytest.mark.integration
def test_an_error_escaping_main_leaves_the_run_failed(shards, tmp_path, ray_here, monkeypatch):
    from ray_jobs import train

    def lost(*args, **kwargs):
        raise RuntimeError("worker group lost")

    monkeypatch.setattr(train, "train_and_finish", lost)
    storage = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="worker group lost"):
        train.main(["--config", str(DEMO), "--storage", str(storage), *overrides(shards)])
    _, run = the_run(storage)
    assert run.info.status == "FAILED" and run.data.tags["spoofdet.failure"] == "exception"
    assert run.data.tags["spoofdet.failure_message"] == "RuntimeError: worker group lost"


def test_a_final_model_failing_its_check_is_never_logged_or_registered(shards, tmp_path):
    """The driver's last step (no Ray needed): the averaged model is scored on dev, its metrics
    logged, and then refused (the limit here is one no model passes): no MLflow model, no
    registered version, no summary.json."""
    import ray.train
    from mlflow.tracking import MlflowClient

    from spoofdet.models import build_model
    from spoofdet.training.final import finish
    from spoofdet.training.steps import model_kwargs

    cfg = recipe(f"data.dev.shards={shards['dev']}", "data.num_samples=16000")
    cfg.train.max_final_dev_eer = 0.0  # below any EER: what "no better than chance" triggers
    ckpt = tmp_path / "checkpoint_000000"
    ckpt.mkdir()
    torch.manual_seed(0)
    torch.save(build_model(**model_kwargs(cfg)).state_dict(), ckpt / "model.pt")
    result = type("Result", (), {})()
    reported = {"dev_loss": 0.5, "epoch": 0}
    result.best_checkpoints = [(ray.train.Checkpoint.from_directory(ckpt), reported)]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("spoofdet-demo", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(exp).info.run_id
    with pytest.raises(RunFailed) as info:
        finish(result, cfg, run_id=run_id, uri=uri, storage=str(tmp_path))
    assert info.value.reason == "chance_eer"
    metrics = client.get_run(run_id).data.metrics
    assert "final_dev_eer" in metrics and metrics["final_dev_bad_rows"] == 0
    assert f"dev EER is {metrics['final_dev_eer']:.2f}%" in str(info.value)
    assert client.search_logged_models(experiment_ids=[exp]) == []
    assert client.search_registered_models() == []
    assert not (tmp_path / "demo" / "final" / "summary.json").exists()
