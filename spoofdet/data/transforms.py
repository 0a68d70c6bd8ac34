"""Shard rows -> fixed-length (or whole-clip) training or scoring examples (numpy, no Ray).

:func:`prepare_rows` takes a batch of shard rows and, per row, draws its copies for the epoch
(:mod:`spoofdet.data.sampling`); per copy it picks the crop window (:func:`crop_offset`), decodes
only that window of the FLAC bytes (:func:`decode_window`), repeat-pads short clips and applies
RawBoost with probability ``p`` (crop first, then augment). A :class:`Recipe` holds the settings.
With ``crop="none"`` a copy is the whole clip (no repeat-padding), cut at a seeded random offset
to ``max_samples`` when longer; ``wave`` is then a ragged object array, batched by total duration
(:mod:`spoofdet.data.duration_batches`) and zero-padded with ``lengths``
(:mod:`spoofdet.data.collate`).
Cached-feature rows skip the audio stages. :func:`prepare_full_length` decodes whole clips for
full-length scoring. The output is the numpy side of the batch contract
(:mod:`spoofdet.data.collate`). Why it is built this way: docs/design/data_pipeline.md.

One bad row never stops a reader: a row whose label is not 0 or 1 or whose stored bytes cannot be
decoded yields no example; when the caller passes a ``bad`` list, a :func:`skipped_row` record
(``utt_id, shard, reason, detail, epoch``, ``reason`` one of :data:`SKIP_REASONS`) goes there, and
the callers (:mod:`spoofdet.data.pipeline`, :mod:`spoofdet.serve.batch`) count and name them. Only
data-dependent stages are guarded (decoding, labels); a bug in RawBoost or the mixing still raises.
"""

from __future__ import annotations

import io
import os
import re
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
#: The crop windows (``data.crop``); the config field is typed with :data:`Crop`. ``none``: whole
#: clips (variable length), longer ones cut at a random offset to ``max_samples``.
Crop = Literal["first", "random", "none"]
CROPS: tuple[str, ...] = get_args(Crop)


def _norm_path(path: str) -> str:
    """Paths as Ray Data reports them (``include_paths``), without scheme or leading slash."""
    if "://" in path:
        path = path.split("://", 1)[1]
    return os.path.normpath(path).lstrip("/")


def crop_offset(
    num_samples: int, length: int | None, crop: str, rng: np.random.Generator | None
) -> int:
    """Start of the crop window: 0 for ``first`` or for clips no longer than ``length``.

    ``random`` and ``none`` (a whole clip cut to at most ``length``; None: never cut) draw the
    offset uniformly, so a long clip's cut is seeded exactly as a random crop.
    """
    if crop not in CROPS:
        raise DataError(f"data.crop: {crop!r} is not one of {', '.join(CROPS)}")
    if crop == "first" or length is None or num_samples <= length:
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


# ----------------------------------------------------------------------------- rows that cannot be used

