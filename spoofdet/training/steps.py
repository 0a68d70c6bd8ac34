"""The training step and what it stands on, shared by every worker of ``ray_jobs.train``.

Contract: :func:`setup_model_and_optimizer` builds the recipe's model (seeded, so identical on every
rank, optionally initialised from ``model.init_from``) with torch Adam at :func:`effective_lr` and
the recipe's learning-rate schedule (:func:`lr_factor`, :func:`lr_scheduler`), wrapped in a
DeepSpeed engine or Ray Train's DDP; :func:`make_step` picks SAM, DeepSpeed or plain once and
returns ``step(wave, label) -> (loss, skipped)``, one micro-batch per call (the optimizer steps
every ``train.grad_accum_steps`` of them); :func:`derived_params` are the values the run derives
from its recipe (global batch, effective lr, schedule), for its MLflow params;
:func:`train_epoch` runs one epoch of steps, rank 0 logging to the active MLflow run, and counts
them; :func:`early_stop` tracks the selection metric (lower is better).

Nothing silently wrong: a step whose gradients are not finite is skipped (DeepSpeed's overflow
check, or ours where DeepSpeed has none) and counted; :func:`check_training` ends a run
(:class:`RunFailed`) that trained no step or too many non-finite ones, :func:`check_bad_rows` one
that could not decode too many rows. Checkpoints are read by :func:`restore_checkpoint` without
unpickling code (:func:`load_weights_only`; DeepSpeed's loads go through it too).

Fault injection (tests only, read here only): with ``SPOOFDET_FAULT_NONFINITE_LOSS=1`` in the
workers' environment every training loss is NaN, as a diverged run's would be.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import mlflow
import torch
import torch.distributed as dist
import torch.nn.functional as F

from spoofdet.config import TrainJobConfig, lr_schedule_steps
from spoofdet.data import pipeline as data
from spoofdet.data.features import read_info
from spoofdet.errors import SpoofdetError
from spoofdet.models import build_model
from spoofdet.models.checkpoints import load_state_dict_strict
from spoofdet.optim import sam_step
from spoofdet.serve.init_from import init_state_dict

#: ``step(wave, label) -> (loss, skipped)``: ``skipped`` when the update was skipped because the
#: gradients were not finite.
Step = Callable[..., tuple[torch.Tensor, bool]]  # step(wave, label, lengths=None)
#: The fault-injection switch (see the module docstring).
FAULT_NONFINITE_LOSS = "SPOOFDET_FAULT_NONFINITE_LOSS"


class RunFailed(RuntimeError):
    """A run that must end without a model: ``reason`` is a short tag (``no_steps``,
    ``nonfinite``, ``bad_rows``, ``nonfinite_weights``, ``chance_eer``), the message one line
    saying why and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def effective_lr(cfg: TrainJobConfig) -> tuple[float, int]:
    """(learning rate after scaling, global batch size). The global batch is ``train.batch_size``
    x workers x ``train.grad_accum_steps`` rows per optimizer step; ``optim.lr`` is for one
    micro-batch of ``train.batch_size``, so linear/sqrt scaling multiplies it by (the square root
    of) global batch / ``train.batch_size``."""
    ratio = cfg.scaling.num_workers * cfg.train.grad_accum_steps
    factor = {"none": 1.0, "linear": float(ratio), "sqrt": math.sqrt(ratio)}[cfg.optim.lr_scaling]
    return cfg.optim.lr * factor, cfg.train.batch_size * ratio


