"""The train recipe: :class:`TrainJobConfig` and its sections, the rules that span sections, and
:func:`load_train_config`, which runs before Ray is touched.

:func:`_check_train` reports problems in a fixed order: each section's own checks
(:mod:`spoofdet.config._checks`) with the cross-section rules between them (shuffle buffer vs
batch size, SAM vs DeepSpeed, dev set vs selection, averaging vs checkpoints kept, precision vs
GPU, cached features vs crops, RawBoost and source folders). Every number is finite (the loader
refuses NaN and infinities) and in its range; names are ones MLflow accepts; with
``check_paths``, the shard folders and the front-end's pretrained weights are on this machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from spoofdet.config._checks import (
    check_data,
    check_deepspeed,
    check_frontend,
    check_init,
    check_model,
    check_names,
    check_optim,
    check_run,
    check_scaling,
    check_schedule,
    sources,
)
from spoofdet.config._load import (
    ConfigError,
    build,
    load_yaml,
    parse_overrides,
    resolve_path,
    set_path,
)
from spoofdet.data import shards
from spoofdet.data.sampling import Mix
from spoofdet.data.transforms import Crop
from spoofdet.errors import Problems

# The fields with a fixed set of values; the loader rejects any other value
# ("data.mix: 'x' is not one of size, balanced, weights"). Mix and Crop belong to the data code.
#: ``model.head``: the heads of ``spoofdet.models.HEADS`` (listed here: validating imports no torch).
Head = Literal[
    "aasist", "xlsr_mamba", "fake_mamba", "nes2net_x", "sls", "aasist_raw", "lcnn", "amsdf"
]
Freeze = Literal["none", "feature_encoder", "all"]
Select = Literal["dev_loss", "dev_eer"]
LrScaling = Literal["none", "linear", "sqrt"]
#: ``optim.schedule``: the learning-rate schedule over optimizer steps (see :class:`OptimConfig`).
LrSchedule = Literal["constant", "cosine", "step"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def head_names() -> list[str]:
    """Valid ``model.head`` values."""
    return list(get_args(Head))


@dataclass
class SourceConfig:
    """A shard folder written by ``spoofdet prepare`` (``shards``), its log name and mix weight."""

    shards: str = ""
    name: str = ""
    weight: float = 1.0


@dataclass
class RawBoostConfig:
    """RawBoost: ``algo`` 0 (off) or 1-11, applied with probability ``p``; ``params`` override
    defaults."""

    algo: int = 0
    p: float = 1.0
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the rows come from and how they are cut.

    ``num_samples`` (>= 400) per crop; ``batch_rows``, ``shuffle_buffer`` and ``epoch_size`` are
    positive. ``max_bad_rows``: a share in [0, 1]; the run fails when more than this share of the
    rows read in an epoch could not be decoded (train rows read by the pipeline, dev rows scored,
    each counted on its own; the skipped rows are logged as ``data/bad_rows_epoch{N}.json``).

    Variable-length training (the seeds crop every clip to ``num_samples``; whole clips keep what
    a fixed crop throws away):

    - ``crop``: ``first`` (the first ``num_samples``, repeat-padded), ``random`` (a random window
      of ``num_samples``) or ``none``: whole clips, each cut at a random offset to
      ``max_seconds`` when longer (so one long clip cannot exhaust a GPU's memory).
    - ``max_seconds``: > 0, the longest clip trained on with ``crop: none`` (required there, and
      only used there: fixed crops are ``num_samples`` long).
    - ``batch_seconds``: > 0 or null. Set: training batches are formed by total audio duration
      (clips added until their seconds would exceed it) instead of ``train.batch_size`` rows, so
      that short clips make large batches and long ones small batches of about the same memory.
      It must hold the longest clip (``max_seconds``, or ``num_samples`` at 16 kHz). Refused with
      ``proportional_batches`` (CSAM fixes each batch's rows per source) and with cached-feature
      sources (``model.frontend: cached``: every row is the same length).
    """

    train: list[SourceConfig] = field(default_factory=list)
    # one dev set, or several (AMSDF selects on three): the selection metric is their mean
    dev: SourceConfig | list[SourceConfig] | None = None
    mix: Mix = "size"
    class_balance: bool = False
    epoch_size: int | None = None
    num_samples: int = 64_600
    crop: Crop = "first"
    rawboost: RawBoostConfig = field(default_factory=RawBoostConfig)
    dev_rawboost: bool = False
    batch_rows: int = 16
    shuffle_buffer: int = 256
    # every batch holds each source in proportion to its share (CSAM)
    proportional_batches: bool = False
    max_bad_rows: float = 0.001
    max_seconds: float | None = None
    batch_seconds: float | None = None


