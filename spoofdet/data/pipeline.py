"""The streaming training input pipeline: Parquet shards -> Ray Data -> fixed-length, augmented batches.

Flow (one Ray Data pipeline for all training corpora)::

    read_parquet(every shard of every source; file order reshuffled each execution)
      -> map_batches(prepare_rows): per row, decide how many copies this epoch (corpus mix,
         class balance), then per copy: choose the crop window, decode only that window of the
         FLAC bytes, repeat-pad short clips, apply RawBoost with probability ``p`` (crop first,
         then augment)
      -> train worker: ray.train.get_dataset_shard("train").iter_torch_batches(
             batch_size=B, collate_fn=BatchCollate(), local_shuffle_buffer_size=...,
             local_shuffle_seed=seed + epoch)

**Batch contract** (what a training or scoring step receives; ``BatchCollate`` makes it)::

    wave     torch.float32 [B, T]   16 kHz, T = num_samples (64,600 by default), no normalisation
    label    torch.int64   [B]      1 = bona fide, 0 = spoof (spoofdet.data.schema)
    utt_id   list[str]     len B
    corpus   list[str]     len B
    augmented torch.bool   [B]      whether RawBoost touched this clip

**Feature variant** (sources written by ``data_prep.features``: a shard folder holding a
``features.json``, see :mod:`spoofdet.data.features`): ``feats torch.float32 [B, T, D]`` (the
front-end layer's output, stored as float16, T = frames of ``num_samples``) replaces ``wave``; the
other keys are the same and ``augmented`` is always False. Such sources are cut once, to the first
``num_samples`` samples, so random crops and RawBoost are refused (``data.crop``,
``data.rawboost.algo``); every source of a run must be of the same kind. Models read it through
``model.frontend: cached`` (an identity front-end); :func:`model_input` picks the tensor.

**Proportional batches** (``data.proportional_batches``, Codecfake's CSAM batches): each source is
its own Ray Data pipeline (``train_0``, ``train_1``, ... in :attr:`TrainPipeline.datasets`) and the
worker composes every batch from them (:func:`iter_train_batches`). The rows a batch takes from
each source follow a smooth weighted round-robin over batch slots (:func:`batch_compositions`)
with the sources' epoch shares (their sizes for ``mix="size"``, else the mix's shares): after
every batch each source's running count is within one row of ``shares * rows so far``, so a
source with 3 % of the rows appears in every third batch or so, not in bursts. The epoch ends when
a source cannot fill its quota (the others' remainders, under one batch's worth, are dropped).

**Randomness, seeded per epoch.** Every random choice for a row (whether and how often it is
drawn this epoch, its crop offset, whether it is augmented, every RawBoost draw) comes from a
generator seeded by ``(seed, epoch, corpus, utt_id, copy)``. The same epoch therefore gives the same
clips whatever the number of workers, blocks or retries, and different epochs give different
crops, subsamples and degradations. The epoch reaches the Ray Data tasks through a tiny actor
(:class:`EpochClock`): the training loop calls ``set_epoch(clock, epoch)`` on rank 0 and waits at a
barrier before iterating. Only the *order* of rows within an epoch is not reproducible (blocks
finish in any order); it is shuffled by a per-epoch-seeded local buffer and by reshuffling the
shard files on every execution.

**Mixing corpora.** Each source is a shard folder written by ``spoofdet prepare``. ``mix="size"``
takes every row once (corpora in proportion to their size, Codecfake's ConcatDataset);
``mix="balanced"`` gives every source the same share of the epoch; ``mix="weights"`` uses the
sources' ``weight``. With ``class_balance=True`` each source's share is split equally between bona
fide and spoof. A share larger than the source repeats rows (each copy its own crop and
augmentation); a smaller one subsamples, differently every epoch. The copy count of a row is
``floor(f) + [u < frac(f)]`` with ``u`` uniform from the row's seed, so the realised mix is known
exactly before the epoch runs (:func:`realised_mix`, logged by the train job).

**Evaluation pipelines** (:func:`build_eval_dataset`) never augment unless asked, never mix or
resample rows, and crop the first ``num_samples`` (the seeds' protocol).

Pure functions here (:func:`crop_or_pad`, :func:`prepare_rows`, :func:`mix_factors`, ...) need no
Ray and are unit-tested; the builders import Ray lazily.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf

from spoofdet.data import features as feature_cache
from spoofdet.data.audio import crop_or_pad
from spoofdet.data.rawboost import ALGORITHMS, RawBoostParams, apply_rawboost, rawboost_params
from spoofdet.data.schema import BONAFIDE, SAMPLE_RATE, SPOOF

#: Default crop length: 64,600 samples (~4.04 s) as SSL_Anti-spoofing, AASIST, SLS, Nes2Net, Codecfake.
NUM_SAMPLES = 64_600
CROPS = ("first", "random")
MIXES = ("size", "balanced", "weights")
READ_COLUMNS = ["utt_id", "corpus", "label", "num_samples", "audio"]
_LABEL_NAMES = {BONAFIDE: "bonafide", SPOOF: "spoof"}


try:  # Ray wants collate functions to subclass its marker class; the pure functions work without Ray.
    from ray.data.collate_fn import NumpyBatchCollateFn as _CollateBase
except ImportError:  # pragma: no cover - Ray is a dependency of the training extra
    _CollateBase = object


class DataError(ValueError):
    """A data source or pipeline setting is unusable; the message names it and says what to do."""


# ----------------------------------------------------------------------------- sources


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


def _norm_path(path: str) -> str:
    """Paths as Ray Data reports them (``include_paths``), without scheme or leading slash."""
    if "://" in path:
        path = path.split("://", 1)[1]
    return os.path.normpath(path).lstrip("/")


def shard_files(source: Source) -> list[str]:
    """The shard files of ``source``, sorted; a clear error if there are none."""
    folder = os.path.join(source.path, "shards")
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".parquet"))
    except FileNotFoundError:
        names = []
    if not names:
        raise DataError(
            f"{source.label}: no shards in {folder}. Write them with "
            f"`spoofdet prepare CORPUS --root ... --out {source.path}` first."
        )
    return [os.path.join(folder, n) for n in names]


def read_metadata(
    source: Source, columns: Sequence[str] = ("utt_id", "corpus", "label")
) -> dict[str, np.ndarray]:
    """Metadata columns of every row of ``source`` (no audio is read)."""
    path = os.path.join(source.path, "metadata.parquet")
    if not os.path.exists(path):
        raise DataError(
            f"{source.label}: {path} is missing; the shard job writes it when it finishes. "
            f"Re-run `spoofdet prepare` for this corpus with the same --out to complete it."
        )
    table = pq.read_table(path, columns=list(columns))
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


# ----------------------------------------------------------------------------- mixing


def mix_factors(
    counts: Sequence[dict[int, int]],
    *,
    mix: str = "size",
    weights: Sequence[float] | None = None,
    class_balance: bool = False,
    epoch_size: int | None = None,
    names: Sequence[str] | None = None,
) -> list[dict[int, float]]:
    """Expected copies per row of each (source, label) so that an epoch has the asked-for mix.

    Args:
        counts: per source, rows per label (``{1: n_bonafide, 0: n_spoof}``).
        mix: ``size`` (every row once), ``balanced`` (equal shares) or ``weights``.
        weights: per-source weights for ``mix="weights"``.
        class_balance: split each source's share equally between its two classes.
        epoch_size: rows per epoch (default: the total number of rows).
        names: source names for error messages.

    Returns:
        Per source, ``{label: factor}``; a row's expected number of copies per epoch is ``factor``.

    Raises:
        DataError: unknown mix, bad weights, an empty source, or class balance on a one-class source.
    """
    names = list(names or [f"source {i}" for i in range(len(counts))])
    if mix not in MIXES:
        raise DataError(f"data.mix: {mix!r} is not one of {', '.join(MIXES)}")
    sizes = [sum(c.values()) for c in counts]
    for name, size in zip(names, sizes):
        if size == 0:
            raise DataError(
                f"{name}: the source has no rows; remove it from data.train or re-run its shard job"
            )
    total = int(epoch_size) if epoch_size else sum(sizes)
    if total <= 0:
        raise DataError(f"data.epoch_size must be positive, got {epoch_size}")
    if mix == "size" and epoch_size is None and not class_balance:
        return [{label: 1.0 for label in c} for c in counts]
    if mix == "size":
        shares = [s / sum(sizes) for s in sizes]
    elif mix == "balanced":
        shares = [1.0 / len(counts)] * len(counts)
    else:
        if weights is None or len(weights) != len(counts):
            raise DataError("data.mix is 'weights' but not every source has a weight")
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise DataError(
                f"data.train weights must be >= 0 with a positive sum, got {list(weights)}"
            )
        shares = [w / sum(weights) for w in weights]
    factors = []
    for name, c, share, size in zip(names, counts, shares, sizes):
        n_source = total * share
        if class_balance:
            missing = [_LABEL_NAMES[lab] for lab in (BONAFIDE, SPOOF) if c.get(lab, 0) == 0]
            if missing:
                raise DataError(
                    f"{name}: data.class_balance needs both classes but the source has no "
                    f"{' and no '.join(missing)} rows"
                )
            factors.append({lab: (n_source / 2) / c[lab] for lab in c})
        else:
            factors.append({lab: n_source / size for lab in c})
    return factors


def row_hash(seed: int, epoch: int, corpus: str, utt_id: str) -> int:
    """64-bit hash of a row's identity for this epoch: the root of all its random choices."""
    digest = hashlib.blake2b(
        f"{seed}\x1f{epoch}\x1f{corpus}\x1f{utt_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


def copies(h: int, factor: float) -> int:
    """How many times a row with hash ``h`` is drawn: ``floor(f) + [u < frac(f)]``, E = ``factor``."""
    whole = math.floor(factor)
    u = (h >> 11) * 2.0**-53
    return whole + (1 if u < factor - whole else 0)


def realised_mix(
    sources: Sequence[Source], factors: Sequence[dict[int, float]], *, seed: int, epoch: int
) -> dict[str, Any]:
    """The exact rows per source and class that epoch ``epoch`` will draw (for logging)."""
    out: dict[str, Any] = {"epoch": epoch, "sources": {}, "total": 0}
    for source, fac in zip(sources, factors):
        meta = read_metadata(source)
        drawn = {"bonafide": 0, "spoof": 0}
        available = {"bonafide": 0, "spoof": 0}
        for utt, corpus, lab in zip(meta["utt_id"], meta["corpus"], meta["label"]):
            name = _LABEL_NAMES[int(lab)]
            available[name] += 1
            drawn[name] += copies(row_hash(seed, epoch, corpus, utt), fac[int(lab)])
        out["sources"][source.label] = {
            "drawn": drawn,
            "available": available,
            "factor": {_LABEL_NAMES[k]: v for k, v in fac.items()},
        }
        out["total"] += sum(drawn.values())
    for entry in out["sources"].values():
        entry["share"] = sum(entry["drawn"].values()) / out["total"] if out["total"] else 0.0
    return out


# ----------------------------------------------------------------------------- rows -> waves


def crop_offset(num_samples: int, length: int, crop: str, rng: np.random.Generator | None) -> int:
    """Start of the crop window: 0 for ``first`` or for clips no longer than ``length``."""
    if crop not in CROPS:
        raise DataError(f"data.crop: {crop!r} is not one of {', '.join(CROPS)}")
    if crop == "first" or num_samples <= length:
        return 0
    return int(rng.integers(0, num_samples - length + 1))


def decode_window(data: bytes, offset: int, length: int | None) -> np.ndarray:
    """Decode ``length`` samples from ``offset`` of 16 kHz mono FLAC bytes (all if ``length`` is None).

    FLAC seeks by frame, so only the needed part of a long clip is decoded.
    """
    with sf.SoundFile(io.BytesIO(data)) as f:
        if f.samplerate != SAMPLE_RATE:
            raise DataError(
                f"shard audio at {f.samplerate} Hz; spoofdet shards are {SAMPLE_RATE} Hz mono FLAC"
            )
        if offset:
            f.seek(offset)
        wave = f.read(-1 if length is None else length, dtype="float32", always_2d=True)
    return wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]


