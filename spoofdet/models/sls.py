"""SLS back-end (Zhang et al., ACM MM 2024, "XLS-R and SLS classifier"): a sensitive layer
selection over every transformer layer of XLS-R, then a large fully connected classifier.

``feats[B, L, T, D] -> logits[B, n_logits]``: it reads all L layer outputs, so build the
front-end with ``frontend_layer="all"`` (the L transformer layer outputs before the encoder's
final LayerNorm, fairseq's ``layer_results``; see :mod:`spoofdet.models.frontend`). With the seed
settings (L = 24, T = 201, D = 1024, hidden 1024, 2 logits) the head has exactly 23,399,429
parameters; the 22,847 -> 1024 Linear layer holds 23,396,352 of them.

Data flow (shapes for the seed settings), read off the seed's ``model.py``:

1. Layer weights: mean over time of each layer (B, 24, 1024) -> ``fc0`` Linear 1024 -> 1, shared
   by all layers -> sigmoid -> one weight in (0, 1) per utterance and layer (B, 24).
2. Weighted **sum** over the layers (not a mean, the weights are not normalised) -> (B, 201, 1024).
3. As an image with one channel (B, 1, 201, 1024) -> ``first_bn`` BatchNorm2d(1) -> SELU ->
   max-pool 3 x 3 (stride 3, floor) -> (B, 1, 67, 341) -> flatten -> (B, 22,847).
4. ``fc1`` Linear 22,847 -> 1024 -> SELU -> ``fc3`` Linear 1024 -> 2 -> SELU -> LogSoftmax.

Seed quirks kept on purpose, so that a converted seed checkpoint computes what it computed:

* A SELU on the output logits, before the LogSoftmax (it squashes a logit below 0 into
  (-1.76, 0)).
* The output is log-probabilities. The seed trains with ``CrossEntropyLoss`` on them, which
  applies log-softmax again: log-softmax is idempotent, so that equals CE on the SELU'd logits,
  as spoofdet's loss does. The seed's score is ``log-prob[:, 1]`` (1 = bona fide); spoofdet's
  score ``logit[:, 1] - logit[:, 0]`` is then the bona fide vs spoof log-odds, a monotone
  function of the seed's score (same ranking, same EER).
* The max-pool floors 1024 / 3 to 341: the last feature dimension (index 1023) never reaches
  ``fc1``. 201 frames divide evenly (67).
* No dropout anywhere in the head.

Fixed input length: ``fc1``'s input size is (T // 3) x (D // 3), so the head takes exactly the
``frames`` it was built for (201 = 64,600 samples at 16 kHz, both scoring protocols' window) and
refuses anything else; it cannot score variable-length input. The seed's own forward would run
on any number of layers (``fc0`` is shared); this one checks L too, so that a front-end with the
wrong depth is caught at once.

Differences from the seed, none of which changes a number beyond float rounding:

* The weighted sum is one ``einsum`` instead of ``(feats * w).sum(1)`` (no (B, L, T, D) temporary).
* With ``n_logits=1`` the head returns ``fc3``'s single output as the score, without the SELU
  and LogSoftmax (a log-softmax over one logit is always 0). The seed has no 1-logit variant.
* The seed runs XLS-R twice per batch (once for the unused last layer, once for the layer
  outputs); spoofdet's ``frontend_layer="all"`` gets all layers from one forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SLS"]

_POOL = 3  # the seed's max_pool2d kernel (and stride) over (time, feature)


class SLS(nn.Module):
    """SLS head on stacked layer outputs ``feats[B, L, T, D] -> logits[B, n_logits]``.

    Submodules are named as in the seed (``first_bn``, ``fc0``, ``fc1``, ``fc3``), so a seed
    checkpoint's back-end loads under its own key names.

    Args:
        in_dim: Feature size D of every layer output (1024 for XLS-R 300M).
        n_logits: 2 (log-probabilities, bona fide at index 1) or 1 (one bona fide score).
        n_layers: Number L of layer outputs the head reads (24 for XLS-R 300M).
        frames: Number of frames T (201 for 64,600 samples).
        hidden: Width of the hidden fully connected layer (1024 in the seed).

    Raises:
        ValueError: For sizes the 3 x 3 max-pool cannot reduce (``frames`` or ``in_dim`` < 3).
    """

    def __init__(
        self,
        in_dim: int = 1024,
        n_logits: int = 2,
        n_layers: int = 24,
        frames: int = 201,
        hidden: int = 1024,
    ) -> None:
        super().__init__()
        if frames < _POOL or in_dim < _POOL or n_layers < 1 or hidden < 1:
            raise ValueError(
                f"SLS needs frames >= {_POOL}, in_dim >= {_POOL}, n_layers >= 1 and "
                f"hidden >= 1; got frames={frames}, in_dim={in_dim}, "
                f"n_layers={n_layers}, hidden={hidden}"
            )
        self.in_dim, self.n_logits, self.n_layers, self.frames = in_dim, n_logits, n_layers, frames
        self.flat = (frames // _POOL) * (in_dim // _POOL)  # 67 * 341 = 22,847 for the seed
        self.first_bn = nn.BatchNorm2d(num_features=1)
        self.fc0 = nn.Linear(in_dim, 1)  # layer score, shared by all layers
        self.fc1 = nn.Linear(self.flat, hidden)
        self.fc3 = nn.Linear(hidden, n_logits)

    def _check(self, feats: Tensor) -> None:
        if feats.dim() != 4:
            raise ValueError(
                f"SLS reads every layer: feats must be (batch, layers, frames, dim), "
                f"got {tuple(feats.shape)}; build the front-end with "
                f"frontend_layer='all'"
            )
        _, n_layers, frames, dim = feats.shape
        if dim != self.in_dim:
            raise ValueError(f"SLS was built for in_dim={self.in_dim}, got features of size {dim}")
        if n_layers != self.n_layers:
            raise ValueError(
                f"SLS was built for n_layers={self.n_layers} layer outputs, got "
                f"{n_layers}; set head_kwargs n_layers to the front-end's number of "
                f"transformer layers"
            )
        if frames != self.frames:
            raise ValueError(
                f"SLS takes exactly frames={self.frames} frames, got {frames}: its fc1 layer has a "
                f"fixed input size ({self.flat:,}), so it cannot score variable-length input. Feed "
                f"fixed-length clips (64,600 samples give 201 frames: data.num_samples: 64600, "
                f"scoring with --length 4s) or build the head for this length (head_kwargs "
                f"frames: {frames})"
            )

    def forward(self, feats: Tensor) -> Tensor:
        """feats (B, L, T, D) -> (B, n_logits): log-probabilities for 2 logits, a score for 1."""
        self._check(feats)
        weights = torch.sigmoid(self.fc0(feats.mean(dim=2))).squeeze(-1)  # (B, L), each in (0, 1)
        x = torch.einsum("bltd,bl->btd", feats, weights)  # weighted sum over layers, (B, T, D)
        x = F.selu(self.first_bn(x.unsqueeze(1)))  # one-channel image (B, 1, T, D)
        x = F.max_pool2d(x, _POOL).flatten(1)  # (B, (T // 3) * (D // 3))
        x = self.fc3(F.selu(self.fc1(x)))
        if self.n_logits == 1:
            return x
        return F.log_softmax(F.selu(x), dim=1)  # the seed's SELU on the logits, kept (quirk)