def dev_sources(d: DataConfig) -> list[SourceConfig]:
    """The dev sets of ``data.dev`` as a list: none, one, or several (each scored on its own;
    with several, ``dev_loss`` / ``dev_eer`` / ``dev_min_dcf`` are the means over the sets)."""
    if d.dev is None:
        return []
    return list(d.dev) if isinstance(d.dev, list) else [d.dev]


def dev_name(src: SourceConfig) -> str:
    """A dev set's name in metric keys: ``name``, else its folder's name."""
    return src.name or Path(src.shards).name


@dataclass
class ModelConfig:
    """The detector: ``frontend`` (a name of ``spoofdet.models.frontend``, ``logspec``,
    ``waveform``, ``codecfake_mel``, ``cached``, or a local ``save_pretrained`` folder) + ``head``.
    A pretrained front-end must be on this machine before Ray starts: a local folder with
    ``config.json``, or a hub name already in the Hugging Face cache (``hf download REPO``)."""

    head: Head = "aasist"
    frontend: str = "xlsr_300m"
    frontend_layer: int | str | None = None
    freeze: Freeze = "none"
    gradient_checkpointing: bool = False
    n_logits: int = 2
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    frontend_kwargs: dict[str, Any] = field(default_factory=dict)
    # FILE.pth (spoofdet or a seed's published checkpoint) | models:/... | DIR
    init_from: str | None = None
    init_seed: str | None = None  # which seed's layout init_from is in (default: found by trying)


@dataclass
class OptimConfig:
    """Adam: ``lr`` > 0, ``weight_decay`` >= 0, ``betas`` in [0, 1), ``class_weights`` [spoof,
    bona fide] >= 0 and not both 0, ``grad_clip`` > 0 or null, ``sam_rho`` >= 0 (0 = no SAM).
    Every number must be finite.

    ``lr`` is for one micro-batch of ``train.batch_size``; ``lr_scaling`` (linear, sqrt) scales it
    by the global batch (batch size x workers x ``train.grad_accum_steps``) over that.

    The schedule multiplies the scaled ``lr`` per optimizer step (a step after gradient
    accumulation; a skipped, non-finite step does not count), as the seeds do:

    - ``schedule``: ``constant`` (the default: the lr throughout), ``cosine`` (from the lr down to
      ``min_lr`` over ``total_steps``, half a cosine: raw AASIST anneals 1e-4 to 5e-6 per step
      over its 100 epochs) or ``step`` (times ``step_gamma`` every ``step_size`` steps:
      Codecfake halves its lr every 2 epochs).
    - ``warmup_steps``: >= 0; the first ones ramp the lr up linearly (step k of W uses
      (k + 1) / W of it), then the schedule runs over the steps after them.
    - ``total_steps``: > 0 or null, the run's length in optimizer steps for ``cosine`` (after
      it: ``min_lr``). A streaming pipeline does not know its epoch's length, so it is given, or
      null: derived as ``train.epochs`` x steps per epoch, where steps per epoch come from
      ``data.epoch_size`` (rows per epoch over the global batch) or ``train.max_steps_per_epoch``
      (the fewer of the two); with neither, ``cosine`` is refused.
    - ``min_lr``: >= 0 and <= ``lr``, the end of ``cosine`` (scaled by ``lr_scaling`` as ``lr``).
    - ``step_size``: > 0, steps between decays (required with ``step``); ``step_gamma`` in (0, 1].
    """

    lr: float = 1e-6
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_scaling: LrScaling = "none"
    class_weights: list[float] = field(default_factory=lambda: [0.1, 0.9])
    grad_clip: float | None = None
    sam_rho: float = 0.0
    schedule: LrSchedule = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None
    min_lr: float = 0.0
    step_size: int | None = None
    step_gamma: float = 0.5