@dataclass(frozen=True)
class Recipe:
    """How rows become training examples; everything :func:`prepare_rows` needs besides the epoch.

    Attributes:
        num_samples: fixed output length T.
        crop: ``first`` (the seeds) or ``random``.
        rawboost_algo: 0 (none) or 1-11.
        rawboost_p: probability that a clip is augmented.
        rawboost: RawBoost parameters.
        seed: the run's seed.
        factors: per source index, ``{label: expected copies}`` (None: every row once).
        source_of: normalised shard path -> source index (rows carry their file path).
        features_dtype: storage dtype of cached-feature sources (None: audio shards).
    """

    num_samples: int = NUM_SAMPLES
    crop: str = "first"
    rawboost_algo: int = 0
    rawboost_p: float = 1.0
    rawboost: RawBoostParams = field(default_factory=rawboost_params)
    seed: int = 1234
    factors: tuple[dict[int, float], ...] | None = None
    source_of: dict[str, int] | None = None
    features_dtype: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.features_dtype is not None:
            if self.crop != "first":
                problems.append(
                    "data.crop: random crops are invalid on cached-feature sources (features were "
                    "computed once on the first num_samples); use crop: first"
                )
            if self.rawboost_algo != 0:
                problems.append(
                    "data.rawboost.algo: RawBoost is invalid on cached-feature sources (no waveform "
                    "left to augment); set it to 0"
                )
        if self.num_samples <= 0:
            problems.append(f"num_samples must be positive, got {self.num_samples}")
        if self.crop not in CROPS:
            problems.append(f"crop {self.crop!r} is not one of {', '.join(CROPS)}")
        if self.rawboost_algo not in ALGORITHMS:
            problems.append(
                f"rawboost.algo {self.rawboost_algo} is not one of {sorted(ALGORITHMS)}"
            )
        if not 0.0 <= self.rawboost_p <= 1.0:
            problems.append(f"rawboost.p must lie in [0, 1], got {self.rawboost_p}")
        if problems:
            raise DataError("; ".join(problems))


