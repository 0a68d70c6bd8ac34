"""Shard rows -> fixed-length training or scoring examples (numpy, no Ray).

:func:`prepare_rows` takes a batch of shard rows and, per row, draws its copies for the epoch
(:mod:`spoofdet.data.sampling`); per copy it picks the crop window (:func:`crop_offset`), decodes
only that window of the FLAC bytes (:func:`decode_window`), repeat-pads short clips and applies
RawBoost with probability ``p`` (crop first, then augment). A :class:`Recipe` holds the settings.
Cached-feature rows skip the audio stages. :func:`prepare_full_length` decodes whole clips for
full-length scoring. The output is the numpy side of the batch contract
(:mod:`spoofdet.data.collate`). Why it is built this way: docs/design/data_pipeline.md.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import soundfile as sf

from spoofdet.data import DataError
from spoofdet.data import features as feature_cache
from spoofdet.data.audio import crop_or_pad
from spoofdet.data.rawboost import ALGORITHMS, RawBoostParams, apply_rawboost, rawboost_params
from spoofdet.data.sampling import copies, row_hash
from spoofdet.data.schema import SAMPLE_RATE

#: Default crop length: 64,600 samples (~4.04 s) as SSL_Anti-spoofing, AASIST, SLS, Nes2Net, Codecfake.
NUM_SAMPLES = 64_600
#: The crop windows (``data.crop``); the config field is typed with :data:`Crop`.
Crop = Literal["first", "random"]
CROPS: tuple[str, ...] = get_args(Crop)


def _norm_path(path: str) -> str:
    """Paths as Ray Data reports them (``include_paths``), without scheme or leading slash."""
    if "://" in path:
        path = path.split("://", 1)[1]
    return os.path.normpath(path).lstrip("/")


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


def _row_copies(recipe: Recipe, h: int, label: int, path: Any) -> int:
    """How many examples a row with hash ``h`` yields this epoch (1 unless the recipe mixes)."""
    if recipe.factors is None:
        return 1
    return copies(h, recipe.factors[recipe.source_of[_norm_path(str(path))]][label])


def _example(
    recipe: Recipe, audio: bytes, num_samples: int, h: int, k: int
) -> tuple[np.ndarray, bool]:
    """Copy ``k`` of a row: crop window, decode only it, repeat-pad, maybe RawBoost (crop first)."""
    rng = np.random.default_rng([h, k])  # each copy its own crop and augmentation
    T = recipe.num_samples
    offset = crop_offset(num_samples, T, recipe.crop, rng)
    wave = crop_or_pad(decode_window(audio, offset, T), T)
    aug = recipe.rawboost_algo != 0 and rng.random() < recipe.rawboost_p
    if aug:
        wave = apply_rawboost(wave, recipe.rawboost_algo, rng, recipe.rawboost, SAMPLE_RATE)
    return wave, aug


def _feature_examples(
    batch: dict[str, np.ndarray], recipe: Recipe, epoch: int
) -> dict[str, np.ndarray]:
    """:func:`prepare_rows` for cached-feature rows: their copies, decoded (no crop, no RawBoost)."""
    n_copies = None
    if recipe.factors is not None:
        rows = zip(batch["utt_id"], batch["corpus"], batch["label"], batch["path"])
        n_copies = [
            _row_copies(recipe, row_hash(recipe.seed, epoch, str(c), str(u)), int(lab), p)
            for u, c, lab, p in rows
        ]
    return feature_cache.feature_rows(batch, recipe.features_dtype, n_copies)


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
        return _feature_examples(batch, recipe, epoch)
    waves, labels, utts, corpora, augmented = [], [], [], [], []
    T = recipe.num_samples
    for i in range(len(batch["utt_id"])):
        utt, corpus = str(batch["utt_id"][i]), str(batch["corpus"][i])
        label = int(batch["label"][i])
        h = row_hash(recipe.seed, epoch, corpus, utt)
        path = batch["path"][i] if recipe.factors is not None else None
        for k in range(_row_copies(recipe, h, label, path)):
            wave, aug = _example(recipe, batch["audio"][i], int(batch["num_samples"][i]), h, k)
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