@dataclass
class ScheduleConfig:
    """Epochs, batches, selection and the outcome checks (section ``train``).

    ``max_nonfinite_share``: a share in [0, 1]; the run fails (nothing registered) when more than
    this share of its steps so far had a non-finite loss or gradients (those steps are skipped,
    DeepSpeed's overflow skips included; checked after every epoch). An epoch in which no worker
    trained a step fails the run too. ``max_final_dev_eer``: the run fails when the final
    (averaged) model's dev EER, in %, is at least this (50 = chance); null skips the check.

    ``grad_accum_steps``: >= 1; the optimizer steps once every this many micro-batches of
    ``batch_size`` per worker (gradients summed, each loss scaled by 1/N), so a seed's global batch
    (``batch_size`` x ``scaling.num_workers`` x ``grad_accum_steps``) fits fewer or smaller GPUs.
    Step counts (``steps``, ``max_steps_per_epoch``, ``log_every``, the non-finite share) count
    micro-batches; the lr schedule counts optimizer steps. A last partial cycle of an epoch
    carries on into the next epoch's first step (as DeepSpeed's engine does); invalid with SAM.
    """

    epochs: int = 100
    batch_size: int = 14
    dev_batch_size: int = 8
    max_steps_per_epoch: int | None = None
    max_dev_batches: int | None = None
    patience: int = 7
    select: Select = "dev_loss"
    average_best: int = 5
    log_every: int = 10
    max_nonfinite_share: float = 0.05
    max_final_dev_eer: float | None = 50.0
    grad_accum_steps: int = 1


@dataclass
class DeepSpeedConfig:
    """DeepSpeed: ZeRO ``zero_stage`` 0-2; ``precision`` bf16/fp16 only with ``scaling.use_gpu``."""

    enabled: bool = True
    zero_stage: int = 0
    precision: Precision = "auto"


