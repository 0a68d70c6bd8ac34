"""The training step and what it stands on, shared by every worker of ``ray_jobs.train``.

Contract: :func:`setup_model_and_optimizer` builds the recipe's model (seeded, so identical on every
rank, optionally initialised from ``model.init_from``) with torch Adam at :func:`effective_lr`, wrapped
in a DeepSpeed engine or Ray Train's DDP; :func:`make_step` picks SAM, DeepSpeed or plain once and
returns ``step(wave, label) -> loss``; :func:`train_epoch` runs one epoch of steps, rank 0 logging
to the active MLflow run; :func:`early_stop` tracks the selection metric (lower is better).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import mlflow
import torch
import torch.nn.functional as F

from spoofdet.config import TrainJobConfig
from spoofdet.data import pipeline as data
from spoofdet.data.features import read_info
from spoofdet.models import build_model
from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.optim import sam_step
from spoofdet.serve.init_from import init_state_dict

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def effective_lr(cfg: TrainJobConfig) -> tuple[float, int]:
    """(learning rate after scaling, global batch size): linear/sqrt scaling by the number of workers."""
    world, global_batch = cfg.scaling.num_workers, cfg.scaling.num_workers * cfg.train.batch_size
    factor = {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[cfg.optim.lr_scaling]
    return cfg.optim.lr * factor, global_batch


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
    import ray.train.torch  # here, not at the top: only a worker without DeepSpeed needs it

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
