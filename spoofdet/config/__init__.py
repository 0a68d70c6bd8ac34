"""Recipe configs: YAML -> dataclasses, with ``key=value`` overrides, every problem reported at once.

A recipe (``ray_jobs/configs/*.yaml``) says what to train: data sources, model, optimiser,
schedule, DeepSpeed and scaling. Where things live on a cluster (storage roots, the tracking
server) comes from the environment (``SPOOFDET_STORAGE``, ``MLFLOW_TRACKING_URI``) or the command
line, never from a recipe. :func:`load_train_config` runs before Ray is touched, so a typo costs
seconds, not a cluster allocation::

    cfg = load_train_config("ray_jobs/configs/demo.yaml", ["optim.lr=1e-5", "scaling.num_workers=2"])

Generic loading is in :mod:`spoofdet.config._load`, the recipe's sections and rules in
:mod:`spoofdet.config.train`; one :class:`ConfigError` lists every problem.
"""

from typing import get_args

from spoofdet.config._checks import sources
from spoofdet.config._load import (
    ConfigError,
    flatten,
    load_yaml,
    parse_overrides,
    resolve_path,
    to_dict,
)
from spoofdet.config.train import (
    DataConfig,
    DeepSpeedConfig,
    Freeze,
    Head,
    LrScaling,
    LrSchedule,
    MLflowConfig,
    ModelConfig,
    OptimConfig,
    Precision,
    RawBoostConfig,
    RunConfig,
    ScalingConfig,
    ScheduleConfig,
    Select,
    SourceConfig,
    TrainJobConfig,
    dev_name,
    dev_sources,
    head_names,
    load_train_config,
    lr_schedule_steps,
    steps_per_epoch,
)
from spoofdet.data.sampling import MIXES, Mix
from spoofdet.data.transforms import CROPS, Crop

# the allowed values, derived from the Literal types of the fields (one place for each set)
FREEZE: tuple[str, ...] = get_args(Freeze)
SELECT: tuple[str, ...] = get_args(Select)
LR_SCALING: tuple[str, ...] = get_args(LrScaling)
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)
PRECISION: tuple[str, ...] = get_args(Precision)

__all__ = [
    "ConfigError",
    "load_train_config",
    "TrainJobConfig",
    "SourceConfig",
    "RawBoostConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "DeepSpeedConfig",
    "ScalingConfig",
    "RunConfig",
    "MLflowConfig",
    "load_yaml",
    "parse_overrides",
    "resolve_path",
    "to_dict",
    "flatten",
    "head_names",
    "dev_sources",
    "sources",
    "dev_name",
    "lr_schedule_steps",
    "steps_per_epoch",
    "MIXES",
    "CROPS",
    "FREEZE",
    "SELECT",
    "LR_SCALING",
    "LR_SCHEDULES",
    "PRECISION",
    "Mix",
    "Crop",
    "Head",
    "Freeze",
    "Select",
    "LrScaling",
    "LrSchedule",
    "Precision",
]