@dataclass
class ScalingConfig:
    """Ray Train workers (>= 1) and what each reserves: ``cpus_per_worker`` > 0,
    ``gpus_per_worker`` > 0 with ``use_gpu`` (>= 0 without)."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0


@dataclass
class RunConfig:
    """Storage (better from ``--storage``/``$SPOOFDET_STORAGE``), checkpoints kept (>= 1) and
    restarts of a failed worker group (``max_failures``: -1 = forever, else >= 0)."""

    storage_path: str | None = None
    checkpoints_to_keep: int = 5
    max_failures: int = 0


@dataclass
class MLflowConfig:
    """Tracking: ``register_as`` is a registered-model name (letters, digits, ``-``, ``_``, ``.``)
    or null (log the model without registering it)."""

    tracking_uri: str | None = None
    experiment: str = "spoofdet"
    register_as: str | None = None
    system_metrics: bool = True


@dataclass
class TrainJobConfig:
    """Everything ``ray_jobs/train.py`` needs; see ray_jobs/configs/*.yaml for commented
    examples. ``name`` (letters, digits, ``-``, ``_``, ``.``) names the Ray run folder and the
    MLflow run; ``seed`` is an integer in [0, 2**32). ``seeds``: a model family, one run per
    seed (AMSDF's M1-M3): ``spoofdet train`` trains them one after another as runs
    ``<name>-seed<S>`` with ``seed`` = S, each registered as a version of ``mlflow.register_as``
    tagged with the family and its seed (empty: one run)."""

    name: str = ""
    seed: int = 1234
    seeds: list[int] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: ScheduleConfig = field(default_factory=ScheduleConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)


def _check_train(cfg: TrainJobConfig, problems: list[str], check_paths: bool) -> None:
    """Append every problem of ``cfg`` to ``problems``, section by section."""
    d, s = cfg.data, cfg.train
    if not cfg.name:
        problems.append(
            "name: every run needs a name (it is the Ray run name and the MLflow run name)"
        )
    check_names(cfg.name, cfg.mlflow.register_as, cfg.seed, problems)
    for i, seed in enumerate(cfg.seeds):
        if not 0 <= seed < 2**32:
            problems.append(f"seeds[{i}]: an integer in [0, 2**32), got {seed}")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        problems.append(f"seeds: {cfg.seeds} repeats a seed; each member needs its own")
    check_data(d, problems, check_paths)
    _check_cached(cfg, problems, check_paths)
    if d.shuffle_buffer < s.batch_size:
        problems.append(
            f"data.shuffle_buffer ({d.shuffle_buffer}) must be >= train.batch_size ({s.batch_size})"
        )
    check_model(cfg.model, problems)
    check_frontend(cfg.model, problems, check_paths)
    check_init(cfg.model, problems, check_paths)
    check_optim(cfg.optim, problems)
    if cfg.optim.sam_rho > 0 and cfg.deepspeed.enabled:
        problems.append(
            "optim.sam_rho: SAM needs two backward passes per step, which DeepSpeed's engine does "
            "not expose; set deepspeed.enabled=false for SAM/CSAM runs"
        )
    check_schedule(s, problems)
    _check_accumulation_and_schedule(cfg, problems)
    if d.dev is None and (s.select == "dev_eer" or s.patience < s.epochs):
        problems.append(
            "data.dev: model selection and early stopping need a dev set (data.dev.shards)"
        )
    if s.average_best > cfg.run.checkpoints_to_keep:
        problems.append(
            f"train.average_best ({s.average_best}) cannot exceed run.checkpoints_to_keep "
            f"({cfg.run.checkpoints_to_keep}): the checkpoints to average must still exist"
        )
    check_deepspeed(cfg.deepspeed, problems)
    if not cfg.scaling.use_gpu and cfg.deepspeed.precision in ("bf16", "fp16"):
        problems.append(
            f"deepspeed.precision: {cfg.deepspeed.precision} needs scaling.use_gpu=true "
            "(CPU runs are fp32)"
        )
    check_scaling(cfg.scaling, problems)
    check_run(cfg.run, problems)


def steps_per_epoch(cfg: TrainJobConfig) -> int | None:
    """Micro-batches per worker in an epoch as far as the recipe tells: ``data.epoch_size`` rows
    over ``train.batch_size`` x ``scaling.num_workers`` (a last partial batch is dropped; not with
    ``data.batch_seconds``, whose batches vary), capped by ``train.max_steps_per_epoch``; None
    when neither says (a streaming pipeline learns its length only by reading it)."""
    s, d = cfg.train, cfg.data
    known = []
    if d.epoch_size and d.batch_seconds is None and s.batch_size > 0:
        known.append(d.epoch_size // (s.batch_size * max(cfg.scaling.num_workers, 1)))
    if s.max_steps_per_epoch:
        known.append(s.max_steps_per_epoch)
    return min(known) if known else None


def lr_schedule_steps(cfg: TrainJobConfig) -> int | None:
    """The length of ``optim.schedule: cosine`` in optimizer steps: ``optim.total_steps``, else
    ``train.epochs`` x :func:`steps_per_epoch` / ``train.grad_accum_steps``, else None."""
    if cfg.optim.total_steps is not None:
        return cfg.optim.total_steps
    per_epoch = steps_per_epoch(cfg)
    if per_epoch is None or cfg.train.grad_accum_steps < 1:
        return None
    return cfg.train.epochs * per_epoch // cfg.train.grad_accum_steps


def _check_accumulation_and_schedule(cfg: TrainJobConfig, problems: list[str]) -> None:
    """Gradient accumulation vs SAM; the cosine schedule's length is known and outlasts its
    warm-up."""
    o = cfg.optim
    if cfg.train.grad_accum_steps > 1 and o.sam_rho > 0:
        problems.append(
            "train.grad_accum_steps: SAM/CSAM (optim.sam_rho > 0) takes two passes over each "
            "step's whole batch; accumulation is not supported with it, set it to 1"
        )
    if o.schedule != "cosine" or (o.total_steps is not None and o.total_steps <= 0):
        return
    total = lr_schedule_steps(cfg)
    if total is None:
        problems.append(
            "optim.total_steps: schedule cosine needs the run's length in optimizer steps; set "
            "optim.total_steps (epochs x rows per epoch / global batch), or data.epoch_size or "
            "train.max_steps_per_epoch to derive it"
        )
    elif total <= o.warmup_steps:
        what = "optim.total_steps" if o.total_steps is not None else "the derived total steps"
        problems.append(
            f"optim.total_steps: {what} ({total}) must exceed optim.warmup_steps "
            f"({o.warmup_steps}): the cosine runs after the warm-up"
        )


def _check_cached(cfg: TrainJobConfig, problems: list[str], check_paths: bool) -> None:
    """Cached-feature training (``model.frontend: cached``) and its sources
    (``data_prep.features``)."""
    cached = cfg.model.frontend == "cached"
    if cached:
        _check_cached_fields(cfg.data, cfg.model, problems)
    if check_paths:
        _check_feature_folders(cfg.data, cached, problems)


def _check_cached_fields(d: DataConfig, m: ModelConfig, problems: list[str]) -> None:
    """What cannot apply to features computed once on the first ``num_samples``."""
    if d.crop != "first":
        what = "random crops are" if d.crop == "random" else f"crop {d.crop} is"
        problems.append(
            f"data.crop: {what} invalid on cached-feature sources (model.frontend=cached: "
            "features were computed once on the first num_samples); use crop: first"
        )
    if d.batch_seconds is not None:
        problems.append(
            "data.batch_seconds: invalid on cached-feature sources (model.frontend=cached: every "
            "row is num_samples long); set it to null and use train.batch_size"
        )
    if d.rawboost.algo != 0:
        problems.append(
            "data.rawboost.algo: RawBoost is invalid on cached-feature sources (model.frontend="
            "cached: no waveform left to augment); set it to 0"
        )
    if d.dev_rawboost:
        problems.append(
            "data.dev_rawboost: invalid with model.frontend=cached (the dev features are fixed)"
        )
    if m.frontend_layer is not None:
        problems.append(
            "model.frontend_layer: leave null with model.frontend=cached (the layer is recorded in "
            "the sources' features.json)"
        )
    if m.freeze != "none" or m.gradient_checkpointing:
        problems.append(
            "model.freeze: leave 'none' (and gradient_checkpointing false) with model.frontend="
            "cached: the front-end already ran, only the head trains"
        )


def _check_feature_folders(d: DataConfig, cached: bool, problems: list[str]) -> None:
    """Finished local sources hold features exactly when training on cached features."""
    from spoofdet.data import features as feature_cache

    for where, src in sources(d):
        if (
            not src.shards
            or "://" in src.shards
            or not shards.has_metadata(resolve_path(src.shards))
        ):
            continue
        folder = resolve_path(src.shards)
        has = feature_cache.is_feature_folder(folder)
        if has and not cached:
            problems.append(
                f"{where}.shards: {folder} holds cached features (features.json); train on it with "
                f"model.frontend=cached, or point at the audio shards"
            )
        elif cached and not has:
            problems.append(
                f"{where}.shards: model.frontend=cached needs feature folders written by "
                f"`python -m data_prep.features`, but {folder} has no features.json"
            )
        elif has:
            try:
                info = feature_cache.read_info(folder)
            except feature_cache.FeatureError as exc:
                problems.append(f"{where}.shards: {exc}")
                continue
            if info["num_samples"] != d.num_samples:
                problems.append(
                    f"data.num_samples: {d.num_samples}, but the features in {where}.shards were "
                    f"computed on {info['num_samples']} samples; "
                    f"set data.num_samples={info['num_samples']}"
                )


def load_train_config(
    path: str | os.PathLike, overrides: list[str] | None = None, *, check_paths: bool = True
) -> TrainJobConfig:
    """Load, override and validate a train recipe.

    Args:
        path: the YAML file.
        overrides: ``key=value`` strings (dotted keys; list items by index).
        check_paths: also check that shard folders exist (off for validating shipped recipes).

    Raises:
        ConfigError: listing every problem at once.
    """
    tree = load_yaml(path)
    problems = Problems()
    for key, value in parse_overrides(overrides or []).items():
        set_path(tree, key, value, problems)
    cfg = build(TrainJobConfig, tree, "", problems)
    reported = {p.split(":", 1)[0] for p in problems}
    semantic = Problems()
    # also when some values were malformed: report everything at once, one message per field
    _check_train(cfg, semantic, check_paths)
    problems.extend(p for p in semantic if p.split(":", 1)[0] not in reported)
    if problems:
        raise ConfigError(problems, str(path))
    for src in cfg.data.train + dev_sources(cfg.data):
        if "://" not in src.shards:  # workers run elsewhere: hand them absolute paths
            src.shards = str(resolve_path(src.shards))
    return cfg
