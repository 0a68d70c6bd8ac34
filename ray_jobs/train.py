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
from pathlib import Path
from typing import Any

from spoofdet.config import ConfigError, TrainJobConfig, flatten, load_train_config, to_dict

SELECT_MODE = {"dev_loss": "min", "dev_eer": "min"}


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
    if (
        m.frontend == "cached"
    ):  # head only, over data_prep.features output (identity front-end of its dim)
        from spoofdet.data.features import read_info

        kw["frontend_kwargs"] = {"out_dim": int(read_info(cfg.data.train[0].shards)["dim"])}
    return kw


# ----------------------------------------------------------------------------- the worker


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import numpy as np
    import ray.train
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from spoofdet.data import pipeline as data
    from spoofdet.evaluation.metrics import compute_eer, min_dcf
    from spoofdet.models import build_model, score_from_logits

    cfg: TrainJobConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(**model_kwargs(cfg))
    if (
        cfg.model.init_from
    ):  # a published seed checkpoint (converted), a spoofdet model or state dict
        from spoofdet.models.checkpoints import load_state_dict_strict
        from spoofdet.serve.importer import init_state_dict

        load_state_dict_strict(
            model,
            init_state_dict(
                cfg.model.init_from,
                model,
                head=cfg.model.head,
                seed=cfg.model.init_seed,
                tracking_uri=cfg.mlflow.tracking_uri,
            ),
        )
    model = model.to(device)
    lr, global_batch = effective_lr(cfg)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=lr,
        betas=tuple(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
    )
    bf16 = cfg.scaling.use_gpu and cfg.deepspeed.precision in ("auto", "bf16")
    if cfg.deepspeed.enabled:
        import deepspeed

        if device.type == "cpu":
            # DeepSpeed's CPU accelerator JIT-compiles a shared-memory allreduce op on first use (~35 s,
            # and it needs a C++ compiler on every node); gloo's allreduce is what the CPU path needs.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        ds_config = {
            "train_micro_batch_size_per_gpu": cfg.train.batch_size,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
            "bf16": {"enabled": bf16},
            "fp16": {"enabled": cfg.deepspeed.precision == "fp16"},
            "gradient_clipping": cfg.optim.grad_clip or 0.0,
            "steps_per_print": 10**9,
        }
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config, dist_init_required=False
        )
        net = engine
    else:
        net = ray.train.torch.prepare_model(model)
    plain = model  # the unwrapped module (same parameters)
    class_w = torch.tensor(cfg.optim.class_weights, dtype=torch.float32, device=device)

    def loss_fn(logits: torch.Tensor, label: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 2:
            return F.cross_entropy(logits, label, weight=class_w, reduction=reduction)
        w = class_w[label]
        per = w * F.binary_cross_entropy_with_logits(logits[:, 0], label.float(), reduction="none")
        return per.sum() / w.sum() if reduction == "mean" else per.sum()

    def step_sam(wave: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """SAM (Codecfake's CSAM with data.proportional_batches): ascend, then descend (spoofdet.optim)."""
        from spoofdet.optim import sam_step

        return sam_step(
            plain,
            lambda: loss_fn(net(wave), label),
            optimizer,
            rho=cfg.optim.sam_rho,
            grad_clip=cfg.optim.grad_clip,
        )

    state = {
        "epoch": 0,
        "step": 0,
        "history": [],
        "best": None,
        "bad_epochs": 0,
        "mlflow_run_id": config["run_id"],
    }
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = json.loads((Path(d) / "state.json").read_text())
            if cfg.deepspeed.enabled:
                engine.load_checkpoint(d, tag="ds", load_module_strict=True)
            else:
                plain.load_state_dict(torch.load(Path(d) / "model.pt", map_location=device))
                optimizer.load_state_dict(torch.load(Path(d) / "optimizer.pt", map_location=device))
        state["epoch"] += 1

    mlflow = None
    if rank == 0:
        import mlflow

        mlflow.set_tracking_uri(config["tracking_uri"])
        mlflow.start_run(
            run_id=state["mlflow_run_id"], log_system_metrics=cfg.mlflow.system_metrics
        )

    def gather(obj: Any) -> list[Any]:
        if world == 1 or not dist.is_initialized():
            return [obj]
        out: list[Any] = [None] * world
        dist.all_gather_object(out, obj)
        return out

    dev_source = data.Source(cfg.data.dev.shards, name=cfg.data.dev.name) if cfg.data.dev else None
    dev_recipe = data.Recipe(
        num_samples=cfg.data.num_samples,
        seed=cfg.seed,
        rawboost_algo=cfg.data.rawboost.algo if cfg.data.dev_rawboost else 0,
        rawboost_p=cfg.data.rawboost.p,
    )

    def evaluate() -> dict[str, float]:
        net.eval()
        scores, labels, num, den = [], [], 0.0, 0.0
        with torch.no_grad():
            for batch in data.iter_eval_part(
                dev_source,
                rank,
                world,
                batch_size=cfg.train.dev_batch_size,
                recipe=dev_recipe,
                max_batches=cfg.train.max_dev_batches,
            ):
                wave, label = data.model_input(batch).to(device), batch["label"].to(device)
                logits = net(wave.to(torch.bfloat16) if bf16 else wave)
                num += float(loss_fn(logits, label, reduction="sum"))
                den += float(class_w[label].sum())
                scores += score_from_logits(logits.float()).cpu().tolist()
                labels += label.cpu().tolist()
        net.train()
        parts = gather((scores, labels, num, den))
        s = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
        y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
        loss = sum(p[2] for p in parts) / max(sum(p[3] for p in parts), 1e-12)
        eer, threshold = compute_eer(s[y == 1], s[y == 0])
        return {
            "dev_loss": loss,
            "dev_eer": 100.0 * eer,
            "dev_min_dcf": min_dcf(s[y == 1], s[y == 0])[0],
            "dev_threshold": float(threshold),
            "dev_n": int(len(s)),
        }

    shards = {name: ray.train.get_dataset_shard(name) for name in config["datasets"]}
    stop = False
    for epoch in range(state["epoch"], cfg.train.epochs):
        if rank == 0:
            data.set_epoch(config["clock"], epoch)
            if mlflow is not None:
                mlflow.log_metric("epoch_started", epoch, step=state["step"])
        if world > 1 and dist.is_initialized():
            dist.barrier()  # every rank starts reading only once the clock shows this epoch
        net.train()
        t_window, n_window, loss_sum, n_steps = time.perf_counter(), 0, 0.0, 0
        for i, batch in enumerate(
            data.iter_train_batches(
                shards,
                shares=config["shares"],
                batch_size=cfg.train.batch_size,
                shuffle_buffer=cfg.data.shuffle_buffer,
                shuffle_seed=cfg.seed + 1000 * epoch + rank,
            )
        ):
            wave, label = data.model_input(batch).to(device), batch["label"].to(device)
            if cfg.optim.sam_rho > 0:
                loss = step_sam(wave, label)
            elif cfg.deepspeed.enabled:
                loss = loss_fn(engine(wave.to(torch.bfloat16) if bf16 else wave), label)
                engine.backward(loss)
                engine.step()
            else:
                loss = loss_fn(net(wave), label)
                optimizer.zero_grad()
                loss.backward()
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.optim.grad_clip)
                optimizer.step()
            state["step"] += 1
            loss_sum, n_steps, n_window = loss_sum + loss.item(), n_steps + 1, n_window + len(label)
            if rank == 0 and state["step"] % cfg.train.log_every == 0:
                elapsed = time.perf_counter() - t_window
                mlflow.log_metrics(
                    {
                        "train_loss": loss.item(),
                        "lr": optimizer.param_groups[0]["lr"],
                        "clips_per_s": n_window * world / max(elapsed, 1e-9),
                    },
                    step=state["step"],
                )
                t_window, n_window = time.perf_counter(), 0
            if cfg.train.max_steps_per_epoch and i + 1 >= cfg.train.max_steps_per_epoch:
                break

        metrics = {
            "epoch": epoch,
            "train_loss_epoch": loss_sum / max(n_steps, 1),
            "steps": state["step"],
        }
        if dev_source is not None:
            metrics.update(evaluate())
            value = metrics[cfg.train.select]
            if state["best"] is None or value < state["best"]:
                state["best"], state["bad_epochs"] = value, 0
            else:
                state["bad_epochs"] += 1
            stop = state["bad_epochs"] >= cfg.train.patience
        state["epoch"] = epoch
        state["history"].append({k: v for k, v in metrics.items()})
        if rank == 0:
            mlflow.log_metrics(
                {k: float(v) for k, v in metrics.items() if k != "epoch"}, step=epoch
            )
        with tempfile.TemporaryDirectory() as tmp:
            if cfg.deepspeed.enabled:
                engine.save_checkpoint(
                    tmp, tag="ds"
                )  # every rank writes its part (ZeRO optimizer shards)
            if rank == 0:
                torch.save(
                    {
                        k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                        for k, v in plain.state_dict().items()
                    },
                    Path(tmp) / "model.pt",
                )
                if not cfg.deepspeed.enabled:
                    torch.save(optimizer.state_dict(), Path(tmp) / "optimizer.pt")
                (Path(tmp) / "state.json").write_text(json.dumps(state, indent=1))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        if stop:
            break
    if rank == 0:
        mlflow.end_run()


# ----------------------------------------------------------------------------- the driver


def finish(
    result: Any, cfg: TrainJobConfig, *, run_id: str, uri: str, storage: str
) -> dict[str, Any]:
    """Average the best K checkpoints, score the dev set with the average, log and register it."""
    import mlflow
    import numpy as np
    import torch

    from spoofdet.data import pipeline as data
    from spoofdet.evaluation.calibration import CalibrationError, fit_calibration
    from spoofdet.evaluation.metrics import act_dcf, cllr, compute_eer, min_dcf
    from spoofdet.models import build_model
    from spoofdet.models.checkpoints import average_state_dicts, load_state_dict_strict
    from spoofdet.serve.model import frontend_for_rebuild, log_detector
    from spoofdet.tracking import using_tracking_uri

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
    out = Path(storage) / cfg.name / "final"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(averaged, out / "model.pt")
    summary: dict[str, Any] = {
        "name": cfg.name,
        "storage": storage,
        "mlflow_run_id": run_id,
        "tracking_uri": uri,
        "averaged_epochs": [m["epoch"] for _, m in chosen],
        "final_model": str(out / "model.pt"),
    }
    model = build_model(**model_kwargs(cfg)).eval()
    load_state_dict_strict(model, averaged)
    if cfg.data.dev is not None:
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
        eer, thr = compute_eer(s[y == 1], s[y == 0])
        summary.update(
            final_dev_eer=100.0 * eer,
            final_dev_min_dcf=min_dcf(s[y == 1], s[y == 0])[0],
            final_dev_threshold=float(thr),
            final_dev_n=int(len(s)),
        )
        try:  # raw scores -> LLRs, fitted on the dev scores of the final model, stored with it
            cal = fit_calibration(s[y == 1], s[y == 0])
            cal.save(out / "calibration.json")
            llr = cal.apply(s)
            summary.update(
                calibration=str(out / "calibration.json"),
                final_dev_act_dcf=act_dcf(llr[y == 1], llr[y == 0]),
                final_dev_cllr=cllr(llr[y == 1], llr[y == 0]),
            )
        except CalibrationError as exc:
            print(f"no calibration stored: {exc}", file=sys.stderr)
    with using_tracking_uri(uri):  # restores MLFLOW_TRACKING_URI afterwards (see spoofdet.tracking)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({k: v for k, v in summary.items() if k.startswith("final_dev")})
            mlflow.set_tag(
                "final.averaged_epochs", ",".join(str(e) for e in summary["averaged_epochs"])
            )  # a tag: a resumed run may average others
        rebuild = dict(model_kwargs(cfg), frontend=frontend_for_rebuild(cfg.model.frontend))
        weights, extra = out / "model.pt", {}
        if (
            cfg.model.frontend == "cached"
        ):  # register the waveform model: recorded front-end (frozen) + trained head
            from spoofdet.data.features import read_info
            from spoofdet.models.cached import waveform_detector

            _, rebuild, full = waveform_detector(
                cfg.data.train[0].shards,
                averaged,
                head=cfg.model.head,
                n_logits=cfg.model.n_logits,
                head_kwargs=dict(cfg.model.head_kwargs),
            )
            weights = out / "detector.pt"
            torch.save(full, weights)
            extra = {
                "trained_on": "cached features",
                "features": read_info(cfg.data.train[0].shards),
            }
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
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
    args = ap.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.validate:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0

    import ray
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from spoofdet.data import pipeline as data
    from spoofdet.data.rawboost import rawboost_params
    from spoofdet.tracking import attach_run, log_params, tracking_uri

    storage = storage_root(args.storage, cfg)
    uri = tracking_uri(cfg.mlflow.tracking_uri, storage)
    if (
        not ray.is_initialized()
    ):  # under `ray job submit` the job's runtime_env already reaches every worker,
        in_job = (
            "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
        )  # and Ray refuses to set its env keys a second time
        ray.init(
            runtime_env=None
            if in_job
            else {
                "env_vars": {
                    k: v for k, v in os.environ.items() if k.startswith(("RAY_TRAIN_", "SPOOFDET_"))
                }
            }
        )
    d = cfg.data
    pipeline = data.build_train_dataset(
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

    run_id = attach_run(
        uri=uri,
        experiment=cfg.mlflow.experiment,
        storage=storage,
        name=cfg.name,
        tags={"spoofdet.config": str(args.config)},
    )
    from mlflow.tracking import MlflowClient

    lr, global_batch = effective_lr(cfg)
    params = flatten(to_dict(cfg))
    params.update(
        {
            f"data.rawboost.resolved.{k}": v
            for k, v in to_dict(rawboost_params(**d.rawboost.params)).items()
        }
    )
    params.update(
        {
            "derived.world_size": cfg.scaling.num_workers,
            "derived.global_batch_size": global_batch,
            "derived.effective_lr": lr,
            "derived.storage": storage,
        }
    )
    client = MlflowClient(tracking_uri=uri)
    changed = log_params(client, run_id, params)
    if changed:
        print(
            f"run {cfg.name} resumes with changed settings (tagged changed.*): "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()),
            file=sys.stderr,
        )
    mix = pipeline.mix(0)
    client.log_dict(run_id, mix, "data/mix_epoch0.json")
    print(
        f"run {cfg.name}: MLflow run {run_id} at {uri}; epoch-0 mix "
        + ", ".join(
            f"{k} {sum(v['drawn'].values())} ({100 * v['share']:.1f}%)"
            for k, v in mix["sources"].items()
        ),
        file=sys.stderr,
    )

    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg,
            "clock": pipeline.clock,
            "run_id": run_id,
            "tracking_uri": uri,
            "datasets": list(pipeline.datasets),
            "shares": pipeline.shares,
        },
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
                checkpoint_score_attribute=cfg.train.select if d.dev else "epoch",
                checkpoint_score_order=SELECT_MODE[cfg.train.select] if d.dev else "max",
            ),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
        ),
        datasets=pipeline.datasets,
        dataset_config=DataConfig(datasets_to_split=list(pipeline.datasets)),
    )
    try:
        result = trainer.fit()
    except Exception:
        gone = unreadable_sources(cfg)
        if not gone:
            raise
        traceback.print_exc()  # Ray's account first; the diagnosis last, where a reader of the job logs looks
        print(
            f"train: error: run {cfg.name} stopped because its shards are no longer readable: {'; '.join(gone)} "
            f"(an unmounted or deleted folder?). No model was logged or registered. Make the shards readable "
            f"on every node again and resubmit the same command: the run resumes from its last checkpoint in "
            f"{storage}/{cfg.name}, in MLflow run {run_id}.",
            file=sys.stderr,
        )
        return 1
    summary = finish(result, cfg, run_id=run_id, uri=uri, storage=storage)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"final model (average of epochs {summary['averaged_epochs']}): {summary['final_model']}"
        )
        if "final_dev_eer" in summary:
            print(
                f"dev EER {summary['final_dev_eer']:.2f}%  minDCF {summary['final_dev_min_dcf']:.4f}  "
                f"({summary['final_dev_n']} clips)"
            )
        print(
            f"MLflow: run {run_id} at {uri}; model {summary['model_uri']}"
            + (
                f"; registered {summary['registered']['name']} v{summary['registered']['version']}"
                if "registered" in summary
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
