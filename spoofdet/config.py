"""Recipe configs: YAML -> dataclasses, with ``key=value`` overrides, every problem reported at once.

A recipe (``ray_jobs/configs/*.yaml``) says what to train: data sources, model, optimiser,
schedule, DeepSpeed and scaling. Where things live on a cluster (storage roots, the tracking
server) comes from the environment (``SPOOFDET_STORAGE``, ``MLFLOW_TRACKING_URI``) or the command
line, never from a recipe. :func:`load_train_config` runs before Ray is touched, so a typo costs
seconds, not a cluster allocation::

    cfg = load_train_config("ray_jobs/configs/demo.yaml", ["optim.lr=1e-5", "scaling.num_workers=2"])

Validation collects every problem (unknown keys with the closest valid name, wrong types, values
out of range, shard folders that do not exist) into one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Every problem found in a config, one per line."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        super().__init__(
            f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems)
        )


# ----------------------------------------------------------------------------- the train recipe


@dataclass
class SourceConfig:
    """A shard folder written by ``spoofdet prepare`` (``shards``), its log name and mix weight."""

    shards: str = ""
    name: str = ""
    weight: float = 1.0


@dataclass
class RawBoostConfig:
    """RawBoost: ``algo`` 0 (off) or 1-11, applied with probability ``p``; ``params`` override defaults."""

    algo: int = 0
    p: float = 1.0
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class DataConfig:
    train: list[SourceConfig] = field(default_factory=list)
    dev: SourceConfig | None = None
    mix: str = "size"
    class_balance: bool = False
    epoch_size: int | None = None
    num_samples: int = 64_600
    crop: str = "first"
    rawboost: RawBoostConfig = field(default_factory=RawBoostConfig)
    dev_rawboost: bool = False
    batch_rows: int = 16
    shuffle_buffer: int = 256
    proportional_batches: bool = (
        False  # every batch holds each source in proportion to its share (CSAM)
    )


@dataclass
class ModelConfig:
    head: str = "aasist"
    frontend: str = "xlsr_300m"
    frontend_layer: int | str | None = None
    freeze: str = "none"
    gradient_checkpointing: bool = False
    n_logits: int = 2
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    frontend_kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = (
        None  # FILE.pth (spoofdet or a seed's published checkpoint) | models:/... | DIR
    )
    init_seed: str | None = None  # which seed's layout init_from is in (default: found by trying)


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_scaling: str = "none"
    class_weights: list[float] = field(default_factory=lambda: [0.1, 0.9])
    grad_clip: float | None = None
    sam_rho: float = 0.0


@dataclass
class ScheduleConfig:
    epochs: int = 100
    batch_size: int = 14
    dev_batch_size: int = 8
    max_steps_per_epoch: int | None = None
    max_dev_batches: int | None = None
    patience: int = 7
    select: str = "dev_loss"
    average_best: int = 5
    log_every: int = 10


@dataclass
class DeepSpeedConfig:
    enabled: bool = True
    zero_stage: int = 0
    precision: str = "auto"


@dataclass
class ScalingConfig:
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0


@dataclass
class RunConfig:
    storage_path: str | None = None
    checkpoints_to_keep: int = 5
    max_failures: int = 0


@dataclass
class MLflowConfig:
    tracking_uri: str | None = None
    experiment: str = "spoofdet"
    register_as: str | None = None
    system_metrics: bool = True


@dataclass
class TrainJobConfig:
    """Everything ``ray_jobs/train.py`` needs; see ray_jobs/configs/*.yaml for commented examples."""

    name: str = ""
    seed: int = 1234
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: ScheduleConfig = field(default_factory=ScheduleConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)


# ----------------------------------------------------------------------------- generic loading


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-5", "data.train.0.weight=2"]`` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not key=value (e.g. optim.lr=1e-5)")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(
                f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})"
            )
            continue
        out[key.strip()] = value
    if problems:
        raise ConfigError(problems, "command line")
    return out


def _set_path(tree: dict[str, Any], dotted: str, value: Any, problems: list[str]) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and not (part.isdigit() and int(part) < len(node)):
            problems.append(
                f"override {dotted}: no list item {part} in {'.'.join(parts[:i]) or 'the config'} "
                f"(it has {len(node)})"
            )
            return
        nxt = (
            node[int(part)]
            if isinstance(node, list)
            else (node.setdefault(part, {}) if isinstance(node, dict) else None)
        )
        if nxt is None or not isinstance(nxt, (dict, list)):
            problems.append(f"override {dotted}: {'.'.join(parts[: i + 1])} is not a section")
            return
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            problems.append(f"override {dotted}: no list item {last}")
            return
        node[int(last)] = value
    else:
        node[last] = value


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007 - built at run time
    return False, tp


def _convert(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        problems.append(f"{where}: must be set (got null)")
        return None
    tp = inner
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a section (mapping), got {type(value).__name__}")
            return tp()
        return _build(tp, value, where, problems)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            trial: list[str] = []
            got = _convert(value, option, where, trial)
            if not trial:
                return got
        names = " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(tp))
        problems.append(f"{where}: expected {names}, got {value!r}")
        return None
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return []
        return [_convert(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return {}
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true/false, got {value!r}")
        return bool(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
            return 0
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {value!r}")
            return 0.0
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
            return str(value)
        return value
    return value


def _build(cls: type, values: dict[str, Any], where: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(names)})"
            problems.append(f"{where + '.' if where else ''}{key}: unknown key{hint}")
    kwargs = {
        name: _convert(values[name], hints[name], f"{where + '.' if where else ''}{name}", problems)
        for name in names
        if name in values
    }
    return cls(**kwargs)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"no such file: {path}"], str(path))
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark, start = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        if start is not None and mark is not None and start.line != mark.line:
            line += f" (in the block starting at line {start.line + 1})"
        raise ConfigError(
            [f"not valid YAML at{line}: {getattr(exc, 'problem', exc)}"], str(path)
        ) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(["the top level must be a mapping of sections"], str(path))
    return tree


# ----------------------------------------------------------------------------- train config

MIXES = ("size", "balanced", "weights")
CROPS = ("first", "random")
FREEZE = ("none", "feature_encoder", "all")
SELECT = ("dev_loss", "dev_eer")
LR_SCALING = ("none", "linear", "sqrt")
PRECISION = ("auto", "fp32", "bf16", "fp16")


def _check_train(cfg: TrainJobConfig, problems: list[str], check_paths: bool) -> None:
    from spoofdet.data.rawboost import ALGORITHMS, PARAM_NAMES

    d, m, o, s, ds, sc, r = (
        cfg.data,
        cfg.model,
        cfg.optim,
        cfg.train,
        cfg.deepspeed,
        cfg.scaling,
        cfg.run,
    )
    if not cfg.name:
        problems.append(
            "name: every run needs a name (it is the Ray run name and the MLflow run name)"
        )
    if not d.train:
        problems.append("data.train: list at least one shard folder (- shards: PATH)")
    sources = [(f"data.train[{i}]", src) for i, src in enumerate(d.train)] + (
        [("data.dev", d.dev)] if d.dev else []
    )
    for where, src in sources:
        if not src.shards:
            problems.append(f"{where}.shards: give the folder written by `spoofdet prepare --out`")
        elif check_paths and "://" not in src.shards:
            folder = resolve_path(src.shards)
            if not (folder / "metadata.parquet").is_file():
                problems.append(
                    f"{where}.shards: {folder} holds no finished shard job (no metadata.parquet); "
                    f"run `spoofdet prepare CORPUS --root ... --out {src.shards}` first"
                )
        if src.weight < 0:
            problems.append(f"{where}.weight: must be >= 0, got {src.weight}")
    if d.mix not in MIXES:
        problems.append(f"data.mix: {d.mix!r} is not one of {', '.join(MIXES)}")
    if d.crop not in CROPS:
        problems.append(f"data.crop: {d.crop!r} is not one of {', '.join(CROPS)}")
    if d.num_samples < 400:
        problems.append(
            f"data.num_samples: {d.num_samples} is shorter than one XLS-R frame (400 samples)"
        )
    if d.rawboost.algo not in ALGORITHMS:
        problems.append(f"data.rawboost.algo: {d.rawboost.algo} is not one of {sorted(ALGORITHMS)}")
    if not 0 <= d.rawboost.p <= 1:
        problems.append(f"data.rawboost.p: must lie in [0, 1], got {d.rawboost.p}")
    for key in d.rawboost.params:
        if key not in PARAM_NAMES:
            close = difflib.get_close_matches(key, PARAM_NAMES, n=1)
            problems.append(
                f"data.rawboost.params.{key}: unknown RawBoost parameter"
                + (
                    f" (did you mean {close[0]!r}?)"
                    if close
                    else f" (valid: {', '.join(PARAM_NAMES)})"
                )
            )
    if d.epoch_size is not None and d.epoch_size <= 0:
        problems.append(f"data.epoch_size: must be positive, got {d.epoch_size}")
    for name in ("batch_rows", "shuffle_buffer"):
        if getattr(d, name) <= 0:
            problems.append(f"data.{name}: must be positive, got {getattr(d, name)}")
    _check_cached(cfg, problems, check_paths)
    if d.shuffle_buffer < s.batch_size:
        problems.append(
            f"data.shuffle_buffer ({d.shuffle_buffer}) must be >= train.batch_size ({s.batch_size})"
        )
    if m.head not in head_names():
        problems.append(f"model.head: {m.head!r} is not one of {', '.join(head_names())}")
    if m.freeze not in FREEZE:
        problems.append(f"model.freeze: {m.freeze!r} is not one of {', '.join(FREEZE)}")
    if m.n_logits not in (1, 2):
        problems.append(f"model.n_logits: 1 or 2, got {m.n_logits}")
    if isinstance(m.frontend_layer, str) and m.frontend_layer not in ("weighted", "all"):
        problems.append(
            f"model.frontend_layer: an integer layer index, 'weighted', 'all' or null, "
            f"got {m.frontend_layer!r}"
        )
    _check_init(m, problems, check_paths)
    if o.lr <= 0:
        problems.append(f"optim.lr: must be positive, got {o.lr}")
    if o.weight_decay < 0:
        problems.append(f"optim.weight_decay: must be >= 0, got {o.weight_decay}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        problems.append(f"optim.betas: two numbers in [0, 1), got {o.betas}")
    if o.lr_scaling not in LR_SCALING:
        problems.append(f"optim.lr_scaling: {o.lr_scaling!r} is not one of {', '.join(LR_SCALING)}")
    if len(o.class_weights) != 2 or any(w < 0 for w in o.class_weights):
        problems.append(
            f"optim.class_weights: [spoof, bonafide] weights >= 0, got {o.class_weights}"
        )
    if o.sam_rho < 0:
        problems.append(f"optim.sam_rho: must be >= 0 (0 = plain training), got {o.sam_rho}")
    if o.sam_rho > 0 and cfg.deepspeed.enabled:
        problems.append(
            "optim.sam_rho: SAM needs two backward passes per step, which DeepSpeed's engine does "
            "not expose; set deepspeed.enabled=false for SAM/CSAM runs"
        )
    for name in ("epochs", "batch_size", "dev_batch_size", "patience", "average_best", "log_every"):
        if getattr(s, name) <= 0:
            problems.append(f"train.{name}: must be positive, got {getattr(s, name)}")
    for name in ("max_steps_per_epoch", "max_dev_batches"):
        if getattr(s, name) is not None and getattr(s, name) <= 0:
            problems.append(f"train.{name}: must be positive or null, got {getattr(s, name)}")
    if s.select not in SELECT:
        problems.append(f"train.select: {s.select!r} is not one of {', '.join(SELECT)}")
    if d.dev is None and (s.select == "dev_eer" or s.patience < s.epochs):
        problems.append(
            "data.dev: model selection and early stopping need a dev set (data.dev.shards)"
        )
    if s.average_best > r.checkpoints_to_keep:
        problems.append(
            f"train.average_best ({s.average_best}) cannot exceed run.checkpoints_to_keep "
            f"({r.checkpoints_to_keep}): the checkpoints to average must still exist"
        )
    if ds.zero_stage not in (0, 1, 2):
        problems.append(
            f"deepspeed.zero_stage: 0, 1 or 2 (stage 3 would shard the averaged weights), got {ds.zero_stage}"
        )
    if ds.precision not in PRECISION:
        problems.append(
            f"deepspeed.precision: {ds.precision!r} is not one of {', '.join(PRECISION)}"
        )
    if not sc.use_gpu and ds.precision in ("bf16", "fp16"):
        problems.append(
            f"deepspeed.precision: {ds.precision} needs scaling.use_gpu=true (CPU runs are fp32)"
        )
    if sc.num_workers < 1:
        problems.append(f"scaling.num_workers: at least 1, got {sc.num_workers}")
    if sc.cpus_per_worker <= 0:
        problems.append(f"scaling.cpus_per_worker: must be positive, got {sc.cpus_per_worker}")
    if r.checkpoints_to_keep < 1:
        problems.append(f"run.checkpoints_to_keep: at least 1, got {r.checkpoints_to_keep}")
    if r.max_failures < -1:
        problems.append(f"run.max_failures: -1 (retry forever) or >= 0, got {r.max_failures}")


def _check_cached(cfg: TrainJobConfig, problems: list[str], check_paths: bool) -> None:
    """Cached-feature training (``model.frontend: cached``) and its sources (``data_prep.features``)."""
    from spoofdet.data import features as feature_cache

    d, m = cfg.data, cfg.model
    cached = m.frontend == "cached"
    if cached:
        if d.crop != "first":
            problems.append(
                "data.crop: random crops are invalid on cached-feature sources (model.frontend=cached: "
                "features were computed once on the first num_samples); use crop: first"
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
    if not check_paths:
        return
    sources = [(f"data.train[{i}]", src) for i, src in enumerate(d.train)] + (
        [("data.dev", d.dev)] if d.dev else []
    )
    for where, src in sources:
        if (
            not src.shards
            or "://" in src.shards
            or not (resolve_path(src.shards) / "metadata.parquet").is_file()
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
                    f"computed on {info['num_samples']} samples; set data.num_samples={info['num_samples']}"
                )


def head_names() -> list[str]:
    """Valid ``model.head`` values (kept here so validating a config does not import torch)."""
    return ["aasist", "xlsr_mamba", "fake_mamba", "nes2net_x", "sls", "aasist_raw", "lcnn"]


def _check_init(m: ModelConfig, problems: list[str], check_paths: bool) -> None:
    """``model.init_from`` / ``model.init_seed``: the source exists and the seed fits the head."""
    if m.init_seed is not None:
        from spoofdet.models.checkpoints import SEEDS  # only when a seed is named: it imports torch

        if m.init_from is None:
            problems.append(
                "model.init_seed: set model.init_from to the seed's checkpoint file too"
            )
        if m.init_seed not in SEEDS:
            problems.append(
                f"model.init_seed: {m.init_seed!r} is not one of {', '.join(sorted(SEEDS))}"
            )
        elif SEEDS[m.init_seed].head != m.head:
            problems.append(
                f"model.init_seed: {m.init_seed} checkpoints hold a {SEEDS[m.init_seed].head!r} head, "
                f"but model.head is {m.head!r}; set model.head={SEEDS[m.init_seed].head}"
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


def resolve_path(path: str) -> Path:
    """A local config path; relative paths are relative to the working directory (the repo root
    with ``ray job submit --working-dir .``)."""
    return Path(os.path.expanduser(path)).resolve()


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
    problems: list[str] = []
    for key, value in parse_overrides(overrides or []).items():
        _set_path(tree, key, value, problems)
    cfg = _build(TrainJobConfig, tree, "", problems)
    reported = {p.split(":", 1)[0] for p in problems}
    semantic: list[str] = []
    _check_train(
        cfg, semantic, check_paths
    )  # also when some values were malformed: report everything at once
    problems += [p for p in semantic if p.split(":", 1)[0] not in reported]
    if problems:
        raise ConfigError(problems, str(path))
    for src in cfg.data.train + ([cfg.data.dev] if cfg.data.dev else []):
        if "://" not in src.shards:  # workers run elsewhere: hand them absolute paths
            src.shards = str(resolve_path(src.shards))
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (for MLflow params and checkpoints)."""
    return dataclasses.asdict(cfg)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists of sections are indexed: ``data.train.0.shards``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = value
    return out
