"""Train a spoofing detector: Ray Train + DeepSpeed over spoofdet shards, every run tracked in MLflow.

Submit to a cluster (shards and storage on paths every node can read, e.g. NFS or s3://)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m ray_jobs.train --config ray_jobs/configs/xlsr_aasist_19la.yaml \\
        scaling.num_workers=8 scaling.use_gpu=true deepspeed.precision=bf16

Run on this machine (Ray starts in-process), or through the CLI::

    python -m ray_jobs.train --config ray_jobs/configs/demo.yaml
    spoofdet train --config ray_jobs/configs/demo.yaml train.epochs=2

What happens, top to bottom:
1. The recipe is loaded, overridden (``key=value``) and validated in full before Ray is touched.
2. The driver builds the streaming training pipeline (``spoofdet.data.pipeline``), attaches the MLflow run
   (one per run name and storage path, re-used on resubmission) and logs the resolved config.
3. ``TorchTrainer`` runs :func:`train_loop_per_worker` on every worker: ``build_model`` ->
   ``deepspeed.initialize`` (torch Adam as client optimizer; ZeRO 0-2; bf16 on GPU, fp32 on CPU)
   -> epochs of weighted cross-entropy -> dev scoring split across all ranks, gathered, dev loss /
   EER / minDCF computed once -> every rank saves its part of the checkpoint and reports it.
   Early stopping on the selection metric; a restarted worker resumes from the last checkpoint.
4. A Ray task with one training worker's resources (its GPU on a GPU cluster) averages the best K
   checkpoints' weights (BatchNorm statistics included), scores the dev set with the average and
   fits the calibration; the driver only logs the final model and registers it
   (``spoofdet.training.final.finish_remote``): nothing heavy runs on the head node.

A run that learned nothing (no step, too many non-finite steps or undecodable rows, a final model
no better than chance: ``spoofdet.training``) ends non-zero, registers nothing and leaves its
MLflow run FAILED with the tag ``spoofdet.failure``, as any error does. ``--json``: stdout holds
one line, the JSON summary.

Console: one ``epoch N/M`` line per epoch (rank 0 puts each finished epoch on a queue pinned to
the driver's node, a driver thread prints it) and a final block; Ray's own logs and Ray Data's
progress bars only with ``--verbose``. Lineage: every shard folder is a dataset input of the MLflow
run (digest: its files.json fingerprint), the recipe an artifact, the git commit a tag.

Storage: ``--storage``, else ``$SPOOFDET_STORAGE``, else ``run.storage_path``, else ``./runs/train``.
Tracking: ``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``<storage>/mlflow.db``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from mlflow.tracking import MlflowClient
from ray.train import (
    CheckpointConfig,
    DataConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from spoofdet.config import (
    ConfigError,
    TrainJobConfig,
    dev_name,
    dev_sources,
    flatten,
    load_train_config,
    sources,
    to_dict,
)
from spoofdet.data import pipeline as data
from spoofdet.data.rawboost import rawboost_params
from spoofdet.data.shards import is_readable
from spoofdet.serve.registry import set_version_tags
from spoofdet.tracking import (
    attach_run,
    bounded_http,
    git_tags,
    log_datasets,
    log_params,
    shard_dataset,
    tracking_uri,
)
from spoofdet.training.dev import dev_set, score_dev
from spoofdet.training.final import clear_failure, failure_summary, finish_remote, mark_failed
from spoofdet.training.steps import (
    RunFailed,
    derived_params,
    early_stop,
    epoch_outcome,
    log_epoch,
    make_step,
    restore_checkpoint,
    setup_model_and_optimizer,
    train_epoch,
)

SELECT_MODE = {"dev_loss": "min", "dev_eer": "min"}


def storage_root(arg: str | None, cfg: TrainJobConfig) -> str:
    root = arg or os.environ.get("SPOOFDET_STORAGE") or cfg.run.storage_path or "runs/train"
    return root if "://" in root else str(Path(root).expanduser().resolve())


def unreadable_sources(cfg: TrainJobConfig) -> list[str]:
    """The recipe's local shard folders that are no longer complete here (a lost mount, a deleted folder)."""
    return [
        f"{where}.shards={src.shards}"
        for where, src in sources(cfg.data)  # data.train[i], data.dev or data.dev[i]
        if "://" not in src.shards and not is_readable(src.shards)
    ]


