"""The checks of the train recipe's sections, one function each; a problem is appended, never
raised. Cross-section rules and the loader are in :mod:`spoofdet.config.train`; the fields with a
fixed set of values are ``Literal`` types there, checked once by the loader
(:func:`spoofdet.config._load.build`)."""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spoofdet.config._load import resolve_path
from spoofdet.data import shards
from spoofdet.data.schema import SAMPLE_RATE

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
    """Every source with its config path: ``data.train[i]``, then ``data.dev`` (``data.dev[i]``
    when several dev sets are listed)."""
    if isinstance(d.dev, list):
        dev = [(f"data.dev[{i}]", src) for i, src in enumerate(d.dev)]
    else:
        dev = [("data.dev", d.dev)] if d.dev else []
    return [(f"data.train[{i}]", src) for i, src in enumerate(d.train)] + dev


#: A name MLflow registers a model under, and a run name (a folder name in the run storage): letters,
#: digits, ``-``, ``_`` and ``.``, not starting with ``.`` or ``-`` (no ``/``, ``:``, ``@`` or spaces).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,255}")
#: Hub files, one of which a cached front-end needs besides ``config.json``.
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
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
            else:
                try:  # a deleted, stray or truncated shard: caught here, not hours into the run
                    shards.checked_shard_files(folder)
                except shards.ShardError as exc:
                    problems.append(f"{where}.shards: {exc}")
        if src.weight < 0:
            problems.append(f"{where}.weight: must be >= 0, got {src.weight}")
    if isinstance(d.dev, list):
        check_dev_list(d.dev, problems)
    weights = [src.weight for src in d.train]
    if weights and all(map(math.isfinite, weights)) and not any(w > 0 for w in weights):
        problems.append("data.train: at least one source needs a weight > 0")
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
    if not 0 <= d.max_bad_rows <= 1:
        problems.append(
            f"data.max_bad_rows: a share of an epoch's rows, in [0, 1], got {d.max_bad_rows}"
        )
    check_lengths(d, problems)


def check_dev_list(devs: list[SourceConfig], problems: list[str]) -> None:
    """Several dev sets: at least one, each named uniquely (the names key their metrics)."""
    if not devs:
        problems.append("data.dev: an empty list; give one dev set, several, or leave it out")
    names: dict[str, int] = {}
    for i, src in enumerate(devs):
        name = src.name or Path(src.shards).name
        if name in names:
            problems.append(
                f"data.dev[{i}].name: {name!r} is also data.dev[{names[name]}]'s name; every dev "
                "set needs its own name (it keys the dev.<name>.eer metrics)"
            )
        names.setdefault(name, i)


def check_lengths(d: DataConfig, problems: list[str]) -> None:
    """``data.crop: none``, ``data.max_seconds`` and ``data.batch_seconds`` (variable length)."""
    for name in ("max_seconds", "batch_seconds"):
        value = getattr(d, name)
        if value is not None and not value > 0:
            problems.append(f"data.{name}: must be positive (seconds) or null, got {value}")
    if d.crop == "none" and d.max_seconds is None:
        problems.append(
            "data.max_seconds: crop none trains on whole clips and needs the longest one allowed "
            "(longer clips are cut at random to it), e.g. data.max_seconds=10"
        )
    elif d.crop != "none" and d.max_seconds is not None:
        problems.append(
            f"data.max_seconds: only used with data.crop=none (crop {d.crop} cuts every clip to "
            "data.num_samples); set it to null or use crop none"
        )
    if d.batch_seconds is not None and d.proportional_batches:
        problems.append(
            "data.batch_seconds: invalid with data.proportional_batches (CSAM fixes each batch's "
            "rows per source); set one of them off"
        )
    longest = d.max_seconds if d.crop == "none" else d.num_samples / SAMPLE_RATE
    if d.batch_seconds is not None and longest is not None and 0 < d.batch_seconds < longest:
        where = "data.max_seconds" if d.crop == "none" else f"data.num_samples at {SAMPLE_RATE} Hz"
        problems.append(
            f"data.batch_seconds: {d.batch_seconds} cannot hold the longest clip ({longest:g} s, "
            f"{where}); raise it to at least that"
        )