def lr_factor(cfg: TrainJobConfig, step: int) -> float:
    """The multiple of :func:`effective_lr` in effect at optimizer step ``step`` (0-based; steps
    after accumulation, skipped ones not counted): ``optim.warmup_steps`` of linear warm-up
    ((step + 1) / W), then ``optim.schedule`` over the steps after them: 1 (constant); half a
    cosine from 1 to ``min_lr / lr`` over the rest of :func:`spoofdet.config.lr_schedule_steps`,
    that floor after it (raw AASIST's per-step annealing); ``step_gamma ** (k // step_size)`` at
    the k-th step after warm-up (Codecfake's halving)."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    k = step - o.warmup_steps
    if o.schedule == "cosine":
        span = lr_schedule_steps(cfg) - o.warmup_steps
        floor = o.min_lr / o.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(k, span) / span))
    if o.schedule == "step":
        return o.step_gamma ** (k // o.step_size)
    return 1.0


#: optimizer -> its LR scheduler (:func:`lr_scheduler`), for the step, the epoch and the resume.
_SCHEDULERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def make_lr_scheduler(cfg: TrainJobConfig, optimizer: torch.optim.Optimizer) -> Any:
    """A ``LambdaLR`` of :func:`lr_factor` over ``optimizer`` (the torch optimizer itself, also
    under DeepSpeed: the engine never steps it, :func:`make_step` does after an applied optimizer
    step), or None for a constant schedule without warm-up (today's constant lr, untouched)."""
    if cfg.optim.schedule == "constant" and cfg.optim.warmup_steps == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step))


def register_lr_scheduler(optimizer: Any, scheduler: Any) -> None:
    """Make ``scheduler`` :func:`lr_scheduler` of ``optimizer`` (the one :func:`make_step`,
    :func:`train_epoch` and :func:`restore_checkpoint` are handed; DeepSpeed's wrapper where it
    wraps the torch optimizer); None registers nothing."""
    if scheduler is not None:
        _SCHEDULERS[optimizer] = scheduler


def lr_scheduler(optimizer: Any) -> Any:
    """The LR scheduler :func:`setup_model_and_optimizer` made for ``optimizer`` (None: constant)."""
    return _SCHEDULERS.get(optimizer)


def restore_lr_scheduler(optimizer: Any, state: dict[str, Any]) -> None:
    """Put ``optimizer``'s scheduler where ``state["lr_scheduler"]`` (saved by
    :func:`train_epoch` into the checkpoint's ``state.json``) left it, and its learning rate."""
    scheduler = lr_scheduler(optimizer)
    if scheduler is None or "lr_scheduler" not in state:
        return
    scheduler.load_state_dict(state["lr_scheduler"])
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr


def derived_params(cfg: TrainJobConfig) -> dict[str, Any]:
    """What the run derives from its recipe, as MLflow params (``derived.*``): workers,
    accumulation, global batch (rows per optimizer step; its seconds with ``data.batch_seconds``),
    the effective lr and a one-line summary of the schedule (with its length in optimizer steps
    where it has one)."""
    lr, global_batch = effective_lr(cfg)
    o, accum, world = cfg.optim, cfg.train.grad_accum_steps, cfg.scaling.num_workers
    warm = f", {o.warmup_steps} warm-up steps" if o.warmup_steps else ""
    params: dict[str, Any] = {
        "derived.world_size": world,
        "derived.grad_accum_steps": accum,
        "derived.global_batch_size": global_batch,
        "derived.effective_lr": lr,
    }
    if cfg.data.batch_seconds is not None:
        del params["derived.global_batch_size"]  # batches are formed by duration, not rows
        params["derived.global_batch_seconds"] = cfg.data.batch_seconds * world * accum
    if o.schedule == "cosine":
        total = lr_schedule_steps(cfg)
        source = "optim.total_steps" if o.total_steps is not None else "derived"
        floor = o.min_lr * lr / o.lr
        params["derived.lr_schedule"] = (
            f"cosine {lr:g} -> {floor:g} over {total} optimizer steps ({source}){warm}"
        )
        params["derived.lr_schedule_steps"] = total
    elif o.schedule == "step":
        params["derived.lr_schedule"] = (
            f"step {lr:g} x {o.step_gamma:g} every {o.step_size} optimizer steps{warm}"
        )
    else:
        params["derived.lr_schedule"] = f"constant {lr:g}{warm}"
    return params


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
        "gradient_accumulation_steps": cfg.train.grad_accum_steps,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": uses_bf16(cfg)},
        "fp16": {"enabled": cfg.deepspeed.precision == "fp16"},
        "gradient_clipping": cfg.optim.grad_clip or 0.0,
        "steps_per_print": 10**9,
    }
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=ds_config, dist_init_required=False
    )
    guard_deepspeed_loads(engine)
    return engine, optimizer


