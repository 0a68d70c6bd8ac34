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
4. The driver averages the best K checkpoints' weights (BatchNorm statistics included), scores
   the dev set with the average, logs it as the run's final model and registers it.

Storage: ``--storage``, else ``$SPOOFDET_STORAGE``, else ``run.storage_path``, else ``./runs/train``.
Tracking: ``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``<storage>/mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from spoofdet.config import ConfigError, TrainJobConfig, flatten, load_train_config, to_dict
from spoofdet.data import pipeline as data
from spoofdet.data.features import read_info
from spoofdet.data.rawboost import rawboost_params
from spoofdet.evaluation.calibration import CalibrationError, fit_calibration
from spoofdet.evaluation.metrics import act_dcf, cllr, compute_eer, min_dcf
from spoofdet.models import build_model, score_from_logits
from spoofdet.models.cached import waveform_detector
from spoofdet.models.checkpoints import average_state_dicts, load_state_dict_strict
from spoofdet.optim import sam_step
from spoofdet.serve.init_from import init_state_dict
from spoofdet.tracking import attach_run, log_params, tracking_uri, using_tracking_uri

SELECT_MODE = {"dev_loss": "min", "dev_eer": "min"}
Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def storage_root(arg: str | None, cfg: TrainJobConfig) -> str:
    root = arg or os.environ.get("SPOOFDET_STORAGE") or cfg.run.storage_path or "runs/train"
    return root if "://" in root else str(Path(root).expanduser().resolve())