# ----------------------------------------------------------------------------- the worker


def load_checkpoint(
    cfg: TrainJobConfig, net: Any, model: Any, optimizer: Any, device: Any, run_id: str
) -> dict[str, Any]:
    """The run state to go on from: Ray Train's last checkpoint (restored into net/model/optimizer)
    with its epoch advanced, else a fresh state."""
    state = dict(epoch=0, step=0, history=[], best=None, bad_epochs=0, mlflow_run_id=run_id)
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return state
    with checkpoint.as_directory() as d:  # weights only: no checkpoint file can run code
        state = restore_checkpoint(d, cfg, net, model, optimizer, device)
    state["epoch"] += 1
    return state


def save_checkpoint(
    cfg: TrainJobConfig, net: Any, model: Any, optimizer: Any, state: dict, metrics: dict, rank: int
) -> None:
    """Report the epoch's metrics with a checkpoint: rank 0 writes the fp32 weights (``model.pt``,
    what the driver averages), the optimizer (without DeepSpeed) and ``state.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.deepspeed.enabled:
            net.save_checkpoint(tmp, tag="ds")  # every rank writes its part (ZeRO optimizer shards)
        if rank == 0:
            weights = {
                k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                for k, v in model.state_dict().items()
            }
            torch.save(weights, Path(tmp) / "model.pt")
            if not cfg.deepspeed.enabled:
                torch.save(optimizer.state_dict(), Path(tmp) / "optimizer.pt")
            (Path(tmp) / "state.json").write_text(json.dumps(state, indent=1))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def start_epoch(clock: Any, epoch: int, step: int, *, rank: int, world: int) -> None:
    """Rank 0 moves the pipeline's epoch clock and logs the start; the other ranks wait for it."""
    if rank == 0:
        data.set_epoch(clock, epoch)
        mlflow.log_metric("epoch_started", epoch, step=step)
    if world > 1 and dist.is_initialized():
        dist.barrier()  # every rank starts reading only once the clock shows this epoch


def quiet_worker(cfg: TrainJobConfig, verbose: bool) -> None:
    """Unless ``verbose``: silence, in this worker process, the messages a user cannot act on
    (MLflow's system-metrics INFO lines, DeepSpeed's accelerator notice and INFO logs, torch's
    deprecation of a collective DeepSpeed calls). Warnings and errors of our own still show."""
    if verbose:
        return
    if not cfg.scaling.use_gpu:  # DeepSpeed then says it picked the CPU without being told
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    # Ray Train's per-report INFO lines ("Reporting training result ...", "Checkpoint successfully
    # created ...", per report and rank) come from module loggers named by file path, children
    # of the root logger Ray Train sets to INFO in workers: raise those two loggers' level
    import importlib

    for module in ("execution.context", "execution.storage"):
        with contextlib.suppress(ImportError, AttributeError):  # moved in another Ray version
            mod = importlib.import_module(f"ray.train.v2._internal.{module}")
            mod.logger.setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore", message=".*all_gather_into_tensor.* is deprecated", category=FutureWarning
    )