def prepare_rows(batch: dict[str, np.ndarray], recipe: Recipe, epoch: int) -> dict[str, np.ndarray]:
    """Turn a batch of shard rows into fixed-length (possibly augmented, repeated or dropped) examples.

    Args:
        batch: numpy columns ``utt_id, corpus, label, num_samples, audio`` (+ ``path`` when mixing).
        recipe: crop, augmentation, seed and mixing factors.
        epoch: the epoch whose random choices to make.

    Returns:
        ``wave [n, T] float32, label [n] int64, utt_id [n], corpus [n], augmented [n] bool``, where
        ``n`` is the number of drawn copies (0 is possible).
    """
    if recipe.features_dtype is not None:
        n_copies = None
        if recipe.factors is not None:
            n_copies = [
                copies(
                    row_hash(recipe.seed, epoch, str(c), str(u)),
                    recipe.factors[recipe.source_of[_norm_path(str(p))]][int(lab)],
                )
                for u, c, lab, p in zip(
                    batch["utt_id"], batch["corpus"], batch["label"], batch["path"]
                )
            ]
        return feature_cache.feature_rows(batch, recipe.features_dtype, n_copies)
    waves, labels, utts, corpora, augmented = [], [], [], [], []
    T = recipe.num_samples
    for i in range(len(batch["utt_id"])):
        utt, corpus, label = (
            str(batch["utt_id"][i]),
            str(batch["corpus"][i]),
            int(batch["label"][i]),
        )
        h = row_hash(recipe.seed, epoch, corpus, utt)
        n_copies = 1
        if recipe.factors is not None:
            source = recipe.source_of[_norm_path(str(batch["path"][i]))]
            n_copies = copies(h, recipe.factors[source][label])
        for k in range(n_copies):
            rng = np.random.default_rng([h, k])
            offset = crop_offset(int(batch["num_samples"][i]), T, recipe.crop, rng)
            wave = crop_or_pad(decode_window(batch["audio"][i], offset, T), T)
            aug = recipe.rawboost_algo != 0 and rng.random() < recipe.rawboost_p
            if aug:
                wave = apply_rawboost(wave, recipe.rawboost_algo, rng, recipe.rawboost, SAMPLE_RATE)
            waves.append(wave)
            labels.append(label)
            utts.append(utt)
            corpora.append(corpus)
            augmented.append(aug)
    return {
        "wave": np.stack(waves) if waves else np.zeros((0, T), np.float32),
        "label": np.asarray(labels, dtype=np.int64),
        "utt_id": np.asarray(utts, dtype=object),
        "corpus": np.asarray(corpora, dtype=object),
        "augmented": np.asarray(augmented, dtype=bool),
    }


