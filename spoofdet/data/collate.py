"""The batch contract: what a training or scoring step receives (:class:`BatchCollate` makes it).

::

    wave      torch.float32 [B, T]   16 kHz, T = num_samples (64,600 by default), no normalisation
    label     torch.int64   [B]      1 = bona fide, 0 = spoof (spoofdet.data.schema)
    utt_id    list[str]     len B
    corpus    list[str]     len B
    augmented torch.bool    [B]      whether RawBoost touched this clip (absent in full-length batches)
    lengths   torch.int64   [B]      only in duration batches: real samples of row i; wave[i, lengths[i]:]
                                     is zero padding (:func:`padding_mask` gives the bool mask)

Cached-feature sources (a shard folder holding a ``features.json``, see
:mod:`spoofdet.data.features`) give ``feats torch.float32 [B, T, D]`` (the front-end layer's
output, stored as float16, T = frames of ``num_samples``) in place of ``wave``; the other keys are
the same and ``augmented`` is always False. :func:`model_input` picks the tensor a detector takes.
Full-length scoring batches (variable T) hold one clip each.

Duration batches (``crop: none`` with ``iter_train_batches(batch_seconds=...)``, see
:mod:`spoofdet.data.duration_batches`) hold clips of different lengths: ``wave [B, Tmax]``, each
row zero-padded after its ``lengths[i]`` real samples (``duration_batches.pad_waves``), Tmax the
longest clip.
Fixed-length batches have no ``lengths`` key and are exactly as before. A model that takes an
attention mask uses :func:`padding_mask`; one that does not sees the zeros as silence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spoofdet.data import DataError

try:  # Ray wants collate functions to subclass its marker class; the pure functions work without Ray.
    from ray.data.collate_fn import NumpyBatchCollateFn as _CollateBase
except ImportError:  # pragma: no cover - Ray is a dependency of the training extra
    _CollateBase = object


class BatchCollate(_CollateBase):
    """numpy batch -> the batch contract: tensors for ``wave``/``label``/``augmented``, lists for ids.

    Pass an instance as ``iter_torch_batches(collate_fn=BatchCollate())``. The tensors stay on CPU
    (Ray moves only pure tensor batches); the training loop moves ``wave`` and ``label``.
    Full-length batches (variable T) must have batch size 1. A batch of 0 rows (every row of
    a Ray Data batch skipped as unusable) gives tensors of 0 rows.
    """

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        if "feats" in batch:  # cached-feature sources
            key, x = "feats", batch["feats"]
        else:
            key, x = "wave", batch["wave"]
            if x.dtype == object:
                if len(x) == 0:  # every row of the batch was skipped
                    x = np.zeros((0, 0), np.float32)
                elif len(x) != 1:
                    raise DataError(
                        "full-length batches hold clips of different lengths: use batch_size=1"
                    )
                else:
                    x = x[0][None, :]
        # copies: Ray hands out read-only arrays, and torch tensors must own writable memory
        out = {
            key: torch.from_numpy(np.array(x, dtype=np.float32, order="C")),
            "label": torch.from_numpy(np.array(batch["label"], dtype=np.int64)),
            "utt_id": [str(u) for u in batch["utt_id"]],
            "corpus": [str(c) for c in batch["corpus"]],
        }
        if "augmented" in batch:
            out["augmented"] = torch.from_numpy(np.array(batch["augmented"], dtype=bool))
        if "lengths" in batch:
            out["lengths"] = torch.from_numpy(np.array(batch["lengths"], dtype=np.int64))
        return out


def padding_mask(batch: dict[str, Any]) -> Any:
    """Bool tensor ``[B, Tmax]``, True on real samples, of a duration batch; None for a batch with
    no ``lengths`` (fixed length: every sample is real)."""
    if "lengths" not in batch:
        return None
    import torch

    wave = batch["wave"]
    steps = torch.arange(wave.shape[1], device=wave.device)
    return steps[None, :] < batch["lengths"].to(wave.device)[:, None]


def model_input(batch: dict[str, Any]) -> Any:
    """The tensor a detector takes from a batch: ``feats`` for cached-feature sources, else ``wave``."""
    return batch["feats"] if "feats" in batch else batch["wave"]