def tell_progress(queue: Any, message: dict[str, Any]) -> None:
    """Rank 0: hand an epoch's line data to the driver; a lost queue costs the line, not the run."""
    try:
        queue.put(message, timeout=30)
    except Exception as exc:  # noqa: BLE001 - the console line is not worth failing training
        print(f"train: epoch {message['epoch']} not shown on the console: {exc}", file=sys.stderr)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Per worker: set up, resume, then per epoch train, score dev, log, checkpoint and report
    (rank 0 also puts the epoch's line data on the driver's progress queue); a failed epoch (see
    the module docstring) is logged, told to the driver, and ends the loop."""
    cfg: TrainJobConfig = config["cfg"]
    quiet_worker(cfg, config.get("verbose", False))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    net, model, optimizer = setup_model_and_optimizer(cfg, device)
    class_w = torch.tensor(cfg.optim.class_weights, dtype=torch.float32, device=device)
    step = make_step(cfg, net, model, optimizer, class_w)
    state = load_checkpoint(cfg, net, model, optimizer, device, config["run_id"])
    if rank == 0:
        mlflow.set_tracking_uri(config["tracking_uri"])
        mlflow.start_run(
            run_id=state["mlflow_run_id"], log_system_metrics=cfg.mlflow.system_metrics
        )
    dev = dev_set(cfg)
    shards = {name: ray.train.get_dataset_shard(name) for name in config["datasets"]}
    for epoch in range(state["epoch"], cfg.train.epochs):
        started = time.perf_counter()
        start_epoch(config["clock"], epoch, state["step"], rank=rank, world=world)
        net.train()
        batches = data.iter_train_batches(
            shards,
            shares=config["shares"],
            batch_size=cfg.train.batch_size,
            batch_seconds=cfg.data.batch_seconds,
            shuffle_buffer=cfg.data.shuffle_buffer,
            shuffle_seed=cfg.seed + 1000 * epoch + rank,
        )
        counts = train_epoch(
            cfg, step, optimizer, batches, state, rank=rank, world=world, device=device
        )
        metrics, bad, failed = epoch_outcome(
            cfg, config["clock"], counts, state, epoch, rank=rank, world=world
        )
        stop = False
        if dev is not None and failed is None:
            failed = score_dev(
                cfg, net, dev, class_w, metrics, bad, rank=rank, world=world, device=device
            )
            stop = early_stop(state, metrics[cfg.train.select], cfg.train.patience)
        state["epoch"] = epoch
        state["history"].append(dict(metrics))
        if rank == 0:
            log_epoch(metrics, bad, epoch)
        if failed is not None:  # no checkpoint of a failed epoch: a resubmission redoes it
            if rank == 0:
                config["outcome"].put({"reason": failed.reason, "message": str(failed)})
            break
        save_checkpoint(cfg, net, model, optimizer, state, metrics, rank)
        if rank == 0 and config.get("progress") is not None:
            seconds = time.perf_counter() - started
            line = {"epoch": epoch, "metrics": dict(metrics), "seconds": seconds, "stop": stop}
            tell_progress(config["progress"], line | {"clips": counts.get("rows", 0) * world})
        if stop:
            break
    if rank == 0:
        mlflow.end_run()


# ----------------------------------------------------------------------------- the driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="ray_jobs.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", required=True, help="recipe YAML (ray_jobs/configs/*.yaml)")
    ap.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-5 scaling.num_workers=2"
    )
    ap.add_argument(
        "--storage",
        help="run storage root (default $SPOOFDET_STORAGE, run.storage_path, ./runs/train)",
    )
    ap.add_argument(
        "--validate", action="store_true", help="only load and validate the config, print it, exit"
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print the final summary as JSON: stdout holds that line only (the rest on stderr)",
    )
    ap.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (sets mlflow.tracking_uri; default $MLFLOW_TRACKING_URI, "
        "else <storage>/mlflow.db)",
    )
    ap.add_argument(
        "--verbose",
        action="store_true",
        help="also show Ray's own logs (each report, checkpoint paths) and Ray Data's progress "
        "bars; by default the console shows one line per epoch and a final block",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="train a model family, one run per seed (AMSDF's M1-M3: --seeds 1234 42 7), one "
        "after another as runs <name>-seed<S>, each registered as a version of "
        "mlflow.register_as tagged spoofdet.family / spoofdet.family_seed; ends with a table "
        "of their final dev metrics (best, mean +- std). Overrides the recipe's `seeds:`",
    )
    return ap.parse_args(argv)


def quiet_driver(verbose: bool) -> None:
    """Unless ``verbose``, silence at their source what a person watching a run cannot act on:
    Ray Data's progress bars and execution-start logs (the DataContext travels with the
    datasets), MLflow's INFO logs (database set-up, model validation), its artifact-download
    progress bars and its pyfunc warnings about our own model class (type hints, input
    example). Ray Train's own logs are set to WARNING in :func:`make_trainer`; workers quiet
    themselves (:func:`quiet_worker`)."""
    if verbose:
        return
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # MLflow colours these messages, hence the leading ".*"
    for message in (
        "Add type hints to the `predict` method",
        "An input example was not provided when logging the model",
    ):
        warnings.filterwarnings("ignore", message=f".*{message}", category=UserWarning)


def clock(seconds: float) -> str:
    """``H:MM:SS`` of a duration."""
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def epoch_line(cfg: TrainJobConfig, msg: dict[str, Any], seen: dict[int, dict], t0: float) -> str:
    """The console line of one epoch (``seen``: the epochs shown so far, this one included, by
    epoch; ``t0``: when training started): losses, dev EER/minDCF, clips/s, elapsed, estimated
    time left (mean epoch time x epochs to go) and whether Ray keeps its checkpoint."""
    m, n = msg["metrics"], cfg.train.epochs
    parts = [f"epoch {msg['epoch'] + 1}/{n}", f"train loss {m['train_loss_epoch']:.4f}"]
    if "dev_eer" in m:
        n_sets = len(dev_sources(cfg.data))
        parts += [
            f"dev loss {m['dev_loss']:.4f}",
            f"EER {m['dev_eer']:.2f}%",
            f"minDCF {m['dev_min_dcf']:.4f}",
        ] + ([f"(means of {n_sets} dev sets)"] if n_sets > 1 else [])
    parts.append(f"{msg['clips'] / max(msg['seconds'], 1e-9):.1f} clips/s")
    mean = sum(e["seconds"] for e in seen.values()) / len(seen)
    left = 0.0 if msg["stop"] else mean * (n - 1 - msg["epoch"])
    parts += [f"elapsed {clock(time.monotonic() - t0)}", f"left ~{clock(left)}"]
    key, k = cfg.train.select, cfg.run.checkpoints_to_keep
    if "dev_eer" in m and key in m:
        better = sum(1 for e in seen.values() if e["metrics"][key] < m[key])
        parts.append(
            f"checkpoint kept (best {key})"
            if better == 0
            else f"checkpoint kept (top {k} by {key})"
            if better < k
            else f"checkpoint not kept (not in the top {k} by {key})"
        )
    else:
        parts.append("checkpoint kept (latest)")
    if msg["stop"]:
        parts.append(f"stopping early: no better {key} in {cfg.train.patience} epochs")
    return "  ".join(parts)


@contextlib.contextmanager
def epoch_lines(cfg: TrainJobConfig, progress: Any) -> Iterator[None]:
    """While the block runs, a thread prints one :func:`epoch_line` per message rank 0 puts on
    ``progress`` (to ``sys.stdout``: stderr under ``--json``); a redone epoch after a worker
    restart prints again. Whatever is left when the block ends is printed then."""
    stop, seen, t0 = threading.Event(), {}, time.monotonic()

    def show(msg: dict[str, Any]) -> None:
        seen[msg["epoch"]] = msg
        print(epoch_line(cfg, msg, seen, t0), flush=True)

    def reader() -> None:
        from ray.util.queue import Empty

        while not stop.is_set():
            try:
                show(progress.get(timeout=0.5))
            except Empty:
                pass
            except Exception:  # noqa: BLE001 - the queue's actor is gone: no more lines
                stop.wait(0.5)

    thread = threading.Thread(target=reader, name="epoch-lines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            while not progress.empty():
                show(progress.get_nowait())


def start_ray(verbose: bool = False) -> bool:
    """Start Ray in-process unless it is up (True: started here); its workers get our RAY_TRAIN_*
    and SPOOFDET_* vars. Ray's own INFO lines (the local instance started) only with ``verbose``."""
    if ray.is_initialized():
        return False
    # under `ray job submit` the job's runtime_env already reaches every worker,
    # and Ray refuses to set its env keys a second time
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    env = {k: v for k, v in os.environ.items() if k.startswith(("RAY_TRAIN_", "SPOOFDET_"))}
    level = logging.INFO if verbose else logging.WARNING
    ray.init(runtime_env=None if in_job else {"env_vars": env}, logging_level=level)
    return True


