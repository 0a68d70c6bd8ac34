"""The streaming input pipeline: Parquet shards -> Ray Data -> fixed-length, augmented batches.

- :class:`Source` is one shard folder (:func:`shard_files`, :func:`row_groups`).
- :func:`build_train_dataset` mixes sources into one Ray Data pipeline (or one per source for
  proportional batches) whose tasks run :func:`~spoofdet.data.transforms.prepare_rows`; the
  training loop calls :func:`set_epoch` on rank 0 and takes :func:`iter_train_batches`.
- ``crop="none"`` keeps whole clips (cut to ``max_seconds``) and
  ``iter_train_batches(batch_seconds=...)`` batches them by total duration, zero-padded with
  ``lengths`` (:mod:`spoofdet.data.duration_batches`).
- :func:`build_eval_dataset` and :func:`iter_eval_part` score a set: every row once, the first
  ``num_samples``, no augmentation unless asked.
- A row that cannot be used (undecodable or empty audio, a null label or one other than 0/1) is
  skipped, never fatal (:func:`~spoofdet.data.transforms.prepare_rows`). The training pipeline's
  tasks record skipped rows on the epoch clock: :func:`bad_rows` names them (utt_id, shard file,
  reason), :func:`bad_row_counts` counts them per epoch, for the train job to fail past its
  ``data.max_bad_rows`` share. :func:`iter_eval_part` appends them to a caller's list.

Batches follow :mod:`spoofdet.data.collate`. Ray is imported lazily. Why it is built this way:
docs/design/data_pipeline.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from spoofdet.data import DataError
from spoofdet.data import features as feature_cache

# Names marked F401 lived here until the split by stage; ``data.X`` (``from spoofdet.data import
# pipeline as data``) keeps finding them for this release only.
from spoofdet.data.collate import (
    BatchCollate,
    model_input,  # noqa: F401 (moved; re-exported for this release only)
)
from spoofdet.data.duration_batches import iter_duration_batches
from spoofdet.data.rawboost import RawBoostParams, rawboost_params
from spoofdet.data.sampling import (
    MIXES,  # noqa: F401 (moved; re-exported for this release only)
    batch_compositions,  # noqa: F401 (moved; re-exported for this release only)
    copies,  # noqa: F401 (moved; re-exported for this release only)
    iter_proportional,
    label_counts,
    mix_factors,
    read_metadata,  # noqa: F401 (moved; re-exported for this release only)
    realised_mix,
    row_hash,  # noqa: F401 (moved; re-exported for this release only)
)
from spoofdet.data.schema import SAMPLE_RATE
from spoofdet.data.shards import ShardError, checked_shard_files
from spoofdet.data.transforms import (
    CROPS,  # noqa: F401 (moved; re-exported for this release only)
    NUM_SAMPLES,
    Recipe,
    _norm_path,
    crop_offset,  # noqa: F401 (moved; re-exported for this release only)
    decode_window,  # noqa: F401 (moved; re-exported for this release only)
    prepare_full_length,
    prepare_rows,
)

READ_COLUMNS = ["utt_id", "corpus", "label", "num_samples", "audio"]
#: Skipped rows the epoch clock keeps named per epoch (all are counted).
MAX_NAMED_BAD_ROWS = 1000

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- sources, scoring sets


@dataclass(frozen=True)
class Source:
    """One shard folder (``spoofdet prepare --out``) taking part in training.

    Attributes:
        path: the folder holding ``shards/part-*.parquet`` and ``metadata.parquet``.
        name: how logs name it (default: the folder name).
        weight: its share when ``mix="weights"``.
    """

    path: str
    name: str = ""
    weight: float = 1.0

    @property
    def label(self) -> str:
        return self.name or os.path.basename(os.path.normpath(self.path))


def shard_files(source: Source) -> list[str]:
    """The shard files of ``source``, sorted, after checking the folder against its file list
    (:func:`spoofdet.data.shards.checked_shard_files`): a missing, stray or truncated shard is an
    error naming the file, never a silently smaller or larger set."""
    try:
        return checked_shard_files(source.path)
    except ShardError as exc:
        raise ShardError(f"{source.label}: {exc}", problems=exc.problems) from None


def row_groups(source: Source) -> list[tuple[str, int, int]]:
    """``(file, row group, rows)`` of every Parquet row group of ``source``'s shards, in order."""
    out = []
    for f in shard_files(source):
        meta = pq.ParquetFile(f).metadata
        out += [(f, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return out


def iter_eval_part(
    source: Source,
    rank: int,
    world: int,
    *,
    batch_size: int,
    recipe: Recipe,
    max_batches: int | None = None,
    bad: list | None = None,
) -> Iterator[dict[str, Any]]:
    """Rank ``rank``'s part of a dev/eval set as batch-contract batches (every row exactly once overall).

    Parquet row groups (64 rows each in spoofdet shards) are dealt to ranks round-robin, so ranks
    differ by at most one group; rows are decoded in this process. Why not Ray Train's split:
    docs/design/data_pipeline.md. A row that cannot be used is skipped, never raised on; with
    ``bad`` a list, its :func:`~spoofdet.data.transforms.skipped_row` record (epoch 0) goes there
    (with ``bad=None`` it is logged as a warning).
    """
    collate = BatchCollate()
    pending: dict[str, list] = {}
    produced = 0
    columns = READ_COLUMNS
    if feature_cache.is_feature_folder(source.path):
        info = feature_cache.read_info(source.path)
        columns = feature_cache.FEATURE_COLUMNS
        recipe = Recipe(
            num_samples=recipe.num_samples, seed=recipe.seed, features_dtype=info["dtype"]
        )
    for i, (f, g, _) in enumerate(row_groups(source)):
        if i % world != rank:
            continue
        t = pq.ParquetFile(f).read_row_group(g, columns=columns)
        batch = {c: t.column(c).to_numpy(zero_copy_only=False) for c in columns}
        batch["path"] = np.full(len(t), f, dtype=object)  # names the shard of a skipped row
        noted: list[dict] = [] if bad is None else bad
        rows = prepare_rows(batch, recipe, 0, bad=noted)
        if bad is None:  # nobody collects them: never skip in silence, log them
            _report_bad(noted, None)
        for key, value in rows.items():
            pending.setdefault(key, []).append(value)
        while pending and sum(len(v) for v in pending["utt_id"]) >= batch_size:
            merged = {k: np.concatenate(v) for k, v in pending.items()}
            yield collate({k: v[:batch_size] for k, v in merged.items()})
            produced += 1
            if max_batches is not None and produced >= max_batches:
                return
            pending = {k: [v[batch_size:]] for k, v in merged.items()}
    if pending and sum(len(v) for v in pending["utt_id"]):
        yield collate({k: np.concatenate(v) for k, v in pending.items()})


# ----------------------------------------------------------------------------- Ray Data


def _report_bad(bad: list[dict], clock: Any) -> None:
    """Hand a batch's skipped rows to the epoch clock (or, with no clock, to the task's log).

    The call is waited for: once a consumer has seen a batch, its skipped rows are on the clock,
    so :func:`bad_row_counts` after an epoch's last batch is complete. It costs a round trip only
    in batches that had a bad row.
    """
    if not bad:
        return
    if clock is None:
        for row in bad:
            log.warning(
                "skipped row %s of %s: %s: %s",
                row["utt_id"],
                row["shard"],
                row["reason"],
                row["detail"],
            )
        return
    import ray

    ray.get(clock.record.remote(bad))


def _ray_prepare(
    batch: dict[str, np.ndarray], *, recipe: Recipe, clock: Any, epoch: int | None
) -> dict[str, np.ndarray]:
    """Ray Data task: :func:`prepare_rows` at ``epoch`` (None: the clock's); skipped rows go to
    the clock."""
    if epoch is None:
        import ray

        epoch = ray.get(clock.get.remote())  # the epoch reaches Ray Data's tasks through the clock
    bad: list[dict] = []
    out = prepare_rows(batch, recipe, epoch, bad=bad)
    _report_bad(bad, clock)
    return out


def _ray_full_length(batch: dict[str, np.ndarray], *, clock: Any) -> dict[str, np.ndarray]:
    """Ray Data task: :func:`prepare_full_length`; skipped rows go to the clock (epoch 0)."""
    bad: list[dict] = []
    out = prepare_full_length(batch, bad=bad)
    _report_bad(bad, clock)
    return out


def _epoch_clock_class():
    import ray

    @ray.remote(num_cpus=0)
    class EpochClock:
        """Holds the current epoch for the pipeline's tasks (set by the training loop), and the
        rows those tasks skipped: per epoch, each row counted once (a retried task or a re-run
        epoch does not count it again) and the first :data:`MAX_NAMED_BAD_ROWS` named."""

        def __init__(self) -> None:
            self.epoch = 0
            self.named: dict[int, list[dict]] = {}
            self.seen: dict[int, set[int]] = {}

        def set(self, epoch: int) -> int:
            self.epoch = int(epoch)
            return self.epoch

        def get(self) -> int:
            return self.epoch

        def record(self, rows: list[dict]) -> int:
            for row in rows:
                epoch = int(row["epoch"])
                seen = self.seen.setdefault(epoch, set())
                key = hash((row["shard"], row["utt_id"]))
                if key in seen:
                    continue
                seen.add(key)
                named = self.named.setdefault(epoch, [])
                if len(named) < MAX_NAMED_BAD_ROWS:
                    named.append(dict(row))
            return len(rows)

        def bad_rows(self, epoch: int | None) -> list[dict]:
            epochs = sorted(self.named) if epoch is None else [int(epoch)]
            return [dict(r) for e in epochs for r in self.named.get(e, [])]

        def bad_row_counts(self) -> dict[int, int]:
            return {e: len(keys) for e, keys in sorted(self.seen.items())}

    return EpochClock


def _start_clock() -> Any:
    """An :class:`EpochClock` actor pinned to this (the driver's) node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # the clock must survive the loss of any worker node, or every restarted attempt would fail
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return _epoch_clock_class().options(scheduling_strategy=here).remote()


def set_epoch(clock: Any, epoch: int) -> None:
    """Make the pipeline draw epoch ``epoch`` (call on one rank, then barrier, then iterate)."""
    import ray

    ray.get(clock.set.remote(epoch))


def bad_rows(clock: Any, epoch: int | None = None) -> list[dict]:
    """The rows the pipeline's tasks skipped (all epochs, or only ``epoch``), in a stable order.

    Each is ``{"utt_id", "shard" (its Parquet file), "reason", "detail", "epoch"}``; ``reason`` is
    one of :data:`~spoofdet.data.transforms.SKIP_REASONS`. A row is named once per epoch it was
    drawn in; at most :data:`MAX_NAMED_BAD_ROWS` per epoch are kept (:func:`bad_row_counts` counts
    them all).
    """
    import ray

    rows = ray.get(clock.bad_rows.remote(epoch))
    return sorted(rows, key=lambda r: (r["epoch"], r["shard"], r["utt_id"]))


def bad_row_counts(clock: Any) -> dict[int, int]:
    """Per epoch that skipped any, the number of distinct rows skipped: ``{epoch: count}``."""
    import ray

    return {int(e): int(n) for e, n in ray.get(clock.bad_row_counts.remote()).items()}


@dataclass
class TrainPipeline:
    """What :func:`build_train_dataset` returns: the dataset(s), their epoch clock and the mix.

    Attributes:
        dataset: the one pipeline over every source (None with proportional batches).
        datasets: what to hand the trainer: ``{"train": dataset}``, or one pipeline per source
            (``{"train_0": ..., "train_1": ...}``) with proportional batches.
        shares: per source, its expected share of an epoch's rows (None: one mixed pipeline).
        features: ``features.json`` of the sources when they hold cached features, else None.
    """

    dataset: Any
    clock: Any
    recipe: Recipe
    sources: list[Source]
    factors: list[dict[int, float]]
    datasets: dict[str, Any] = field(default_factory=dict)
    shares: list[float] | None = None
    features: dict[str, Any] | None = None

    def mix(self, epoch: int) -> dict[str, Any]:
        """The exact rows per source and class of ``epoch`` (see :func:`realised_mix`)."""
        return realised_mix(self.sources, self.factors, seed=self.recipe.seed, epoch=epoch)


def _mix(
    sources: Sequence[Source], *, mix: str, class_balance: bool, epoch_size: int | None
) -> tuple[list[dict[int, int]], list[dict[int, float]]]:
    """Per source, its rows per label (:func:`label_counts`) and its mix factors."""
    counts = label_counts(sources)
    factors = mix_factors(
        counts,
        mix=mix,
        weights=[s.weight for s in sources],
        class_balance=class_balance,
        epoch_size=epoch_size,
        names=[s.label for s in sources],
    )
    return counts, factors


def _features_of(sources: Sequence[Source]) -> dict[str, Any] | None:
    """The sources' common ``features.json`` if they hold cached features, None for audio shards."""
    kinds = [feature_cache.is_feature_folder(s.path) for s in sources]
    if not any(kinds):
        return None
    if not all(kinds):
        plain = sources[kinds.index(False)].label
        raise DataError(
            f"{plain}: holds audio shards while other data.train sources hold cached features; "
            f"use one kind for a run"
        )
    return feature_cache.check_compatible(
        [(s.label, feature_cache.read_info(s.path)) for s in sources]
    )


def _train_pipeline(
    sources: list[Source],
    counts: list[dict[int, int]],
    factors: list[dict[int, float]],
    features: dict[str, Any] | None,
    recipe: Recipe,
    batch_rows: int,
    num_cpus: float,
    proportional_batches: bool,
) -> TrainPipeline:
    """Start the epoch clock and build the Ray Data pipeline(s) of a checked training recipe."""
    import ray
    from ray.data import FileShuffleConfig

    columns = feature_cache.FEATURE_COLUMNS if features else READ_COLUMNS
    clock = _start_clock()

    def read(files: list[str]) -> Any:
        ds = ray.data.read_parquet(
            files,
            include_paths=True,  # a row's file: its source when mixing, and names a skipped row
            # file order reshuffled on every execution (epoch); rows keep their seeded draws
            shuffle=FileShuffleConfig(seed=recipe.seed, reseed_after_execution=True),
        )
        ds = ds.select_columns(columns + ["path"])
        return ds.map_batches(
            _ray_prepare,
            batch_size=batch_rows,
            batch_format="numpy",
            num_cpus=num_cpus,
            fn_kwargs={"recipe": recipe, "clock": clock, "epoch": None},
        )

    common = {"clock": clock, "recipe": recipe, "sources": sources, "factors": factors}
    if proportional_batches:
        expected = [sum(f * c[lab] for lab, f in fac.items()) for fac, c in zip(factors, counts)]
        return TrainPipeline(
            dataset=None,
            datasets={f"train_{i}": read(shard_files(s)) for i, s in enumerate(sources)},
            shares=[e / sum(expected) for e in expected],
            features=features,
            **common,
        )
    ds = read([f for s in sources for f in shard_files(s)])
    return TrainPipeline(dataset=ds, datasets={"train": ds}, features=features, **common)


def build_train_dataset(
    sources: Sequence[Source],
    *,
    num_samples: int = NUM_SAMPLES,
    crop: str = "first",
    max_seconds: float | None = None,
    rawboost_algo: int = 0,
    rawboost_p: float = 1.0,
    rawboost: dict[str, float] | RawBoostParams | None = None,
    seed: int = 1234,
    mix: str = "size",
    class_balance: bool = False,
    epoch_size: int | None = None,
    batch_rows: int = 16,
    num_cpus: float = 1.0,
    proportional_batches: bool = False,
) -> TrainPipeline:
    """The training pipeline over ``sources`` (see the module docstring). Needs a Ray cluster.

    Args:
        sources: shard folders to mix (all audio shards, or all cached-feature folders).
        num_samples, crop, rawboost_algo, rawboost_p, rawboost, seed: see :class:`Recipe`.
        max_seconds: with ``crop="none"``, the longest clip kept (longer ones are cut at a seeded
            random offset); None: whole clips. Only valid with ``crop="none"``.
        mix, class_balance, epoch_size: see :func:`mix_factors`.
        batch_rows: rows per ``map_batches`` call (each row costs a decode and maybe RawBoost).
        num_cpus: CPUs reserved per map task.
        proportional_batches: one pipeline per source, composed per batch by the worker.

    Returns:
        A :class:`TrainPipeline`; pass ``.dataset`` to the trainer as ``datasets={"train": ...}``.
    """
    sources = list(sources)
    if not sources:
        raise DataError("data.train lists no sources")
    params = (
        rawboost if isinstance(rawboost, RawBoostParams) else rawboost_params(**(rawboost or {}))
    )
    counts, factors = _mix(sources, mix=mix, class_balance=class_balance, epoch_size=epoch_size)
    features = _features_of(sources)
    every_row_once = all(f == 1.0 for fac in factors for f in fac.values())
    source_of = {_norm_path(f): i for i, s in enumerate(sources) for f in shard_files(s)}
    recipe = Recipe(
        num_samples=num_samples,
        crop=crop,
        max_samples=None if max_seconds is None else int(round(max_seconds * SAMPLE_RATE)),
        rawboost_algo=rawboost_algo,
        rawboost_p=rawboost_p,
        rawboost=params,
        seed=seed,
        factors=None if every_row_once else tuple(factors),
        source_of=None if every_row_once else source_of,
        features_dtype=features["dtype"] if features else None,
    )
    return _train_pipeline(
        sources, counts, factors, features, recipe, batch_rows, num_cpus, proportional_batches
    )


def build_eval_dataset(
    source: Source,
    *,
    num_samples: int | None = NUM_SAMPLES,
    rawboost_algo: int = 0,
    rawboost_p: float = 1.0,
    rawboost: dict[str, float] | None = None,
    seed: int = 1234,
    batch_rows: int = 16,
    num_cpus: float = 1.0,
    clock: Any = None,
) -> Any:
    """A scoring pipeline: every row once, first ``num_samples`` (or whole clips if None), no augmentation.

    Augmentation happens only when ``rawboost_algo`` is given (e.g. the seeds' augmented dev loss);
    its draws then use ``seed`` and epoch 0, so an augmented dev set is the same every epoch.
    Rows that cannot be used are skipped: recorded on ``clock`` (an epoch clock, e.g.
    ``_start_clock()``; read them with :func:`bad_rows` ``(clock, 0)``), else logged as warnings.
    """
    import ray

    if feature_cache.is_feature_folder(source.path):
        raise DataError(
            f"{source.label}: holds cached features, not audio; score the audio shards it was made from "
            f"({feature_cache.read_info(source.path).get('source', 'see its features.json')})"
        )
    ds = ray.data.read_parquet(shard_files(source), include_paths=True)
    ds = ds.select_columns(READ_COLUMNS + ["path"])
    if num_samples is None:
        if rawboost_algo:
            raise DataError(
                "full-length evaluation with RawBoost is not supported; use a fixed num_samples"
            )
        return ds.map_batches(
            _ray_full_length,
            batch_size=batch_rows,
            batch_format="numpy",
            num_cpus=num_cpus,
            fn_kwargs={"clock": clock},
        )
    recipe = Recipe(
        num_samples=num_samples,
        crop="first",  # the seeds' protocol: score the first num_samples of every clip
        rawboost_algo=rawboost_algo,
        rawboost_p=rawboost_p,
        rawboost=rawboost_params(**(rawboost or {})),
        seed=seed,
    )
    return ds.map_batches(
        _ray_prepare,
        batch_size=batch_rows,
        batch_format="numpy",
        num_cpus=num_cpus,
        fn_kwargs={"recipe": recipe, "clock": clock, "epoch": 0},
    )


def iter_train_batches(
    shards: dict[str, Any],
    *,
    shares: Sequence[float] | None,
    batch_size: int,
    shuffle_buffer: int,
    shuffle_seed: int,
    batch_seconds: float | None = None,
) -> Iterator[dict[str, Any]]:
    """A worker's training batches for one epoch (batch contract), from its dataset shards.

    Args:
        shards: ``ray.train.get_dataset_shard(name)`` per name of :attr:`TrainPipeline.datasets`.
        shares: :attr:`TrainPipeline.shares` (None: the one mixed pipeline ``"train"``).
        batch_size, shuffle_buffer, shuffle_seed: as ``iter_torch_batches`` (last partial batch dropped).
        batch_seconds: batch by total duration instead of rows (for ``crop="none"``): windows of
            ``shuffle_buffer`` rows are sorted by length and packed into batches of at most
            ``batch_seconds`` padded audio, zero-padded with ``lengths``
            (:func:`~spoofdet.data.duration_batches.iter_duration_batches`). Every row of the
            epoch is yielded once, none dropped; ``batch_size`` is then only the read chunk.
            Not with proportional batches.
    """
    collate = BatchCollate()
    if batch_seconds is not None:
        if shares is not None:
            raise DataError(
                "data.batch_seconds: duration batches take the one mixed pipeline; proportional "
                "batches (data.proportional_batches) compose rows per batch: use one or the other"
            )
        if not batch_seconds > 0:
            raise DataError(f"data.batch_seconds must be positive, got {batch_seconds}")
        chunks = shards["train"].iter_batches(
            batch_size=batch_size,
            batch_format="numpy",
            local_shuffle_buffer_size=shuffle_buffer,
            local_shuffle_seed=shuffle_seed,
        )
        for batch in iter_duration_batches(
            chunks,
            batch_samples=int(batch_seconds * SAMPLE_RATE),
            window=max(shuffle_buffer, 1),
            seed=shuffle_seed,
        ):
            yield collate(batch)
        return
    if shares is None:
        yield from shards["train"].iter_torch_batches(
            batch_size=batch_size,
            collate_fn=collate,
            drop_last=True,
            local_shuffle_buffer_size=shuffle_buffer,
            local_shuffle_seed=shuffle_seed,  # row order within an epoch: seeded, local buffer
        )
        return
    names = [f"train_{i}" for i in range(len(shares))]
    streams = [
        iter(
            shards[n].iter_batches(
                batch_size=batch_size,
                batch_format="numpy",
                local_shuffle_buffer_size=shuffle_buffer,
                local_shuffle_seed=shuffle_seed + i,
            )
        )
        for i, n in enumerate(names)
    ]
    for batch in iter_proportional(streams, shares, batch_size):
        yield collate(batch)
