"""Which rows an epoch draws and how batches mix sources: decisions on metadata only (no audio).

- :func:`read_metadata` and :func:`label_counts`: a source's ``metadata.parquet``.
- :func:`mix_factors`: expected copies per row of each (source, label) for ``mix`` = ``size``,
  ``balanced`` or ``weights``, optionally class-balanced.
- :func:`row_hash` and :func:`copies`: a row's seeded draw count for an epoch, so
  :func:`realised_mix` knows the exact mix before the epoch runs.
- :func:`batch_compositions` and :func:`iter_proportional`: proportional (CSAM) batches composed
  from per-source streams.

No torch, no Ray. Why it is built this way: docs/design/data_pipeline.md.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pyarrow.parquet as pq

from spoofdet.data import DataError
from spoofdet.data.schema import BONAFIDE, SPOOF
from spoofdet.data.shards import METADATA_FILE, checked_shard_files

if TYPE_CHECKING:
    from spoofdet.data.pipeline import Source

#: How sources mix (``data.mix``); the config field is typed with :data:`Mix`.
Mix = Literal["size", "balanced", "weights"]
MIXES: tuple[str, ...] = get_args(Mix)
_LABEL_NAMES = {BONAFIDE: "bonafide", SPOOF: "spoof"}


def read_metadata(
    source: Source, columns: Sequence[str] = ("utt_id", "corpus", "label")
) -> dict[str, np.ndarray]:
    """Metadata columns of every row of ``source`` (no audio is read)."""
    path = os.path.join(source.path, METADATA_FILE)
    if not os.path.exists(path):
        raise DataError(
            f"{source.label}: {path} is missing; the shard job writes it when it finishes. "
            f"Re-run `spoofdet prepare` for this corpus with the same --out to complete it."
        )
    checked_shard_files(source.path)  # metadata.parquet's size is in the folder's file list too
    table = pq.read_table(path, columns=list(columns))
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def label_counts(sources: Sequence[Source]) -> list[dict[int, int]]:
    """Per source, its rows per label (``{1: n_bonafide, 0: n_spoof}``, labels without rows left out)."""
    counts = []
    for s in sources:
        labels = read_metadata(s, ("label",))["label"]
        counts.append(
            {BONAFIDE: int((labels == BONAFIDE).sum()), SPOOF: int((labels == SPOOF).sum())}
        )
    return [{k: v for k, v in c.items() if v} for c in counts]


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
    shares = _source_shares(mix, sizes, weights)
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


def _source_shares(mix: str, sizes: list[int], weights: Sequence[float] | None) -> list[float]:
    """Each source's share of the epoch for ``mix`` (``size``, ``balanced`` or ``weights``)."""
    if mix == "size":
        return [s / sum(sizes) for s in sizes]
    if mix == "balanced":
        return [1.0 / len(sizes)] * len(sizes)
    if weights is None or len(weights) != len(sizes):
        raise DataError("data.mix is 'weights' but not every source has a weight")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"data.train weights must be >= 0 with a positive sum, got {list(weights)}")
    return [w / sum(weights) for w in weights]


def row_hash(seed: int, epoch: int, corpus: str, utt_id: str) -> int:
    """64-bit hash of a row's identity for this epoch: the root of all its random choices."""
    # seeded by identity, not position: an epoch draws the same clips whatever the workers or retries
    digest = hashlib.blake2b(
        f"{seed}\x1f{epoch}\x1f{corpus}\x1f{utt_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


def copies(h: int, factor: float) -> int:
    """How many times a row with hash ``h`` is drawn: ``floor(f) + [u < frac(f)]``, E = ``factor``."""
    whole = math.floor(factor)
    u = (h >> 11) * 2.0**-53  # the top 53 bits as a uniform double in [0, 1)
    return whole + (1 if u < factor - whole else 0)


def realised_mix(
    sources: Sequence[Source], factors: Sequence[dict[int, float]], *, seed: int, epoch: int
) -> dict[str, Any]:
    """The exact rows per source and class that epoch ``epoch`` will draw (for logging).

    Rows whose metadata label is null or not 0/1 are never drawn (the readers skip them); each
    source's ``unlabelled`` says how many there are.
    """
    out: dict[str, Any] = {"epoch": epoch, "sources": {}, "total": 0}
    for source, fac in zip(sources, factors):
        meta = read_metadata(source)
        drawn = {"bonafide": 0, "spoof": 0}
        available = {"bonafide": 0, "spoof": 0}
        unlabelled = 0
        for utt, corpus, lab in zip(meta["utt_id"], meta["corpus"], meta["label"]):
            if lab is None or lab != lab or lab not in fac:  # null (None or NaN) or not 0/1
                unlabelled += 1
                continue
            name = _LABEL_NAMES[int(lab)]
            available[name] += 1
            drawn[name] += copies(row_hash(seed, epoch, corpus, utt), fac[int(lab)])
        out["sources"][source.label] = {
            "drawn": drawn,
            "available": available,
            "unlabelled": unlabelled,
            "factor": {_LABEL_NAMES[k]: v for k, v in fac.items()},
        }
        out["total"] += sum(drawn.values())
    for entry in out["sources"].values():
        entry["share"] = sum(entry["drawn"].values()) / out["total"] if out["total"] else 0.0
    return out


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
            i = max(range(len(w)), key=lambda j: (credit[j], -j))  # ties go to the first source
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