def check_rawboost(rb: RawBoostConfig, problems: list[str]) -> None:
    from spoofdet.data.rawboost import ALGORITHMS, PARAM_NAMES, rawboost_params

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
    if all(key in PARAM_NAMES for key in rb.params):
        try:  # the values' own rules (finite, min <= max, ranges), before Ray ever builds them
            rawboost_params(**rb.params)
        except (TypeError, ValueError) as exc:
            problems.append(f"data.rawboost.params: {exc}")


def check_model(m: ModelConfig, problems: list[str]) -> None:
    if m.n_logits not in (1, 2):
        problems.append(f"model.n_logits: 1 or 2, got {m.n_logits}")
    if isinstance(m.frontend_layer, str) and m.frontend_layer not in ("weighted", "all"):
        problems.append(
            f"model.frontend_layer: an integer layer index, 'weighted', 'all' or null, "
            f"got {m.frontend_layer!r}"
        )
    if isinstance(m.frontend_layer, int) and m.frontend_layer < 0:
        problems.append(f"model.frontend_layer: a layer index >= 0, got {m.frontend_layer}")


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
    elif not any(w > 0 for w in o.class_weights):  # 0/0: every loss would be NaN
        problems.append(
            f"optim.class_weights: at least one weight must be > 0, got {o.class_weights}"
        )
    if o.grad_clip is not None and o.grad_clip <= 0:
        problems.append(
            f"optim.grad_clip: must be positive or null (no clipping), got {o.grad_clip}"
        )
    if o.sam_rho < 0:
        problems.append(f"optim.sam_rho: must be >= 0 (0 = plain training), got {o.sam_rho}")
    check_lr_schedule(o, problems)


def check_lr_schedule(o: OptimConfig, problems: list[str]) -> None:
    """The schedule's own fields, one message per field; its length (``optim.total_steps`` or one
    derived from the data and ``train`` sections) is a cross-section rule in
    :mod:`spoofdet.config.train`."""
    if o.warmup_steps < 0:
        problems.append(f"optim.warmup_steps: must be >= 0 (0 = no warm-up), got {o.warmup_steps}")
    uses = {"total_steps": "cosine", "min_lr": "cosine", "step_size": "step"}
    defaults = {"total_steps": None, "min_lr": 0.0, "step_size": None}
    if o.total_steps is not None and o.total_steps <= 0:
        problems.append(
            f"optim.total_steps: must be positive or null (derived), got {o.total_steps}"
        )
    if o.min_lr < 0 or (math.isfinite(o.lr) and 0 < o.lr < o.min_lr):
        problems.append(f"optim.min_lr: the end of the cosine, in [0, optim.lr], got {o.min_lr}")
    if o.step_size is not None and o.step_size <= 0:
        problems.append(f"optim.step_size: must be positive (optimizer steps), got {o.step_size}")
    elif o.schedule == "step" and o.step_size is None:
        problems.append(
            "optim.step_size: schedule step needs the optimizer steps between decays, e.g. "
            "2 epochs' worth (rows per epoch / global batch x 2)"
        )
    if not 0 < o.step_gamma <= 1:
        problems.append(f"optim.step_gamma: the decay factor, in (0, 1], got {o.step_gamma}")
    reported = {p.split(":", 1)[0] for p in problems}
    for name, schedule in uses.items():
        if (
            o.schedule != schedule
            and getattr(o, name) != defaults[name]
            and f"optim.{name}" not in reported
        ):
            problems.append(
                f"optim.{name}: only used by schedule {schedule}, not {o.schedule}; leave it "
                f"unset ({defaults[name]}) or set optim.schedule={schedule}"
            )


def check_schedule(s: ScheduleConfig, problems: list[str]) -> None:
    for name in ("epochs", "batch_size", "dev_batch_size", "patience", "average_best", "log_every"):
        if getattr(s, name) <= 0:
            problems.append(f"train.{name}: must be positive, got {getattr(s, name)}")
    for name in ("max_steps_per_epoch", "max_dev_batches"):
        if getattr(s, name) is not None and getattr(s, name) <= 0:
            problems.append(f"train.{name}: must be positive or null, got {getattr(s, name)}")
    if s.grad_accum_steps < 1:
        problems.append(
            f"train.grad_accum_steps: at least 1 (1 = no accumulation), got {s.grad_accum_steps}"
        )
    if not 0 <= s.max_nonfinite_share <= 1:
        problems.append(
            f"train.max_nonfinite_share: a share of the steps, in [0, 1], got {s.max_nonfinite_share}"
        )
    if s.max_final_dev_eer is not None and not 0 < s.max_final_dev_eer <= 100:
        problems.append(
            f"train.max_final_dev_eer: an EER in % in (0, 100] (50 = chance) or null, "
            f"got {s.max_final_dev_eer}"
        )


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
    if sc.gpus_per_worker < 0 or (sc.use_gpu and sc.gpus_per_worker == 0):
        need = "positive with scaling.use_gpu=true" if sc.use_gpu else ">= 0"
        problems.append(f"scaling.gpus_per_worker: must be {need}, got {sc.gpus_per_worker}")