def build_pipeline(cfg: TrainJobConfig) -> Any:
    """The streaming training pipeline of the recipe's ``data`` section."""
    d = cfg.data
    return data.build_train_dataset(
        [data.Source(s.shards, name=s.name, weight=s.weight) for s in d.train],
        num_samples=d.num_samples,
        crop=d.crop,
        max_seconds=d.max_seconds,
        rawboost_algo=d.rawboost.algo,
        rawboost_p=d.rawboost.p,
        rawboost=d.rawboost.params,
        seed=cfg.seed,
        mix=d.mix,
        class_balance=d.class_balance,
        epoch_size=d.epoch_size,
        batch_rows=d.batch_rows,
        proportional_batches=d.proportional_batches,
    )


def run_params(cfg: TrainJobConfig, storage: str) -> dict[str, Any]:
    """The run's MLflow params: the resolved config, RawBoost's resolved parameters, derived values."""
    params = flatten(to_dict(cfg))
    resolved = to_dict(rawboost_params(**cfg.data.rawboost.params))
    params.update({f"data.rawboost.resolved.{k}": v for k, v in resolved.items()})
    params.update(derived_params(cfg))  # workers, accumulation, global batch, lr, schedule
    params["derived.storage"] = storage
    return params


def track_run(cfg: TrainJobConfig, config: str, pipeline: Any, *, storage: str, uri: str) -> str:
    """Attach the run's MLflow run (re-used on resubmission), log its params and epoch-0 mix."""
    tags = {"spoofdet.config": str(config)}
    run_id = attach_run(
        uri=uri, experiment=cfg.mlflow.experiment, storage=storage, name=cfg.name, tags=tags
    )
    client = MlflowClient(tracking_uri=uri)
    changed = log_params(client, run_id, run_params(cfg, storage))
    if changed:
        print(
            f"run {cfg.name} resumes with changed settings (tagged changed.*): "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()),
            file=sys.stderr,
        )
    mix = pipeline.mix(0)
    client.log_dict(run_id, mix, "data/mix_epoch0.json")
    log_lineage(client, run_id, cfg, config)
    drawn = ", ".join(
        f"{k} {sum(v['drawn'].values())} ({100 * v['share']:.1f}%)"
        for k, v in mix["sources"].items()
    )
    print(f"run {cfg.name}: MLflow run {run_id} at {uri}; epoch-0 mix {drawn}", file=sys.stderr)
    return run_id