#: Why a reader skips a row: the ``reason`` of a :func:`skipped_row` record. ``decode_error``: the
#: stored audio (or cached-feature) bytes cannot be decoded; ``empty_audio``: none stored, or they
#: decode to no samples; ``no_label``: the label is null; ``bad_label``: a label other than 0/1
#: (or one the source's ``metadata.parquet`` does not have); ``bad_num_samples``: ``num_samples``
#: is null or negative, so no crop window can be drawn.
SKIP_REASONS = ("decode_error", "empty_audio", "no_label", "bad_label", "bad_num_samples")
_DETAIL_CHARS = 300
#: libsndfile names the in-memory file by its address; details say "the audio bytes" instead.
_BYTES_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def one_line(text: object, limit: int = _DETAIL_CHARS) -> str:
    """``text`` on one line (whitespace runs -> one space), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def skipped_row(utt_id: object, shard: object, reason: str, detail: object, epoch: int) -> dict:
    """The record of one skipped row: ``utt_id, shard`` (its Parquet file), ``reason`` (one of
    :data:`SKIP_REASONS`), ``detail`` (one line: the exception text or the bad value), ``epoch``."""
    return {
        "utt_id": str(utt_id),
        "shard": "" if shard is None else str(shard),
        "reason": reason,
        "detail": one_line(detail),
        "epoch": int(epoch),
    }


def label_of(value: Any) -> tuple[int, str, str]:
    """A row's label as 0 or 1: ``(label, "", "")``, or ``(-1, reason, detail)`` if it has none.

    Ray Data and pyarrow hand a nullable int column over as float (null -> NaN), so ``1.0`` is a
    label and ``NaN`` or ``None`` is ``no_label``; anything but 0 or 1 is ``bad_label``.
    """
    if value is None:
        return -1, "no_label", "label is null; a training or scoring row needs 0 (spoof) or 1"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -1, "bad_label", f"label {value!r} is not 0 (spoof) or 1 (bona fide)"
    if np.isnan(number):
        return -1, "no_label", "label is null; a training or scoring row needs 0 (spoof) or 1"
    if number not in (0.0, 1.0):
        shown = int(number) if number.is_integer() else number
        return -1, "bad_label", f"label {shown} is not 0 (spoof) or 1 (bona fide)"
    return int(number), "", ""


def decode_clip(data: Any, offset: int, length: int | None) -> tuple[np.ndarray | None, str, str]:
    """:func:`decode_window`, or why a row's audio cannot be decoded, without raising.

    Returns:
        ``(wave, "", "")``, or ``(None, reason, detail)`` with reason ``empty_audio`` (no bytes, or
        no samples from ``offset``) or ``decode_error`` (the exception's text).
    """
    if data is None or len(data) == 0:
        return None, "empty_audio", "the audio column holds no bytes"
    try:
        wave = decode_window(data, offset, length)
    except Exception as exc:  # noqa: BLE001 - whatever libsndfile raises, the row is unusable
        text = _BYTES_REPR.sub("the audio bytes", f"{type(exc).__name__}: {exc}")
        return None, "decode_error", one_line(text)
    if len(wave) == 0:
        return None, "empty_audio", f"the audio decodes to 0 samples from offset {offset}"
    return wave, "", ""


def _num_samples(value: Any) -> int | None:
    """A count column's value (``num_samples``, ``frames``, ``dim``) as an int; None if null,
    NaN or negative."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return None
    return int(n) if np.isfinite(n) and n >= 0 else None


def _shard(batch: dict[str, np.ndarray], i: int) -> str:
    """The Parquet file row ``i`` came from (the ``path`` column), or "" when not known."""
    return str(batch["path"][i]) if "path" in batch else ""


@dataclass(frozen=True)
class Recipe:
    """How rows become training examples; everything :func:`prepare_rows` needs besides the epoch.

    Attributes:
        num_samples: fixed output length T (unused with ``crop="none"``).
        crop: ``first`` (the seeds), ``random`` or ``none`` (whole clips, variable length).
        max_samples: with ``crop="none"``, the longest clip kept; longer ones are cut at a seeded
            random offset (None: whole clips whatever their length).
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
    max_samples: int | None = None
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
        if self.max_samples is not None:
            if self.crop != "none":
                problems.append(
                    f"data.max_seconds applies only to crop: none (whole clips), but crop is "
                    f"{self.crop!r}; leave max_seconds unset or set crop: none"
                )
            if self.max_samples <= 0:
                problems.append(f"max_samples must be positive, got {self.max_samples}")
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


def _draws(
    batch: dict[str, np.ndarray], i: int, recipe: Recipe, epoch: int
) -> tuple[int, int, int, str, str]:
    """Row ``i``'s ``(label, hash, copies this epoch, "", "")``, or ``(.., reason, detail)`` when
    its label makes it unusable (null, not 0/1, or a class its source's metadata does not have)."""
    label, reason, detail = label_of(batch["label"][i])
    if reason:
        return label, 0, 0, reason, detail
    h = row_hash(recipe.seed, epoch, str(batch["corpus"][i]), str(batch["utt_id"][i]))
    path = batch["path"][i] if recipe.factors is not None else None
    if path is not None and label not in recipe.factors[recipe.source_of[_norm_path(str(path))]]:
        detail = (
            f"label {label}, but its source's metadata.parquet has no such row; the shards "
            f"and metadata.parquet disagree: re-run `spoofdet prepare` for this source"
        )
        return label, h, 0, "bad_label", detail
    return label, h, _row_copies(recipe, h, label, path), "", ""


def _example(
    recipe: Recipe, audio: bytes, num_samples: int, h: int, k: int
) -> tuple[np.ndarray | None, bool, str, str]:
    """Copy ``k`` of a row: crop window, decode only it, repeat-pad, maybe RawBoost (crop first).

    With ``crop="none"`` the window is the whole clip, or ``max_samples`` of it from a random
    offset, and it is not padded.

    Returns ``(wave, augmented, "", "")``, or ``(None, False, reason, detail)`` when the window
    cannot be decoded (:func:`decode_clip`).
    """
    rng = np.random.default_rng([h, k])  # each copy its own crop and augmentation
    T = recipe.max_samples if recipe.crop == "none" else recipe.num_samples
    offset = crop_offset(num_samples, T, recipe.crop, rng)
    wave, reason, detail = decode_clip(audio, offset, T)
    if wave is None:
        return None, False, reason, detail
    if recipe.crop != "none":
        wave = crop_or_pad(wave, T)
    aug = recipe.rawboost_algo != 0 and rng.random() < recipe.rawboost_p
    if aug:
        wave = apply_rawboost(wave, recipe.rawboost_algo, rng, recipe.rawboost, SAMPLE_RATE)
    return wave, aug, "", ""


def _feature_shape(batch: dict[str, np.ndarray]) -> tuple[int, int]:
    """``(frames, dim)`` of a feature batch's first row with both set, for an empty output that
    keeps the tensor shape of the others (Ray Data blocks of one column must agree)."""
    for frames, dim in zip(batch["frames"], batch["dim"]):
        f, d = _num_samples(frames), _num_samples(dim)
        if f is not None and d is not None:
            return f, d
    return 0, 0


def _feature_examples(
    batch: dict[str, np.ndarray], recipe: Recipe, epoch: int, bad: list | None
) -> dict[str, np.ndarray]:
    """:func:`prepare_rows` for cached-feature rows: their copies, decoded (no crop, no RawBoost).

    A row whose feature bytes do not decode (``features.feature_rows`` raises, e.g. a blob of the
    wrong size) is found by decoding the batch's rows one by one, then skipped as ``decode_error``.
    """
    keep, n_copies = [], []
    for i in range(len(batch["utt_id"])):
        _, _, n, reason, detail = _draws(batch, i, recipe, epoch)
        if reason:
            _skip(bad, batch, i, reason, detail, epoch)
        else:
            keep.append(i)
            n_copies.append(n)

    def rows(idx: list[int], n: list[int]) -> dict[str, np.ndarray]:
        sub = {k: np.asarray(v)[np.asarray(idx, dtype=np.int64)] for k, v in batch.items()}
        return feature_cache.feature_rows(sub, recipe.features_dtype, n)

    try:
        out = rows(keep, n_copies)
    except Exception:  # noqa: BLE001 - find the rows at fault, one by one
        good = []
        for i, n in zip(keep, n_copies):
            try:
                rows([i], [n])
                good.append((i, n))
            except Exception as exc:  # noqa: BLE001 - any failure of stored bytes skips the row
                _skip(bad, batch, i, "decode_error", f"{type(exc).__name__}: {exc}", epoch)
        out = rows([i for i, _ in good], [n for _, n in good])
    if len(out["feats"]) == 0:
        out["feats"] = np.zeros((0, *_feature_shape(batch)), np.float32)
    return out


def _skip(
    bad: list | None, batch: dict[str, np.ndarray], i: int, reason: str, detail: str, epoch: int
) -> None:
    """Note row ``i`` of ``batch`` as skipped in ``bad`` (when a list is given)."""
    if bad is not None:
        bad.append(skipped_row(batch["utt_id"][i], _shard(batch, i), reason, detail, epoch))


def prepare_rows(
    batch: dict[str, np.ndarray], recipe: Recipe, epoch: int, bad: list | None = None
) -> dict[str, np.ndarray]:
    """Turn a batch of shard rows into fixed-length (possibly augmented, repeated or dropped) examples.

    A row that cannot be used (label null or not 0/1, audio missing, empty or undecodable,
    ``num_samples`` null) yields no example, never an exception; the other rows come out exactly
    as in a batch without it. A row is skipped whole: none of its copies is kept when one fails.

    Args:
        batch: numpy columns ``utt_id, corpus, label, num_samples, audio`` (cached features:
            :data:`~spoofdet.data.features.FEATURE_COLUMNS`), and ``path`` (the row's Parquet
            file: needed when mixing, and what skipped rows are named by).
        recipe: crop, augmentation, seed and mixing factors.
        epoch: the epoch whose random choices to make.
        bad: a list to append a :func:`skipped_row` record to per skipped row (None: not noted).

    Returns:
        ``wave [n, T] float32, label [n] int64, utt_id [n], corpus [n], augmented [n] bool``, where
        ``n`` is the number of drawn copies (0 is possible, e.g. when every row was bad). With
        ``crop="none"``, ``wave`` is an object array of ``n`` float32 clips of their own lengths.
    """
    if recipe.features_dtype is not None:
        return _feature_examples(batch, recipe, epoch, bad)
    waves, labels, utts, corpora, augmented = [], [], [], [], []
    T = recipe.num_samples
    for i in range(len(batch["utt_id"])):
        label, h, n, reason, detail = _draws(batch, i, recipe, epoch)
        num_samples = _num_samples(batch["num_samples"][i])
        if n and not reason and num_samples is None:
            reason = "bad_num_samples"
            detail = f"num_samples is {batch['num_samples'][i]!r}; re-run `spoofdet prepare`"
        examples = []
        for k in range(n if not reason else 0):
            wave, aug, reason, detail = _example(recipe, batch["audio"][i], num_samples, h, k)
            if reason:
                break
            examples.append((wave, aug))
        if reason:
            _skip(bad, batch, i, reason, detail, epoch)
            continue
        utt, corpus = str(batch["utt_id"][i]), str(batch["corpus"][i])
        for wave, aug in examples:
            waves.append(wave)
            labels.append(label)
            utts.append(utt)
            corpora.append(corpus)
            augmented.append(aug)
    if recipe.crop == "none":
        wave = np.empty(len(waves), dtype=object)  # ragged: Ray Data keeps it variable-shaped
        for j, w in enumerate(waves):
            wave[j] = w
    else:
        wave = np.stack(waves) if waves else np.zeros((0, T), np.float32)
    return {
        "wave": wave,
        "label": np.asarray(labels, dtype=np.int64),
        "utt_id": np.asarray(utts, dtype=object),
        "corpus": np.asarray(corpora, dtype=object),
        "augmented": np.asarray(augmented, dtype=bool),
    }


def prepare_full_length(
    batch: dict[str, np.ndarray], bad: list | None = None
) -> dict[str, np.ndarray]:
    """Whole clips for full-length scoring: ``wave`` is a list of variable-length float32 arrays.

    Rows are skipped as in :func:`prepare_rows` (epoch 0 in their records).
    """
    keep, waves = [], []
    for i, data in enumerate(batch["audio"]):
        _, reason, detail = label_of(batch["label"][i])
        wave = None
        if not reason:
            wave, reason, detail = decode_clip(data, 0, None)
        if reason:
            _skip(bad, batch, i, reason, detail, 0)
            continue
        keep.append(i)
        waves.append(wave)
    out = np.empty(len(waves), dtype=object)
    for j, wave in enumerate(waves):
        out[j] = wave
    idx = np.asarray(keep, dtype=np.int64)
    return {
        "wave": out,
        "label": np.asarray(batch["label"])[idx].astype(np.int64),
        "utt_id": np.asarray(batch["utt_id"], dtype=object)[idx],
        "corpus": np.asarray(batch["corpus"], dtype=object)[idx],
    }