def prepare_full_length(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Whole clips for full-length scoring: ``wave`` is a list of variable-length float32 arrays."""
    waves = np.empty(len(batch["audio"]), dtype=object)
    for i, data in enumerate(batch["audio"]):
        waves[i] = decode_window(data, 0, None)
    return {
        "wave": waves,
        "label": np.asarray(batch["label"], dtype=np.int64),
        "utt_id": np.asarray(batch["utt_id"], dtype=object),
        "corpus": np.asarray(batch["corpus"], dtype=object),
    }


# ----------------------------------------------------------------------------- eval parts per rank


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
) -> Iterator[dict[str, Any]]:
    """Rank ``rank``'s part of a dev/eval set as batch-contract batches (every row exactly once overall).

    Ray Train's dataset split equalises ranks by dropping rows, which would quietly shrink a dev
    set, so scoring sets are split here instead: Parquet row groups (64 rows each in spoofdet
    shards) are dealt to ranks round-robin, so ranks differ by at most one group and no row is
    lost or scored twice. Rows are decoded in this process (scoring sets are small next to
    training, and decoding costs ~1 ms per clip).
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
        rows = prepare_rows(
            {c: t.column(c).to_numpy(zero_copy_only=False) for c in columns}, recipe, 0
        )
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


def _ray_prepare(
    batch: dict[str, np.ndarray], *, recipe: Recipe, clock: Any, epoch: int
) -> dict[str, np.ndarray]:
    if clock is not None:
        import ray

        epoch = ray.get(clock.get.remote())
    return prepare_rows(batch, recipe, epoch)


def _epoch_clock_class():
    import ray

    @ray.remote(num_cpus=0)
    class EpochClock:
        """Holds the current epoch for the pipeline's tasks (set by the training loop)."""

        def __init__(self) -> None:
            self.epoch = 0

        def set(self, epoch: int) -> int:
            self.epoch = int(epoch)
            return self.epoch

        def get(self) -> int:
            return self.epoch

    return EpochClock


def set_epoch(clock: Any, epoch: int) -> None:
    """Make the pipeline draw epoch ``epoch`` (call on one rank, then barrier, then iterate)."""
    import ray

    ray.get(clock.set.remote(epoch))


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


def build_train_dataset(
    sources: Sequence[Source],
    *,
    num_samples: int = NUM_SAMPLES,
    crop: str = "first",
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
        mix, class_balance, epoch_size: see :func:`mix_factors`.
        batch_rows: rows per ``map_batches`` call (each row costs a decode and maybe RawBoost).
        num_cpus: CPUs reserved per map task.
        proportional_batches: one pipeline per source, composed per batch by the worker.

    Returns:
        A :class:`TrainPipeline`; pass ``.dataset`` to the trainer as ``datasets={"train": ...}``.
    """
    import ray
    from ray.data import FileShuffleConfig

    sources = list(sources)
    if not sources:
        raise DataError("data.train lists no sources")
    params = (
        rawboost if isinstance(rawboost, RawBoostParams) else rawboost_params(**(rawboost or {}))
    )
    counts = []
    for s in sources:
        labels = read_metadata(s, ("label",))["label"]
        counts.append(
            {BONAFIDE: int((labels == BONAFIDE).sum()), SPOOF: int((labels == SPOOF).sum())}
        )
    counts = [{k: v for k, v in c.items() if v} for c in counts]
    factors = mix_factors(
        counts,
        mix=mix,
        weights=[s.weight for s in sources],
        class_balance=class_balance,
        epoch_size=epoch_size,
        names=[s.label for s in sources],
    )
    kinds = [feature_cache.is_feature_folder(s.path) for s in sources]
    features = None
    if any(kinds):
        if not all(kinds):
            plain = sources[kinds.index(False)].label
            raise DataError(
                f"{plain}: holds audio shards while other data.train sources hold cached features; "
                f"use one kind for a run"
            )
        features = feature_cache.check_compatible(
            [(s.label, feature_cache.read_info(s.path)) for s in sources]
        )
    every_row_once = all(f == 1.0 for fac in factors for f in fac.values())
    source_of = {_norm_path(f): i for i, s in enumerate(sources) for f in shard_files(s)}
    recipe = Recipe(
        num_samples=num_samples,
        crop=crop,
        rawboost_algo=rawboost_algo,
        rawboost_p=rawboost_p,
        rawboost=params,
        seed=seed,
        factors=None if every_row_once else tuple(factors),
        source_of=None if every_row_once else source_of,
        features_dtype=features["dtype"] if features else None,
    )
    columns = feature_cache.FEATURE_COLUMNS if features else READ_COLUMNS
    # The clock lives on this (the driver's) node: it must survive the loss of any worker node,
    # or every restarted attempt of the run would fail on it.
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    clock = _epoch_clock_class().options(scheduling_strategy=here).remote()

    def pipeline(files: list[str]) -> Any:
        ds = ray.data.read_parquet(
            files,
            include_paths=not every_row_once,
            shuffle=FileShuffleConfig(seed=seed, reseed_after_execution=True),
        )
        ds = ds.select_columns(columns + ([] if every_row_once else ["path"]))
        return ds.map_batches(
            _ray_prepare,
            batch_size=batch_rows,
            batch_format="numpy",
            num_cpus=num_cpus,
            fn_kwargs={"recipe": recipe, "clock": clock, "epoch": 0},
        )

    if proportional_batches:
        expected = [sum(f * c[lab] for lab, f in fac.items()) for fac, c in zip(factors, counts)]
        datasets = {f"train_{i}": pipeline(shard_files(s)) for i, s in enumerate(sources)}
        return TrainPipeline(
            dataset=None,
            clock=clock,
            recipe=recipe,
            sources=sources,
            factors=factors,
            datasets=datasets,
            shares=[e / sum(expected) for e in expected],
            features=features,
        )
    ds = pipeline([f for s in sources for f in shard_files(s)])
    return TrainPipeline(
        dataset=ds,
        clock=clock,
        recipe=recipe,
        sources=sources,
        factors=factors,
        datasets={"train": ds},
        features=features,
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
) -> Any:
    """A scoring pipeline: every row once, first ``num_samples`` (or whole clips if None), no augmentation.

    Augmentation happens only when ``rawboost_algo`` is given (e.g. the seeds' augmented dev loss);
    its draws then use ``seed`` and epoch 0, so an augmented dev set is the same every epoch.
    """
    import ray

    if feature_cache.is_feature_folder(source.path):
        raise DataError(
            f"{source.label}: holds cached features, not audio; score the audio shards it was made from "
            f"({feature_cache.read_info(source.path).get('source', 'see its features.json')})"
        )
    ds = ray.data.read_parquet(shard_files(source)).select_columns(READ_COLUMNS)
    if num_samples is None:
        if rawboost_algo:
            raise DataError(
                "full-length evaluation with RawBoost is not supported; use a fixed num_samples"
            )
        return ds.map_batches(
            prepare_full_length, batch_size=batch_rows, batch_format="numpy", num_cpus=num_cpus
        )
    recipe = Recipe(
        num_samples=num_samples,
        crop="first",
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
        fn_kwargs={"recipe": recipe, "clock": None, "epoch": 0},
    )


class BatchCollate(_CollateBase):
    """numpy batch -> the batch contract: tensors for ``wave``/``label``/``augmented``, lists for ids.

    Pass an instance as ``iter_torch_batches(collate_fn=BatchCollate())``. The tensors stay on CPU
    (Ray moves only pure tensor batches); the training loop moves ``wave`` and ``label``.
    Full-length batches (variable T) must have batch size 1.
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        if "feats" in batch:  # cached-feature sources (see the module docstring)
            out = {
                "feats": torch.from_numpy(np.array(batch["feats"], dtype=np.float32, order="C")),
                "label": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),
                "utt_id": [str(u) for u in batch["utt_id"]],
                "corpus": [str(c) for c in batch["corpus"]],
            }
            if "augmented" in batch:
                out["augmented"] = torch.from_numpy(np.array(batch["augmented"], dtype=bool))
            return out
        wave = batch["wave"]
        if wave.dtype == object:
            if len(wave) != 1:
                raise DataError(
                    "full-length batches hold clips of different lengths: use batch_size=1"
                )
            wave = wave[0][None, :]
        # copies: Ray hands out read-only arrays, and torch tensors must own writable memory
        out = {
            "wave": torch.from_numpy(np.array(wave, dtype=np.float32, order="C")),
            "label": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),
            "utt_id": [str(u) for u in batch["utt_id"]],
            "corpus": [str(c) for c in batch["corpus"]],
        }
        if "augmented" in batch:
            out["augmented"] = torch.from_numpy(np.array(batch["augmented"], dtype=bool))
        return out


def model_input(batch: dict[str, Any]) -> Any:
    """The tensor a detector takes from a batch: ``feats`` for cached-feature sources, else ``wave``."""
    return batch["feats"] if "feats" in batch else batch["wave"]


# ----------------------------------------------------------------------------- proportional batches


def batch_compositions(shares: Sequence[float], batch_size: int) -> Iterator[list[int]]:
    """Rows per source of batch 0, 1, 2, ...: a smooth weighted round-robin over batch slots.

    Each slot goes to the source whose running credit (``share`` added per slot) is largest, which
    then pays one slot. So after ``n`` slots every source has between ``n * share - 1`` and
    ``n * share + 1`` of them, and over a whole batch each source gets ``floor`` or ``ceil`` of
    ``batch_size * share`` up to that carried remainder (exactly that for shares that are
    multiples of ``1 / batch_size``).

    Raises:
        DataError: for shares that are negative or do not sum to a positive number.
    """
    if batch_size <= 0:
        raise DataError(f"train.batch_size must be positive, got {batch_size}")
    total = float(sum(shares))
    if not shares or total <= 0 or any(s < 0 for s in shares):
        raise DataError(
            f"proportional batches need shares >= 0 with a positive sum, got {list(shares)}"
        )
    w = [s / total for s in shares]
    credit = [0.0] * len(w)
    while True:
        counts = [0] * len(w)
        for _ in range(batch_size):
            credit = [c + x for c, x in zip(credit, w)]
            i = max(range(len(w)), key=lambda j: (credit[j], -j))
            credit[i] -= 1.0
            counts[i] += 1
        yield counts


def iter_proportional(
    streams: Sequence[Iterator[dict[str, np.ndarray]]], shares: Sequence[float], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Compose batches of ``batch_size`` rows from per-source streams of numpy batches.

    Batch ``k`` takes ``batch_compositions(shares, batch_size)[k][i]`` rows from stream ``i`` (in
    stream order), rows of source 0 first. Stops at the first batch a stream cannot fill.
    """
    buffers: list[list[dict[str, np.ndarray]]] = [[] for _ in streams]
    held = [0] * len(streams)

    def fill(i: int, n: int) -> bool:
        while held[i] < n:
            chunk = next(streams[i], None)
            if chunk is None:
                return False
            if len(chunk["label"]):
                buffers[i].append(chunk)
                held[i] += len(chunk["label"])
        return True

    def take(i: int, n: int) -> dict[str, np.ndarray]:
        merged = {k: np.concatenate([c[k] for c in buffers[i]]) for k in buffers[i][0]}
        rest = {k: v[n:] for k, v in merged.items()}
        buffers[i] = [rest] if held[i] > n else []
        held[i] -= n
        return {k: v[:n] for k, v in merged.items()}

    for counts in batch_compositions(shares, batch_size):
        if not all(fill(i, n) for i, n in enumerate(counts)):
            return
        parts = [take(i, n) for i, n in enumerate(counts) if n]
        yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def iter_train_batches(
    shards: dict[str, Any],
    *,
    shares: Sequence[float] | None,
    batch_size: int,
    shuffle_buffer: int,
    shuffle_seed: int,
) -> Iterator[dict[str, Any]]:
    """A worker's training batches for one epoch (batch contract), from its dataset shards.

    Args:
        shards: ``ray.train.get_dataset_shard(name)`` per name of :attr:`TrainPipeline.datasets`.
        shares: :attr:`TrainPipeline.shares` (None: the one mixed pipeline ``"train"``).
        batch_size, shuffle_buffer, shuffle_seed: as ``iter_torch_batches`` (last partial batch dropped).
    """
    collate = BatchCollate()
    if shares is None:
        yield from shards["train"].iter_torch_batches(
            batch_size=batch_size,
            collate_fn=collate,
            drop_last=True,
            local_shuffle_buffer_size=shuffle_buffer,
            local_shuffle_seed=shuffle_seed,
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