def log_lineage(client: Any, run_id: str, cfg: TrainJobConfig, config: str) -> None:
    """What the run was made from: every training source and the dev set as dataset inputs
    (``spoofdet.tracking.shard_dataset``: digest = the folder's files.json fingerprint), the
    recipe YAML as the artifact ``recipe/<file>``, the git commit and dirty flag of the code as
    tags (none outside a git checkout). A resubmission adds no second copy of an input."""
    sets = [
        (shard_dataset(s.shards, s.name or Path(s.shards).name), "training") for s in cfg.data.train
    ]
    sets += [(shard_dataset(d.shards, dev_name(d)), "validation") for d in dev_sources(cfg.data)]
    log_datasets(client, run_id, sets)
    client.log_artifact(run_id, str(config), "recipe")
    for key, value in git_tags(Path(__file__).resolve().parent).items():
        client.set_tag(run_id, key, value)


def make_trainer(
    cfg: TrainJobConfig,
    pipeline: Any,
    outcome: Any,
    progress: Any = None,
    *,
    run_id: str,
    uri: str,
    storage: str,
    verbose: bool = False,
) -> TorchTrainer:
    """The ``TorchTrainer`` of the run; Ray Train's own logs at INFO only with ``verbose``."""
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    dev = cfg.data.dev
    loop_config = {
        "cfg": cfg,
        "clock": pipeline.clock,
        "outcome": outcome,  # {"reason", "message"} of a failed epoch
        "progress": progress,  # each finished epoch's line data, for the driver's console
        "verbose": verbose,
        "run_id": run_id,
        "tracking_uri": uri,
        "datasets": list(pipeline.datasets),
        "shares": pipeline.shares,
    }
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.run.checkpoints_to_keep,
                checkpoint_score_attribute=cfg.train.select if dev else "epoch",
                checkpoint_score_order=SELECT_MODE[cfg.train.select] if dev else "max",
            ),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
        ),
        datasets=pipeline.datasets,
        dataset_config=DataConfig(datasets_to_split=list(pipeline.datasets)),
    )


def fit(trainer: TorchTrainer, cfg: TrainJobConfig, *, storage: str, run_id: str, **_: Any) -> Any:
    """``trainer.fit()``; :class:`RunFailed` (after Ray's account) when the run stopped on
    unreadable shards."""
    try:
        return trainer.fit()
    except Exception:
        gone = unreadable_sources(cfg)
        if not gone:
            raise
        traceback.print_exc()  # Ray's account first; the diagnosis last, where a reader looks
        raise RunFailed(
            "shards_unreadable",
            f"run {cfg.name} stopped because its shards are no longer readable: "
            f"{'; '.join(gone)} (an unmounted or deleted folder?). No model was logged or "
            "registered. Make the shards readable on every node again and resubmit the same "
            f"command: the run resumes from its last checkpoint in {storage}/{cfg.name}, in "
            f"MLflow run {run_id}.",
        ) from None