def effective_lr(cfg: TrainJobConfig) -> tuple[float, int]:
    """(learning rate after scaling, global batch size): linear/sqrt scaling by the number of workers."""
    world, global_batch = cfg.scaling.num_workers, cfg.scaling.num_workers * cfg.train.batch_size
    factor = {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[cfg.optim.lr_scaling]
    return cfg.optim.lr * factor, global_batch


def unreadable_sources(cfg: TrainJobConfig) -> list[str]:
    """The recipe's local shard folders that are no longer complete here (a lost mount, a deleted folder)."""
    sources = [(f"data.train[{i}]", s) for i, s in enumerate(cfg.data.train)]
    sources += [("data.dev", cfg.data.dev)] if cfg.data.dev else []
    return [
        f"{where}.shards={src.shards}"
        for where, src in sources
        if "://" not in src.shards
        and not (
            (Path(src.shards) / "metadata.parquet").is_file()
            and (Path(src.shards) / "shards").is_dir()
        )
    ]


def model_kwargs(cfg: TrainJobConfig) -> dict[str, Any]:
    m = cfg.model
    kw = {
        "frontend": m.frontend,
        "head": m.head,
        "frontend_layer": m.frontend_layer,
        "freeze": m.freeze,
        "gradient_checkpointing": m.gradient_checkpointing,
        "n_logits": m.n_logits,
        "head_kwargs": dict(m.head_kwargs),
    }
    if m.frontend_kwargs:
        kw["frontend_kwargs"] = dict(m.frontend_kwargs)
    if m.frontend == "cached":  # head only, over data_prep.features output
        # (an identity front-end of the features' dim)
        kw["frontend_kwargs"] = {"out_dim": int(read_info(cfg.data.train[0].shards)["dim"])}
    return kw


def dev_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """EER (%), minDCF, EER threshold and clip count of dev scores: the worker's and ``finish``'s."""
    eer, threshold = compute_eer(scores[labels == 1], scores[labels == 0])
    return {
        "eer": 100.0 * eer,
        "min_dcf": min_dcf(scores[labels == 1], scores[labels == 0])[0],
        "threshold": float(threshold),
        "n": int(len(scores)),
    }


# ----------------------------------------------------------------------------- the worker


def uses_bf16(cfg: TrainJobConfig) -> bool:
    return cfg.scaling.use_gpu and cfg.deepspeed.precision in ("auto", "bf16")


def weighted_loss(
    logits: torch.Tensor, label: torch.Tensor, class_w: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Class-weighted cross-entropy over two logits, or binary cross-entropy over one."""
    logits = logits.float()
    if logits.shape[1] == 2:
        return F.cross_entropy(logits, label, weight=class_w, reduction=reduction)
    w = class_w[label]
    per = w * F.binary_cross_entropy_with_logits(logits[:, 0], label.float(), reduction="none")
    return per.sum() / w.sum() if reduction == "mean" else per.sum()


def gather(obj: Any, world: int) -> list[Any]:
    """``obj`` of every rank, in rank order."""
    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def deepspeed_engine(cfg: TrainJobConfig, model: Any, optimizer: Any, device: Any) -> tuple:
    """``deepspeed.initialize`` around ``model`` and its client optimizer: (engine, optimizer)."""
    # Imported here, not at the top: an optional extra, seconds to import, and its import prints
    # an accelerator warning on stdout (it would spoil `--validate` and `--json` output).
    import deepspeed

    if device.type == "cpu":
        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory allreduce op on first use (~35 s,
        # and it needs a C++ compiler on every node); gloo's allreduce is what the CPU path needs.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    ds_config = {
        "train_micro_batch_size_per_gpu": cfg.train.batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": uses_bf16(cfg)},
        "fp16": {"enabled": cfg.deepspeed.precision == "fp16"},
        "gradient_clipping": cfg.optim.grad_clip or 0.0,
        "steps_per_print": 10**9,
    }
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_config, dist_init_required=False
    )
    return engine, optimizer


def setup_model_and_optimizer(cfg: TrainJobConfig, device: Any) -> tuple[Any, Any, Any]:
    """(net, model, optimizer): ``net`` runs the model (DeepSpeed engine or DDP-prepared module),
    ``model`` is the unwrapped module (same parameters), identical on every rank."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(**model_kwargs(cfg))
    if cfg.model.init_from:  # a published seed checkpoint (converted), spoofdet model, state dict
        state = init_state_dict(
            cfg.model.init_from,
            model,
            head=cfg.model.head,
            seed=cfg.model.init_seed,
            tracking_uri=cfg.mlflow.tracking_uri,
        )
        load_state_dict_strict(model, state)
    model = model.to(device)
    lr, _ = effective_lr(cfg)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        betas=tuple(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
    )
    if cfg.deepspeed.enabled:
        engine, optimizer = deepspeed_engine(cfg, model, optimizer, device)
        return engine, model, optimizer
    return ray.train.torch.prepare_model(model), model, optimizer


def make_step(cfg: TrainJobConfig, net: Any, model: Any, optimizer: Any, class_w: Any) -> Step:
    """The training step, chosen once: SAM, DeepSpeed or plain; ``step(wave, label)`` -> loss."""

    def loss_of(wave: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return weighted_loss(net(wave), label, class_w)

    if cfg.optim.sam_rho > 0:  # Codecfake's CSAM with data.proportional_batches: ascend, descend

        def step(wave: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            return sam_step(
                model,
                lambda: loss_of(wave, label),
                optimizer,
                rho=cfg.optim.sam_rho,
                grad_clip=cfg.optim.grad_clip,
            )

    elif cfg.deepspeed.enabled:
        bf16 = uses_bf16(cfg)

        def step(wave: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            loss = loss_of(wave.to(torch.bfloat16) if bf16 else wave, label)
            net.backward(loss)
            net.step()
            return loss

    else:

        def step(wave: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
            loss = loss_of(wave, label)
            optimizer.zero_grad()
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            return loss

    return step


def load_checkpoint(
    cfg: TrainJobConfig, net: Any, model: Any, optimizer: Any, device: Any, run_id: str
) -> dict[str, Any]:
    """The run state to go on from: Ray Train's last checkpoint (restored into net/model/optimizer)
    with its epoch advanced, else a fresh state."""
    state = {
        "epoch": 0,
        "step": 0,
        "history": [],
        "best": None,
        "bad_epochs": 0,
        "mlflow_run_id": run_id,
    }
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return state
    with checkpoint.as_directory() as d:
        state = json.loads((Path(d) / "state.json").read_text())
        if cfg.deepspeed.enabled:
            net.load_checkpoint(d, tag="ds", load_module_strict=True)
        else:
            model.load_state_dict(torch.load(Path(d) / "model.pt", map_location=device))
            optimizer.load_state_dict(torch.load(Path(d) / "optimizer.pt", map_location=device))
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


def dev_set(cfg: TrainJobConfig) -> tuple[data.Source, data.Recipe] | None:
    """The dev shards and how their clips are cut (RawBoost only with ``data.dev_rawboost``)."""
    source = data.Source(cfg.data.dev.shards, name=cfg.data.dev.name) if cfg.data.dev else None
    recipe = data.Recipe(
        num_samples=cfg.data.num_samples,
        seed=cfg.seed,
        rawboost_algo=cfg.data.rawboost.algo if cfg.data.dev_rawboost else 0,
        rawboost_p=cfg.data.rawboost.p,
    )
    return None if source is None else (source, recipe)


def evaluate_dev(
    cfg: TrainJobConfig,
    net: Any,
    dev: tuple[data.Source, data.Recipe],
    class_w: Any,
    *,
    rank: int,
    world: int,
    device: Any,
) -> dict[str, Any]:
    """Dev loss and metrics: each rank scores its part of ``dev`` (source, recipe); all ranks
    gather the parts and compute the same numbers."""
    source, recipe = dev
    bf16 = uses_bf16(cfg)
    net.eval()
    scores, labels, num, den = [], [], 0.0, 0.0
    with torch.no_grad():
        for batch in data.iter_eval_part(
            source,
            rank,
            world,
            batch_size=cfg.train.dev_batch_size,
            recipe=recipe,
            max_batches=cfg.train.max_dev_batches,
        ):
            wave, label = data.model_input(batch).to(device), batch["label"].to(device)
            logits = net(wave.to(torch.bfloat16) if bf16 else wave)
            num += float(weighted_loss(logits, label, class_w, reduction="sum"))
            den += float(class_w[label].sum())
            scores += score_from_logits(logits.float()).cpu().tolist()
            labels += label.cpu().tolist()
    net.train()
    parts = gather((scores, labels, num, den), world)
    s = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
    y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
    loss = sum(p[2] for p in parts) / max(sum(p[3] for p in parts), 1e-12)
    return {"dev_loss": loss, **{f"dev_{k}": v for k, v in dev_metrics(s, y).items()}}


def start_epoch(clock: Any, epoch: int, step: int, *, rank: int, world: int) -> None:
    """Rank 0 moves the pipeline's epoch clock and logs the start; the other ranks wait for it."""
    if rank == 0:
        data.set_epoch(clock, epoch)
        mlflow.log_metric("epoch_started", epoch, step=step)
    if world > 1 and dist.is_initialized():
        dist.barrier()  # every rank starts reading only once the clock shows this epoch


def train_epoch(
    cfg: TrainJobConfig,
    step: Step,
    optimizer: Any,
    batches: Iterable[dict[str, Any]],
    state: dict[str, Any],
    *,
    rank: int,
    world: int,
    device: Any,
) -> float:
    """One epoch of steps (counted in ``state``); rank 0 logs loss, lr and clips/s every
    ``train.log_every`` steps. Returns the epoch's mean loss."""
    t_window, n_window = time.perf_counter(), 0
    loss_sum, n_steps = 0.0, 0
    for i, batch in enumerate(batches):
        wave, label = data.model_input(batch).to(device), batch["label"].to(device)
        loss = step(wave, label)
        state["step"] += 1
        loss_sum += loss.item()
        n_steps += 1
        n_window += len(label)
        if rank == 0 and state["step"] % cfg.train.log_every == 0:
            elapsed = time.perf_counter() - t_window
            window = {
                "train_loss": loss.item(),
                "lr": optimizer.param_groups[0]["lr"],
                "clips_per_s": n_window * world / max(elapsed, 1e-9),
            }
            mlflow.log_metrics(window, step=state["step"])
            t_window, n_window = time.perf_counter(), 0
        if cfg.train.max_steps_per_epoch and i + 1 >= cfg.train.max_steps_per_epoch:
            break
    return loss_sum / max(n_steps, 1)


def early_stop(state: dict[str, Any], value: float, patience: int) -> bool:
    """Track the best selection value (lower is better); True after ``patience`` epochs without one."""
    if state["best"] is None or value < state["best"]:
        state["best"], state["bad_epochs"] = value, 0
    else:
        state["bad_epochs"] += 1
    return state["bad_epochs"] >= patience


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Per worker: set up, resume, then per epoch train, score dev, log, checkpoint and report."""
    cfg: TrainJobConfig = config["cfg"]
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
        start_epoch(config["clock"], epoch, state["step"], rank=rank, world=world)
        net.train()
        batches = data.iter_train_batches(
            shards,
            shares=config["shares"],
            batch_size=cfg.train.batch_size,
            shuffle_buffer=cfg.data.shuffle_buffer,
            shuffle_seed=cfg.seed + 1000 * epoch + rank,
        )
        loss = train_epoch(
            cfg, step, optimizer, batches, state, rank=rank, world=world, device=device
        )
        metrics = {"epoch": epoch, "train_loss_epoch": loss, "steps": state["step"]}
        stop = False
        if dev is not None:
            metrics.update(
                evaluate_dev(cfg, net, dev, class_w, rank=rank, world=world, device=device)
            )
            stop = early_stop(state, metrics[cfg.train.select], cfg.train.patience)
        state["epoch"] = epoch
        state["history"].append(dict(metrics))
        if rank == 0:
            mlflow.log_metrics(
                {k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch
            )
        save_checkpoint(cfg, net, model, optimizer, state, metrics, rank)
        if stop:
            break
    if rank == 0:
        mlflow.end_run()


# ----------------------------------------------------------------------------- the driver


def average_best(result: Any, cfg: TrainJobConfig, out: Path) -> tuple[list[int], dict]:
    """Average the best K reported checkpoints (by ``train.select``; the latest without a dev
    set) into ``out/model.pt``; returns their epochs and the averaged state dict."""
    ranked = [
        (c, m) for c, m in result.best_checkpoints if cfg.train.select in m or cfg.data.dev is None
    ]
    if cfg.data.dev is not None:
        ranked.sort(key=lambda cm: cm[1][cfg.train.select])
    else:
        ranked.sort(key=lambda cm: -cm[1]["epoch"])
    chosen = ranked[: cfg.train.average_best]
    if not chosen:
        raise RuntimeError("training reported no checkpoint; nothing to average")
    states = []
    for ckpt, _ in chosen:
        with ckpt.as_directory() as d:
            states.append(torch.load(Path(d) / "model.pt", map_location="cpu"))
    averaged = average_state_dicts(states)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, out / "model.pt")
    return [m["epoch"] for _, m in chosen], averaged


def calibrate_on_dev(cfg: TrainJobConfig, model: Any, out: Path) -> dict[str, Any]:
    """The final model's dev metrics and, where the scores allow one, a calibration (raw scores ->
    LLRs) fitted on them and stored beside the model (``out/calibration.json``)."""
    recipe = data.Recipe(num_samples=cfg.data.num_samples, seed=cfg.seed)
    scores, labels = [], []
    with torch.no_grad():
        for batch in data.iter_eval_part(
            data.Source(cfg.data.dev.shards),
            0,
            1,
            batch_size=cfg.train.dev_batch_size,
            recipe=recipe,
            max_batches=cfg.train.max_dev_batches,
        ):
            scores += model.score(data.model_input(batch)).tolist()
            labels += batch["label"].tolist()
    s, y = np.asarray(scores), np.asarray(labels)
    found = {f"final_dev_{k}": v for k, v in dev_metrics(s, y).items()}
    try:  # raw scores -> LLRs, fitted on the dev scores of the final model, stored with it
        cal = fit_calibration(s[y == 1], s[y == 0])
        cal.save(out / "calibration.json")
        llr = cal.apply(s)
        found.update(
            calibration=str(out / "calibration.json"),
            final_dev_act_dcf=act_dcf(llr[y == 1], llr[y == 0]),
            final_dev_cllr=cllr(llr[y == 1], llr[y == 0]),
        )
    except CalibrationError as exc:
        print(f"no calibration stored: {exc}", file=sys.stderr)
    return found


def waveform_model(cfg: TrainJobConfig, averaged: dict, out: Path) -> tuple[dict, Path, dict]:
    """A head trained on cached features as a waveform model: the recorded front-end (frozen) +
    the trained head, saved to ``out/detector.pt``; returns (rebuild config, weights, metadata)."""
    _, rebuild, full = waveform_detector(
        cfg.data.train[0].shards,
        averaged,
        head=cfg.model.head,
        n_logits=cfg.model.n_logits,
        head_kwargs=dict(cfg.model.head_kwargs),
    )
    torch.save(full, out / "detector.pt")
    features = read_info(cfg.data.train[0].shards)
    return rebuild, out / "detector.pt", {"trained_on": "cached features", "features": features}


def log_and_register(
    cfg: TrainJobConfig, summary: dict, averaged: dict, out: Path, *, run_id: str, uri: str
) -> None:
    """Log the final dev metrics to the run and the final model as its MLflow model, registered as
    ``mlflow.register_as``; adds ``model_uri`` (and ``registered``) to ``summary``."""
    # Imported here, not at the top: defining its MLflow model class prints a warning, which
    # `--help`, `--validate` and every worker would otherwise show.
    from spoofdet.serve.model import frontend_for_rebuild, log_detector

    with using_tracking_uri(uri):  # restores MLFLOW_TRACKING_URI afterwards (see spoofdet.tracking)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({k: v for k, v in summary.items() if k.startswith("final_dev")})
            epochs = ",".join(str(e) for e in summary["averaged_epochs"])
            mlflow.set_tag(
                "final.averaged_epochs", epochs
            )  # a tag: a resumed run may average others
        rebuild = dict(model_kwargs(cfg), frontend=frontend_for_rebuild(cfg.model.frontend))
        weights, extra = out / "model.pt", {}
        if cfg.model.frontend == "cached":  # register the waveform model, not the head alone
            rebuild, weights, extra = waveform_model(cfg, averaged, out)
            summary["waveform_model"] = str(weights)  # final_model holds the head-only average
        info = log_detector(
            run_id=run_id,
            uri=uri,
            weights=str(weights),
            model_config=rebuild,
            input_example=np.zeros((1, cfg.data.num_samples), dtype=np.float32),
            register_as=cfg.mlflow.register_as,
            calibration=summary.get("calibration"),
            metadata={
                "train_sources": [s.shards for s in cfg.data.train],
                "num_samples": cfg.data.num_samples,
                **extra,
            },
        )
        summary["model_uri"] = info.model_uri
        if cfg.mlflow.register_as:
            summary["registered"] = {
                "name": cfg.mlflow.register_as,
                "version": info.registered_model_version,
            }


def finish(
    result: Any, cfg: TrainJobConfig, *, run_id: str, uri: str, storage: str
) -> dict[str, Any]:
    """Average the best K checkpoints, score the dev set with the average, log and register it."""
    out = Path(storage) / cfg.name / "final"
    epochs, averaged = average_best(result, cfg, out)
    summary: dict[str, Any] = {
        "name": cfg.name,
        "storage": storage,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "averaged_epochs": epochs,
        "final_model": str(out / "model.pt"),
    }
    model = build_model(**model_kwargs(cfg)).eval()
    load_state_dict_strict(model, averaged)
    if cfg.data.dev is not None:
        summary.update(calibrate_on_dev(cfg, model, out))
    log_and_register(cfg, summary, averaged, out, run_id=run_id, uri=uri)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


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
    ap.add_argument("--json", action="store_true", help="print the final summary as JSON")
    return ap.parse_args(argv)


def start_ray() -> None:
    """Start Ray in-process unless it is up; its workers get our RAY_TRAIN_* and SPOOFDET_* vars."""
    if ray.is_initialized():
        return
    # under `ray job submit` the job's runtime_env already reaches every worker,
    # and Ray refuses to set its env keys a second time
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    env = {k: v for k, v in os.environ.items() if k.startswith(("RAY_TRAIN_", "SPOOFDET_"))}
    ray.init(runtime_env=None if in_job else {"env_vars": env})


def build_pipeline(cfg: TrainJobConfig) -> Any:
    d = cfg.data
    return data.build_train_dataset(
        [data.Source(s.shards, name=s.name, weight=s.weight) for s in d.train],
        num_samples=d.num_samples,
        crop=d.crop,
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
    lr, global_batch = effective_lr(cfg)
    params = flatten(to_dict(cfg))
    resolved = to_dict(rawboost_params(**cfg.data.rawboost.params))
    params.update({f"data.rawboost.resolved.{k}": v for k, v in resolved.items()})
    params.update(
        {
            "derived.world_size": cfg.scaling.num_workers,
            "derived.global_batch_size": global_batch,
            "derived.effective_lr": lr,
            "derived.storage": storage,
        }
    )
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
    drawn = ", ".join(
        f"{k} {sum(v['drawn'].values())} ({100 * v['share']:.1f}%)"
        for k, v in mix["sources"].items()
    )
    print(f"run {cfg.name}: MLflow run {run_id} at {uri}; epoch-0 mix {drawn}", file=sys.stderr)
    return run_id


def make_trainer(
    cfg: TrainJobConfig, pipeline: Any, *, run_id: str, uri: str, storage: str
) -> TorchTrainer:
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    dev = cfg.data.dev
    loop_config = {
        "cfg": cfg,
        "clock": pipeline.clock,
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
        ),
        datasets=pipeline.datasets,
        dataset_config=DataConfig(datasets_to_split=list(pipeline.datasets)),
    )


def fit(trainer: TorchTrainer, cfg: TrainJobConfig, *, storage: str, run_id: str) -> Any | None:
    """``trainer.fit()``; None (after saying why) when the run stopped on unreadable shards."""
    try:
        return trainer.fit()
    except Exception:
        gone = unreadable_sources(cfg)
        if not gone:
            raise
        traceback.print_exc()  # Ray's account first; the diagnosis last, where a reader looks
        print(
            f"train: error: run {cfg.name} stopped because its shards are no longer readable: "
            f"{'; '.join(gone)} (an unmounted or deleted folder?). No model was logged or "
            "registered. Make the shards readable on every node again and resubmit the same "
            f"command: the run resumes from its last checkpoint in {storage}/{cfg.name}, in "
            f"MLflow run {run_id}.",
            file=sys.stderr,
        )
        return None


def print_summary(summary: dict[str, Any], *, run_id: str, uri: str) -> None:
    print(f"final model (average of epochs {summary['averaged_epochs']}): {summary['final_model']}")
    if "final_dev_eer" in summary:
        print(
            f"dev EER {summary['final_dev_eer']:.2f}%  minDCF {summary['final_dev_min_dcf']:.4f}  "
            f"({summary['final_dev_n']} clips)"
        )
    registered = ""
    if "registered" in summary:
        registered = (
            f"; registered {summary['registered']['name']} v{summary['registered']['version']}"
        )
    print(f"MLflow: run {run_id} at {uri}; model {summary['model_uri']}{registered}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.validate:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    storage = storage_root(args.storage, cfg)
    uri = tracking_uri(cfg.mlflow.tracking_uri, storage)
    start_ray()
    pipeline = build_pipeline(cfg)
    run_id = track_run(cfg, args.config, pipeline, storage=storage, uri=uri)
    trainer = make_trainer(cfg, pipeline, run_id=run_id, uri=uri, storage=storage)
    result = fit(trainer, cfg, storage=storage, run_id=run_id)
    if result is None:
        return 1
    summary = finish(result, cfg, run_id=run_id, uri=uri, storage=storage)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, run_id=run_id, uri=uri)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