def deepspeed_safe_globals() -> list[type]:
    """The classes DeepSpeed pickles into its checkpoint files besides tensors and containers.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints our engine
    settings saved (CPU, fp32 and bf16, ZeRO 0, 1 and 2): the ZeRO 1/2 optimizer files hold the
    first three, the model files none. ``DynamicLossScaler`` is fp16's loss scaler (GPU only, so
    not observable here; DeepSpeed's ZeRO ``state_dict`` stores it where bf16/fp32 store
    ``LossScaler``).
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, fragment_address, DynamicLossScaler]


def load_weights_only(path: str | os.PathLike, map_location: Any = None, allowed=()) -> Any:
    """``torch.load`` that never runs code: tensors, containers and the ``allowed`` classes only.

    Raises:
        SpoofdetError: naming the file, when it asks to unpickle anything else (a tampered or
            foreign file).
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:GLOBAL|function) `?([\w.]+)", str(exc))
        what = found.group(1) if found else str(exc).splitlines()[0]
        raise SpoofdetError(
            f"{path}: refused to load: it asks to unpickle {what}, which could run code; a "
            "spoofdet checkpoint holds only tensors, numbers and DeepSpeed's own records. Delete "
            "this checkpoint (the run resumes from an earlier one) or restore it from a trusted "
            "copy."
        ) from None


def guard_deepspeed_loads(engine: Any) -> None:
    """Make ``engine`` read its checkpoint files with ``weights_only=True`` and only
    :func:`deepspeed_safe_globals` allowed: its checkpoint engine's ``load`` is replaced on this
    instance (DeepSpeed's own calls ``torch.load(weights_only=False)``)."""
    allowed = deepspeed_safe_globals()

    def load(path: str, map_location: Any = None) -> Any:
        return load_weights_only(path, map_location, allowed)

    engine.checkpoint_engine.load = load


def restore_checkpoint(
    folder: str | os.PathLike,
    cfg: TrainJobConfig,
    net: Any,
    model: Any,
    optimizer: Any,
    device: Any,
) -> dict[str, Any]:
    """Load a checkpoint folder written by the train job into net/model/optimizer; returns its
    ``state.json``. No file in it can run code (see :func:`load_weights_only`)."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    if cfg.deepspeed.enabled:
        guard_deepspeed_loads(net)  # set up already; again, so that no resume can skip it
        net.load_checkpoint(str(folder), tag="ds", load_module_strict=True)
    else:
        model.load_state_dict(load_weights_only(folder / "model.pt", device))
        optimizer.load_state_dict(load_weights_only(folder / "optimizer.pt", device))
    restore_lr_scheduler(optimizer, state)  # after the optimizer: its lr is the schedule's
    return state


def setup_model_and_optimizer(cfg: TrainJobConfig, device: Any) -> tuple[Any, Any, Any]:
    """(net, model, optimizer): ``net`` runs the model (DeepSpeed engine or DDP-prepared module),
    ``model`` is the unwrapped module (same parameters), identical on every rank. The optimizer's
    LR scheduler (:func:`make_lr_scheduler`) is :func:`lr_scheduler` of it."""
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
    scheduler = make_lr_scheduler(cfg, optimizer)
    if cfg.deepspeed.enabled:
        engine, optimizer = deepspeed_engine(cfg, model, optimizer, device)
    register_lr_scheduler(optimizer, scheduler)
    if cfg.deepspeed.enabled:
        return engine, model, optimizer
    import ray.train.torch  # here, not at the top: only a worker without DeepSpeed needs it

    return ray.train.torch.prepare_model(model), model, optimizer


def make_step(cfg: TrainJobConfig, net: Any, model: Any, optimizer: Any, class_w: Any) -> Step:
    """The training step, chosen once: SAM, DeepSpeed or plain; ``step(wave, label)`` ->
    ``(loss, skipped)`` for one micro-batch.

    Accumulation (``train.grad_accum_steps`` = N): the optimizer steps on every N-th call with the
    gradients of the last N micro-batches, each loss scaled by 1/N, which equals one step on their
    concatenated batch (a mean loss; class-weighted cross-entropy per micro-batch). DeepSpeed does
    this itself (its ``gradient_accumulation_steps``: ``engine.backward`` scales, ``engine.step``
    steps at the boundary); on the plain path we do, and DDP all-reduces only at the boundary.

    A step with non-finite gradients leaves the weights alone: DeepSpeed's ZeRO 1/2 and
    mixed-precision optimizers skip it themselves (``engine.skipped_steps``); on its plain fp32
    optimizer (ZeRO 0) and without DeepSpeed we skip it. The gradients are checked at the
    accumulation boundary after their all-reduce, so every rank decides alike; ``skipped`` is
    True on that call only. SAM (``spoofdet.optim.sam_step``) cannot be skipped from here: its
    non-finite losses are counted all the same. The LR scheduler (:func:`lr_scheduler`) steps
    after every applied optimizer step, never on a skipped one."""
    nan = os.environ.get(FAULT_NONFINITE_LOSS) == "1"
    accum = cfg.train.grad_accum_steps
    scheduler = lr_scheduler(optimizer)

    def loss_of(
        wave: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        # lengths: duration batches only, so the seeds' fixed-length path calls net(wave) as before
        logits = net(wave) if lengths is None else net(wave, lengths)
        loss = weighted_loss(logits, label, class_w)
        return loss * float("nan") if nan else loss

    def stepped() -> None:
        if scheduler is not None:
            scheduler.step()

    if cfg.optim.sam_rho > 0:  # Codecfake's CSAM with data.proportional_batches: ascend, descend

        def step(
            wave: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, bool]:
            loss = sam_step(
                model,
                lambda: loss_of(wave, label, lengths),
                optimizer,
                rho=cfg.optim.sam_rho,
                grad_clip=cfg.optim.grad_clip,
            )
            stepped()
            return loss, False

    elif cfg.deepspeed.enabled:
        bf16 = uses_bf16(cfg)
        guard = isinstance(optimizer, torch.optim.Optimizer)  # DeepSpeed's ZeRO 0 fp32: no check

        def step(
            wave: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, bool]:
            loss = loss_of(wave.to(torch.bfloat16) if bf16 else wave, label, lengths)
            net.backward(loss)  # scaled by 1 / gradient_accumulation_steps inside
            boundary = net.is_gradient_accumulation_boundary()
            if guard and boundary and not grads_finite(model):  # no update, as DeepSpeed's skip
                optimizer.zero_grad(set_to_none=True)  # (its step would clip and apply them)
                if accum > 1:  # count the micro-batch: nothing to apply, Adam skips None grads
                    net.step()
                return loss.detach(), True
            before = net.skipped_steps
            net.step()
            skipped = net.skipped_steps > before
            if boundary and not skipped:
                stepped()
            return loss.detach(), skipped

    else:
        micro = 0  # micro-batches so far; carried across epochs like DeepSpeed's count

        def step(
            wave: torch.Tensor, label: torch.Tensor, lengths: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, bool]:
            nonlocal micro
            boundary = (micro + 1) % accum == 0
            if micro % accum == 0:
                optimizer.zero_grad()
            local = not boundary and hasattr(net, "no_sync")  # DDP: all-reduce at the boundary
            with net.no_sync() if local else contextlib.nullcontext():
                loss = loss_of(wave, label, lengths)
                (loss / accum if accum > 1 else loss).backward()
            micro += 1
            if not boundary:
                return loss.detach(), False
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            if not grads_finite(model):
                optimizer.zero_grad()
                return loss.detach(), True
            optimizer.step()
            stepped()
            return loss.detach(), False

    return step


def grads_finite(model: Any) -> bool:
    """Every gradient of ``model`` is finite (one norm over them all)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


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
) -> dict[str, float]:
    """One epoch of steps (micro-batches, counted in ``state``); rank 0 logs loss, the lr in
    effect and clips/s every ``train.log_every`` steps. Returns this rank's counts: ``steps``,
    ``rows``, ``nonfinite`` (steps with a non-finite loss or skipped update), ``skipped``,
    ``loss_sum`` and ``finite`` (over the steps with a finite loss), ``samples`` (real audio
    samples: ``lengths`` of duration batches) and ``padded`` (samples the model ran on, padding
    included). The LR scheduler's state goes into ``state["lr_scheduler"]`` (the checkpoint's
    ``state.json``; :func:`restore_checkpoint` puts it back)."""
    t_window, n_window = time.perf_counter(), 0
    keys = ("steps", "rows", "nonfinite", "skipped", "loss_sum", "finite", "samples", "padded")
    counts = dict.fromkeys(keys, 0)
    for i, batch in enumerate(batches):
        wave, label = data.model_input(batch).to(device), batch["label"].to(device)
        lengths = batch.get("lengths")  # duration batches: real samples per clip (collate)
        loss, skipped = step(wave, label, None if lengths is None else lengths.to(device))
        value = loss.item()
        state["step"] += 1
        counts["steps"] += 1
        counts["rows"] += len(label)
        counts["padded"] += wave.shape[0] * wave.shape[-1]  # what the model ran on
        counts["samples"] += (
            int(lengths.sum()) if lengths is not None else wave.shape[0] * wave.shape[-1]
        )
        counts["skipped"] += int(skipped)
        counts["nonfinite"] += int(skipped or not math.isfinite(value))
        if math.isfinite(value):
            counts["loss_sum"] += value
            counts["finite"] += 1
        n_window += len(label)
        if rank == 0 and state["step"] % cfg.train.log_every == 0:
            elapsed = time.perf_counter() - t_window
            window = {
                "train_loss": value,
                "lr": optimizer.param_groups[0]["lr"],
                "clips_per_s": n_window * world / max(elapsed, 1e-9),
            }
            mlflow.log_metrics(window, step=state["step"])
            t_window, n_window = time.perf_counter(), 0
        if cfg.train.max_steps_per_epoch and i + 1 >= cfg.train.max_steps_per_epoch:
            break
    scheduler = lr_scheduler(optimizer)
    if scheduler is not None:
        state["lr_scheduler"] = scheduler.state_dict()
    return counts


def gather(obj: Any, world: int) -> list[Any]:
    """``obj`` of every rank, in rank order."""
    if world == 1 or not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def epoch_totals(parts: list[dict[str, float]], state: dict[str, Any]) -> dict[str, Any]:
    """Every rank's :func:`train_epoch` counts as the epoch's metrics, and the run's running totals
    in ``state`` (``rank_steps``, ``nonfinite_steps``: summed over ranks, so their ratio is the
    share of non-finite steps). ``nonfinite_steps``/``skipped_steps`` are the most any rank saw
    (ranks step together, so usually every rank sees the same ones)."""
    steps = sum(p["steps"] for p in parts)
    state["rank_steps"] = state.get("rank_steps", 0) + steps
    state["nonfinite_steps"] = state.get("nonfinite_steps", 0) + sum(p["nonfinite"] for p in parts)
    finite = sum(p["finite"] for p in parts)
    return {
        "train_loss_epoch": sum(p["loss_sum"] for p in parts) / finite if finite else math.nan,
        "nonfinite_steps": max(p["nonfinite"] for p in parts),
        "skipped_steps": max(p["skipped"] for p in parts),
        "rank_steps": steps,
        "rows": sum(p["rows"] for p in parts),
        # zero padding of duration batches (data.batch_seconds): padded / all samples the model saw
        "train_padding": 1.0 - sum(p.get("samples", 0) for p in parts) / padded
        if (padded := sum(p.get("padded", 0) for p in parts))
        else 0.0,
    }


def check_training(cfg: TrainJobConfig, state: dict[str, Any], totals: dict, epoch: int) -> None:
    """Raise :class:`RunFailed` when no rank trained a step this epoch, or when more than
    ``train.max_nonfinite_share`` of the run's steps so far were non-finite."""
    if totals["rank_steps"] == 0:
        raise RunFailed(
            "no_steps",
            f"run {cfg.name} trained no step in epoch {epoch}: no worker got a full batch of "
            f"train.batch_size={cfg.train.batch_size} rows (a last partial batch is dropped). "
            "Lower train.batch_size or scaling.num_workers, or train on more rows.",
        )
    bad, steps = state["nonfinite_steps"], state["rank_steps"]
    if bad / steps > cfg.train.max_nonfinite_share:
        raise RunFailed(
            "nonfinite",
            f"run {cfg.name}: {bad} of {steps} training steps so far ({bad / steps:.1%}, counted "
            f"on every worker) had a non-finite loss or gradients, more than "
            f"train.max_nonfinite_share={cfg.train.max_nonfinite_share}; stopped after epoch "
            f"{epoch}. Lower optim.lr, set optim.grad_clip, or look for non-finite samples.",
        )


def check_bad_rows(
    cfg: TrainJobConfig, what: str, bad: int, used: int, named: list[dict], artifact: str
) -> None:
    """Raise :class:`RunFailed` when more than ``data.max_bad_rows`` of the rows read (``used`` +
    ``bad``) could not be decoded; the message names the first few and the ``artifact`` listing
    them. ``what`` says which rows (``train rows read in epoch 3``)."""
    read = used + bad
    if bad == 0 or bad / max(read, 1) <= cfg.data.max_bad_rows:
        return
    first = "; ".join(f"{r['utt_id']} in {r['shard']} ({r['reason']})" for r in named[:3])
    raise RunFailed(
        "bad_rows",
        f"run {cfg.name}: {bad} of {read} {what} ({bad / max(read, 1):.2%}) could not be "
        f"decoded, more than data.max_bad_rows={cfg.data.max_bad_rows}: e.g. "
        f"{first or '(not named)'}; all in the run's artifact {artifact}. Rewrite those shards "
        "with `spoofdet prepare`, or raise data.max_bad_rows.",
    )


def epoch_outcome(
    cfg: TrainJobConfig, clock: Any, counts: dict, state: dict, epoch: int, *, rank: int, world: int
) -> tuple[dict[str, Any], dict[str, Any], RunFailed | None]:
    """After an epoch's steps, on every rank alike: (the epoch's metrics, its undecodable train
    rows as rank 0 read them from the pipeline's clock, the failure if the epoch failed)."""
    totals = epoch_totals(gather(counts, world), state)  # also waits for every rank's last batch
    info = (
        (data.bad_row_counts(clock).get(epoch, 0), data.bad_rows(clock, epoch))
        if rank == 0
        else None
    )
    n_bad, named = gather(info, world)[0]
    metrics = {
        "epoch": epoch,
        "train_loss_epoch": totals["train_loss_epoch"],
        "steps": state["step"],
        "nonfinite_steps": totals["nonfinite_steps"],
        "skipped_steps": totals["skipped_steps"],
        "bad_rows": n_bad,
        "train_rows": totals["rows"],  # examples trained on this epoch, all ranks
        "train_padding": totals["train_padding"],
    }
    bad = {"epoch": epoch, "train": {"count": n_bad, "rows": named}}
    try:  # undecodable rows first: they may be why no step could be trained
        what = f"train rows read in epoch {epoch}"
        check_bad_rows(cfg, what, n_bad, totals["rows"], named, f"data/bad_rows_epoch{epoch}.json")
        check_training(cfg, state, totals, epoch)
    except RunFailed as failed:
        return metrics, bad, failed
    return metrics, bad, None


def log_epoch(metrics: dict, bad: dict, epoch: int) -> None:
    """Rank 0: the epoch's metrics, and its undecodable rows as an artifact when there are any."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch)
    if bad["train"]["count"] or bad.get("dev", {}).get("count"):
        mlflow.log_dict(bad, f"data/bad_rows_epoch{epoch}.json")


def early_stop(state: dict[str, Any], value: float, patience: int) -> bool:
    """Track the best selection value (lower is better); True after ``patience`` epochs without one."""
    if state["best"] is None or value < state["best"]:
        state["best"], state["bad_epochs"] = value, 0
    else:
        state["bad_epochs"] += 1
    return state["bad_epochs"] >= patience