def train_and_finish(
    cfg: TrainJobConfig, pipeline: Any, *, verbose: bool = False, **where: str
) -> dict[str, Any]:
    """Train (Ray Train), then average, check, log and register the final model: its summary.
    Raises :class:`RunFailed` when an epoch failed or the final model must not be logged."""
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # rank 0 puts a failed epoch here; pinned to the driver's node like the epoch clock, so that
    # losing a worker node (which Ray Train survives) cannot take the queue along
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    outcome = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    # rank 0 puts each finished epoch here, pinned alike; the driver prints it while fit() runs
    progress = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    trainer = make_trainer(cfg, pipeline, outcome, progress, verbose=verbose, **where)
    with epoch_lines(cfg, progress):
        result = fit(trainer, cfg, **where)
    if not outcome.empty():
        failed = outcome.get_nowait()
        raise RunFailed(failed["reason"], failed["message"])
    return finish_remote(result, cfg, **where)


@contextlib.contextmanager
def json_stdout(enabled: bool) -> Iterator[Callable[[str], None]]:
    """With ``enabled``, fd 1 and ``sys.stdout`` point at stderr for the whole run (Ray's worker
    output too); the yielded ``emit(line)`` writes to the real stdout (else it is ``print``)."""
    if not enabled:
        yield print
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)

    def emit(line: str) -> None:
        sys.stderr.flush()
        with os.fdopen(os.dup(saved), "w") as out:  # a file object writes it all, however long
            out.write(line + "\n")

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield emit
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def print_summary(s: dict[str, Any], *, run_id: str, uri: str) -> None:
    """The final block: averaged epochs, final dev metrics, where the model, run and version are."""
    epochs = ", ".join(str(e + 1) for e in s["averaged_epochs"])
    print(f"done: final model = average of epochs {epochs}")
    if "final_dev_eer" in s:
        eer, dcf, n = s["final_dev_eer"], s["final_dev_min_dcf"], s["final_dev_n"]
        print(f"  final dev   EER {eer:.2f}%  minDCF {dcf:.4f}  ({n} clips)")
    print(f"  model file  {s['final_model']}")
    print(f"  MLflow run  {run_id} at {uri}")
    print(f"  model       {s['model_uri']}")
    reg = s.get("registered")
    print(f"  registered  models:/{reg['name']}/{reg['version']}" if reg else "  registered  no")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        uri = [f"mlflow.tracking_uri={args.tracking_uri}"] if args.tracking_uri else []
        cfg = load_train_config(args.config, [*args.overrides, *uri])
        members = family(cfg, args, [*args.overrides, *uri])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.validate:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    with json_stdout(args.json) as emit:
        if not members:
            code, payload = run(cfg, args)
            show(payload, args, emit)
            return code
        return run_family(cfg, members, args, emit)


def family(cfg: TrainJobConfig, args: argparse.Namespace, overrides: list[str]) -> list:
    """The members of a model family (``--seeds`` or the recipe's ``seeds``), each validated
    before anything starts: ``(seed, config of run <name>-seed<S>)``; empty for one run."""
    seeds = args.seeds or cfg.seeds
    extra = [f"seeds={list(args.seeds)}"] if args.seeds else []
    if extra:  # the flag's seeds are checked like the recipe's
        load_train_config(args.config, [*overrides, *extra])
    return [
        (
            s,
            load_train_config(
                args.config, [*overrides, f"seed={s}", f"name={cfg.name}-seed{s}", "seeds=[]"]
            ),
        )
        for s in seeds
    ]


def run_family(
    cfg: TrainJobConfig, members: list, args: argparse.Namespace, emit: Callable[[str], None]
) -> int:
    """Train the members one after another; each registered version is tagged with the family
    (``spoofdet.family`` = the recipe's name) and its seed. Stops at the first failed member: a
    rerun with the remaining ``--seeds`` goes on (the finished members stay registered)."""
    done: list[dict[str, Any]] = []
    for i, (seed, member) in enumerate(members):
        print(f"family {cfg.name}: member {i + 1}/{len(members)}, seed {seed}", file=sys.stderr)
        code, payload = run(member, args)
        if code != 0:
            left = [str(s) for s, _ in members[i:]]
            print(
                f"train: family {cfg.name} stopped at seed {seed}; the members before it are "
                f"registered. Go on with --seeds {' '.join(left)}",
                file=sys.stderr,
            )
            show(family_summary(cfg, done, failed=payload), args, emit)
            return code
        reg = payload.get("registered")
        if reg:
            tags = {"spoofdet.family": cfg.name, "spoofdet.family_seed": seed}
            set_version_tags(reg["name"], reg["version"], tags, payload["tracking_uri"])
        done.append({"seed": seed, **payload})
    show(family_summary(cfg, done), args, emit)
    return 0