def check_run(r: RunConfig, problems: list[str]) -> None:
    if r.checkpoints_to_keep < 1:
        problems.append(f"run.checkpoints_to_keep: at least 1, got {r.checkpoints_to_keep}")
    if r.max_failures < -1:
        problems.append(f"run.max_failures: -1 (retry forever) or >= 0, got {r.max_failures}")


def check_names(name: str, register_as: str | None, seed: int, problems: list[str]) -> None:
    """``name`` (Ray run folder, MLflow run name), ``mlflow.register_as`` and ``seed``."""
    if name and not NAME.fullmatch(name):
        problems.append(
            f"name: {name!r} must be letters, digits, '-', '_' or '.' (it names the run's folder)"
        )
    if register_as is not None and not NAME.fullmatch(register_as):
        problems.append(
            f"mlflow.register_as: {register_as!r} is not a registered-model name MLflow accepts: "
            "use letters, digits, '-', '_' and '.' (no '/', ':', '@' or spaces), e.g. "
            f"{re.sub(r'[^A-Za-z0-9._-]+', '-', register_as).strip('.-') or 'spoofdet-model'}"
        )
    if not 0 <= seed < 2**32:
        problems.append(f"seed: an integer in [0, 2**32), got {seed}")


def check_frontend(m: ModelConfig, problems: list[str], check_paths: bool) -> None:
    """A front-end that needs pretrained weights is on this machine before Ray starts: a local
    folder holding ``config.json``, or a hub name whose config and weights the Hugging Face cache
    holds. Workers would otherwise fail (or download gigabytes each) after the cluster started."""
    name = m.frontend
    if not check_paths or not name or name == "cached":
        return
    if "/" in name or name.startswith((".", "~")):  # a path (a hub id is only a known short name)
        check_frontend_folder(name, problems)
        return
    from spoofdet.models import PARAMETER_FREE_FRONTENDS  # imported only here: torch

    if name in PARAMETER_FREE_FRONTENDS:
        return
    from spoofdet.models.frontend import HUB_IDS, RANDOM_INIT  # transformers: SSL names only

    if name in RANDOM_INIT:
        return
    if name not in HUB_IDS:
        if resolve_path(name).is_dir():
            check_frontend_folder(name, problems)
            return
        known = sorted([*PARAMETER_FREE_FRONTENDS, *RANDOM_INIT, *HUB_IDS, "cached"])
        problems.append(
            f"model.frontend: {name!r} is not a known front-end ({', '.join(known)}) nor a local "
            "folder holding config.json"
        )
    elif not hub_cached(HUB_IDS[name]):
        problems.append(
            f"model.frontend: {name} needs the pretrained weights of {HUB_IDS[name]}, which are "
            f"not in the Hugging Face cache of this machine; get them with `hf download "
            f"{HUB_IDS[name]}` (on every node, or a shared HF_HOME), or set model.frontend to a "
            "local folder saved with save_pretrained"
        )


def check_frontend_folder(name: str, problems: list[str]) -> None:
    """A local front-end folder exists and holds ``config.json`` (``save_pretrained`` layout)."""
    folder = resolve_path(name)
    if not (folder / "config.json").is_file():
        what = "does not exist" if not folder.exists() else "holds no config.json"
        problems.append(
            f"model.frontend: {folder} {what}; give a folder written by save_pretrained "
            "(config.json + weights) or a known front-end name"
        )


def hub_cached(repo_id: str) -> bool:
    """The Hugging Face cache holds ``repo_id``'s ``config.json`` and a weights file."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and any(cached(f) for f in WEIGHT_FILES)
