"""The checks of the train recipe's sections, one function each; a problem is appended, never
raised. Cross-section rules and the loader are in :mod:`spoofdet.config.train`; the fields with a
fixed set of values are ``Literal`` types there, checked once by the loader
(:func:`spoofdet.config._load.build`)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from spoofdet.config._load import resolve_path
from spoofdet.data import shards

if TYPE_CHECKING:  # annotations only: train.py imports this module
    from spoofdet.config.train import (
        DataConfig,
        DeepSpeedConfig,
        ModelConfig,
        OptimConfig,
        RawBoostConfig,
        RunConfig,
        ScalingConfig,
        ScheduleConfig,
        SourceConfig,
    )


def sources(d: DataConfig) -> list[tuple[str, SourceConfig]]:
    """Every source with its config path: ``data.train[i]``, then ``data.dev``."""
    return [(f"data.train[{i}]", src) for i, src in enumerate(d.train)] + (
        [("data.dev", d.dev)] if d.dev else []
    )


def not_one_of(where: str, value: Any, valid: tuple[str, ...]) -> str:
    return f"{where}: {value!r} is not one of {', '.join(valid)}"


def check_data(d: DataConfig, problems: list[str], check_paths: bool) -> None:
    if not d.train:
        problems.append("data.train: list at least one shard folder (- shards: PATH)")
    for where, src in sources(d):
        if not src.shards:
            problems.append(f"{where}.shards: give the folder written by `spoofdet prepare --out`")
        elif check_paths and "://" not in src.shards:
            folder = resolve_path(src.shards)
            if not shards.has_metadata(folder):
                problems.append(
                    f"{where}.shards: {folder} holds no finished shard job (no {shards.METADATA_FILE}); "
                    f"run `spoofdet prepare CORPUS --root ... --out {src.shards}` first"
                )
        if src.weight < 0:
            problems.append(f"{where}.weight: must be >= 0, got {src.weight}")
    if d.num_samples < 400:
        problems.append(
            f"data.num_samples: {d.num_samples} is shorter than one XLS-R frame (400 samples)"
        )
    check_rawboost(d.rawboost, problems)
    if d.epoch_size is not None and d.epoch_size <= 0:
        problems.append(f"data.epoch_size: must be positive, got {d.epoch_size}")
    for name in ("batch_rows", "shuffle_buffer"):
        if getattr(d, name) <= 0:
            problems.append(f"data.{name}: must be positive, got {getattr(d, name)}")


def check_rawboost(rb: RawBoostConfig, problems: list[str]) -> None:
    from spoofdet.data.rawboost import ALGORITHMS, PARAM_NAMES

    if rb.algo not in ALGORITHMS:
        problems.append(f"data.rawboost.algo: {rb.algo} is not one of {sorted(ALGORITHMS)}")
    if not 0 <= rb.p <= 1:
        problems.append(f"data.rawboost.p: must lie in [0, 1], got {rb.p}")
    for key in rb.params:
        if key not in PARAM_NAMES:
            close = difflib.get_close_matches(key, PARAM_NAMES, n=1)
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(PARAM_NAMES)})"
            )
            problems.append(f"data.rawboost.params.{key}: unknown RawBoost parameter" + hint)


def check_model(m: ModelConfig, problems: list[str]) -> None:
    if m.n_logits not in (1, 2):
        problems.append(f"model.n_logits: 1 or 2, got {m.n_logits}")
    if isinstance(m.frontend_layer, str) and m.frontend_layer not in ("weighted", "all"):
        problems.append(
            f"model.frontend_layer: an integer layer index, 'weighted', 'all' or null, "
            f"got {m.frontend_layer!r}"
        )


def check_init(m: ModelConfig, problems: list[str], check_paths: bool) -> None:
    """``model.init_from`` / ``model.init_seed``: the source exists and the seed fits the head."""
    if m.init_seed is not None:
        from spoofdet.models.checkpoints import SEEDS  # only when a seed is named: imports torch

        if m.init_from is None:
            problems.append(
                "model.init_seed: set model.init_from to the seed's checkpoint file too"
            )
        if m.init_seed not in SEEDS:
            problems.append(not_one_of("model.init_seed", m.init_seed, tuple(sorted(SEEDS))))
        elif SEEDS[m.init_seed].head != m.head:
            problems.append(
                f"model.init_seed: {m.init_seed} checkpoints hold a {SEEDS[m.init_seed].head!r} "
                f"head, but model.head is {m.head!r}; set model.head={SEEDS[m.init_seed].head}"
            )
    if (
        m.init_from is None
        or not check_paths
        or m.init_from.startswith(("models:/", "runs:/"))
        or "://" in m.init_from
    ):
        return
    path = resolve_path(m.init_from)
    if path.is_dir() and not (path / "model.pt").is_file() and not (path / "MLmodel").is_file():
        problems.append(
            f"model.init_from: {path} is a folder without model.pt or MLmodel; give a model folder, "
            "a checkpoint file or models:/NAME/VERSION"
        )
    elif not path.exists():
        problems.append(
            f"model.init_from: {path} does not exist; give a checkpoint file (.pth), a model folder "
            "or models:/NAME/VERSION"
        )


def check_optim(o: OptimConfig, problems: list[str]) -> None:
    if o.lr <= 0:
        problems.append(f"optim.lr: must be positive, got {o.lr}")
    if o.weight_decay < 0:
        problems.append(f"optim.weight_decay: must be >= 0, got {o.weight_decay}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        problems.append(f"optim.betas: two numbers in [0, 1), got {o.betas}")
    if len(o.class_weights) != 2 or any(w < 0 for w in o.class_weights):
        problems.append(
            f"optim.class_weights: [spoof, bonafide] weights >= 0, got {o.class_weights}"
        )
    if o.sam_rho < 0:
        problems.append(f"optim.sam_rho: must be >= 0 (0 = plain training), got {o.sam_rho}")


def check_schedule(s: ScheduleConfig, problems: list[str]) -> None:
    for name in ("epochs", "batch_size", "dev_batch_size", "patience", "average_best", "log_every"):
        if getattr(s, name) <= 0:
            problems.append(f"train.{name}: must be positive, got {getattr(s, name)}")
    for name in ("max_steps_per_epoch", "max_dev_batches"):
        if getattr(s, name) is not None and getattr(s, name) <= 0:
            problems.append(f"train.{name}: must be positive or null, got {getattr(s, name)}")


def check_deepspeed(ds: DeepSpeedConfig, problems: list[str]) -> None:
    if ds.zero_stage not in (0, 1, 2):
        problems.append(
            "deepspeed.zero_stage: 0, 1 or 2 (stage 3 would shard the averaged weights), "
            f"got {ds.zero_stage}"
        )


def check_scaling(sc: ScalingConfig, problems: list[str]) -> None:
    if sc.num_workers < 1:
        problems.append(f"scaling.num_workers: at least 1, got {sc.num_workers}")
    if sc.cpus_per_worker <= 0:
        problems.append(f"scaling.cpus_per_worker: must be positive, got {sc.cpus_per_worker}")


def check_run(r: RunConfig, problems: list[str]) -> None:
    if r.checkpoints_to_keep < 1:
        problems.append(f"run.checkpoints_to_keep: at least 1, got {r.checkpoints_to_keep}")
    if r.max_failures < -1:
        problems.append(f"run.max_failures: -1 (retry forever) or >= 0, got {r.max_failures}")