def family_summary(
    cfg: TrainJobConfig, done: list[dict[str, Any]], failed: dict | None = None
) -> dict[str, Any]:
    """The family's members and their final dev metrics over seeds (best, mean, std)."""
    over: dict[str, Any] = {}
    for key in ("final_dev_eer", "final_dev_min_dcf", "final_dev_act_dcf", "final_dev_cllr"):
        values = [m[key] for m in done if m.get(key) is not None]
        if values:
            over[key] = {
                "best": float(min(values)),
                "mean": float(np.mean(values)),
                "std": float(np.std(values)),
            }
    return {"family": cfg.name, "members": done, "over_seeds": over, "failed": failed}


def show(payload: dict[str, Any], args: argparse.Namespace, emit: Callable[[str], None]) -> None:
    """A run's or a family's outcome: one JSON line with ``--json``, else the final block."""
    if args.json:
        emit(json.dumps(payload))
    elif "family" in payload:
        print_family(payload)
    elif "failure" not in payload:
        print_summary(payload, run_id=payload["run_id"], uri=payload["tracking_uri"])


def print_family(f: dict[str, Any]) -> None:
    """The family table: one row per seed, then best and mean +- std of the final dev metrics."""
    print(f"family {f['family']}: {len(f['members'])} member(s)")
    print(f"  {'seed':>10}  {'dev EER %':>9}  {'minDCF':>7}  registered")
    for m in f["members"]:
        reg = m.get("registered")
        where = f"models:/{reg['name']}/{reg['version']}" if reg else "no"
        eer, dcf = m.get("final_dev_eer"), m.get("final_dev_min_dcf")
        cells = [f"{v:>9.3f}" if v is not None else f"{'n/a':>9}" for v in (eer,)] + [
            f"{dcf:>7.4f}" if dcf is not None else f"{'n/a':>7}"
        ]
        print(f"  {m['seed']:>10}  {cells[0]}  {cells[1]}  {where}")
    for name, key in (("dev EER %", "final_dev_eer"), ("minDCF", "final_dev_min_dcf")):
        o = f["over_seeds"].get(key)
        if o:
            print(f"  {name:<10} best {o['best']:.4f}   mean {o['mean']:.4f} +- {o['std']:.4f}")


def run(cfg: TrainJobConfig, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """The run after validation; whatever ends it early leaves its MLflow run FAILED. Returns the
    exit code and the summary (``run_id`` and ``tracking_uri`` added) or the failure summary."""
    storage = storage_root(args.storage, cfg)
    uri = tracking_uri(cfg.mlflow.tracking_uri, storage)
    bounded_http()  # tracking calls time out instead of hanging (a user's MLFLOW_HTTP_* wins)
    quiet_driver(args.verbose)
    started = start_ray(args.verbose)
    try:
        pipeline = build_pipeline(cfg)
        run_id = track_run(cfg, args.config, pipeline, storage=storage, uri=uri)
        try:
            summary = train_and_finish(
                cfg, pipeline, verbose=args.verbose, run_id=run_id, uri=uri, storage=storage
            )
        except RunFailed as failed:
            mark_failed(uri, run_id, failed.reason, str(failed))
            print(f"train: error: {failed}", file=sys.stderr)
            return 1, failure_summary(cfg, failed, run_id=run_id, uri=uri)
        except BaseException as exc:
            mark_failed(uri, run_id, "exception", f"{type(exc).__name__}: {exc}")
            raise
        clear_failure(uri, run_id)
    finally:
        if started:  # while stdout still points at stderr: late worker lines land there
            ray.shutdown()
    return 0, {**summary, "run_id": run_id, "tracking_uri": uri}


if __name__ == "__main__":
    raise SystemExit(main())
