"""LCNN with max-feature-map (Codecfake's ``LCNN``), ``feats[B, T, D] -> logits[B, n_logits]``.

The features are read as a one-channel image and go through nine convolution stages, then a small
MLP. Max-feature-map (MFM) halves the channels: output channel ``c`` is the element-wise maximum
of input channels ``c`` and ``c + C/2`` (the first half against the second half). Every
BatchNorm is ``affine=False`` (running statistics only, no weight or bias).

=====  ==============================  =========================  ===========================
stage  convolution (stride 1, "same")  then                       channels out
=====  ==============================  =========================  ===========================
1      5x5, 1 -> 64                    MFM, max-pool 2x2          32
2      1x1, 32 -> 64                   MFM, BN                    32
3      3x3, 32 -> 96                   MFM, max-pool 2x2, BN      48
4      1x1, 48 -> 96                   MFM, BN                    48
5      3x3, 48 -> 128                  MFM, max-pool 2x2          64
6      1x1, 64 -> 128                  MFM, BN                    64
7      3x3, 64 -> 64                   MFM, BN                    32
8      1x1, 32 -> 64                   MFM, BN                    32
9      3x3, 32 -> 64                   MFM, max-pool 2x2          32
=====  ==============================  =========================  ===========================

then flatten -> dropout 0.7 -> Linear(flat, 160) -> MFM (80) -> Linear(80, enc_dim) ->
Linear(enc_dim, n_logits). No activation between the last two linear layers, as in the seed.

The four 2x2 max-pools (floor) shrink each image side n to n // 16, so the flatten size is
``32 * (in_dim // 16) * (frames // 16)``: the input length is fixed by ``frames``.

The two published variants, and which way round each reads its features (``time_axis``):

* **W2V2-LCNN** (XLS-R layer-5 features, 64,600 samples): image (1024 features x 201 frames),
  Codecfake feeds ``hidden_states[5]`` transposed to (B, 1, 1024, 201): ``time_axis="width"``.
  Flatten 32 x 64 x 12 = 24,576, the ``Linear(24576, 160)`` written in Codecfake's ``model.py``;
  4,111,074 parameters with ``enc_dim=256``.
* **mel-LCNN** (Codecfake's published ``*_mellcnn`` files): 80-band mel power spectrogram over
  64,600 samples, 505 frames (:class:`spoofdet.models.frontend_spec.CodecfakeMel`). Codecfake stores
  the mel as (1, 80, 505) and its training loop transposes the last two axes, so the network sees
  (B, 1, 505 frames, 80 bands): ``time_axis="height"``. Flatten 32 x 31 x 5 = 4,960, the
  ``Linear(4960, 160)`` of the published files; 972,514 parameters (``enc_dim=256``).
  The orientation is not written in the repository's code; we read it off the published weights:
  the per-input norms of ``Linear(4960, 160)`` vary smoothly along 31 and by band along 5, as
  (time, band) predicts, and show a period-5 artefact when read the other way round.

Submodule names follow the seed (``conv1`` .. ``conv9`` as ``Sequential`` with the same indices,
``out``, ``fc_mu``), so a converted checkpoint keeps its keys.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LCNN", "MaxFeatureMap", "TIME_AXES"]

#: Where the time axis goes in the image the convolutions see.
TIME_AXES = ("width", "height")

# (in, out, kernel, max-pool after MFM, BatchNorm last) per stage; "out" is before MFM halves it.
_STAGES: tuple[tuple[int, int, int, bool, bool], ...] = (
    (1, 64, 5, True, False),
    (32, 64, 1, False, True),
    (32, 96, 3, True, True),
    (48, 96, 1, False, True),
    (48, 128, 3, True, False),
    (64, 128, 1, False, True),
    (64, 64, 3, False, True),
    (32, 64, 1, False, True),
    (32, 64, 3, True, False),
)


class MaxFeatureMap(nn.Module):
    """``x[B, C, ...] -> max(x[:, :C/2], x[:, C/2:])``: the first half of the channels against the
    second (Codecfake's ``MaxFeatureMap2D`` views (B, 2, C/2, ...) and takes the max over the 2)."""

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        if c % 2:
            raise ValueError(f"max-feature-map needs an even number of channels, got {c}")
        return torch.maximum(x[:, : c // 2], x[:, c // 2 :])


def _stage(c_in: int, c_out: int, kernel: int, pool: bool, norm: bool) -> nn.Sequential:
    """conv -> MFM [-> max-pool 2x2] [-> BN (affine=False)], indexed as in the seed."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=1, padding=kernel // 2)  # "same" size
    layers: list[nn.Module] = [conv, MaxFeatureMap()]
    if pool:
        layers.append(nn.MaxPool2d(2, 2))
    if norm:
        layers.append(nn.BatchNorm2d(c_out // 2, affine=False))
    return nn.Sequential(*layers)


class LCNN(nn.Module):
    """Codecfake's LCNN head: ``feats[B, frames, in_dim] -> logits[B, n_logits]``.

    Args:
        in_dim: Feature size D (1024 for XLS-R, 80 for the mel front-end); at least 16.
        n_logits: 2 (bona fide logit at index 1) or 1 (a bona fide score).
        frames: The fixed number of frames T (201 for 64,600 samples of XLS-R features, 505 for
            the mel front-end); at least 16.
        enc_dim: Size of the embedding before the output layer (256 in the published files).
        time_axis: ``"width"``: the image is (D, T) (W2V2-LCNN); ``"height"``: (T, D) (mel-LCNN).

    Raises:
        ValueError: For ``n_logits`` not 1 or 2, too small ``in_dim`` / ``frames``, or an unknown
            ``time_axis``.
    """

    def __init__(
        self,
        in_dim: int = 1024,
        n_logits: int = 2,
        frames: int = 201,
        enc_dim: int = 256,
        time_axis: str = "width",
    ) -> None:
        super().__init__()
        if n_logits not in (1, 2):
            raise ValueError(f"n_logits must be 1 or 2, got {n_logits}")
        if in_dim < 16 or frames < 16:
            raise ValueError(
                f"in_dim and frames must be >= 16 (four 2x2 max-pools), got {in_dim} and {frames}"
            )
        if time_axis not in TIME_AXES:
            raise ValueError(f"time_axis must be one of {TIME_AXES}, got {time_axis!r}")
        self.frames, self.time_axis = frames, time_axis
        for i, spec in enumerate(_STAGES, start=1):
            self.add_module(f"conv{i}", _stage(*spec))
        flat = 32 * (in_dim // 16) * (frames // 16)  # 24,576 for (1024, 201); 4,960 for (80, 505)
        self.out = nn.Sequential(
            nn.Dropout(0.7), nn.Linear(flat, 160), MaxFeatureMap(), nn.Linear(80, enc_dim)
        )
        self.fc_mu = nn.Linear(enc_dim, n_logits)

    def forward(self, feats: Tensor) -> Tensor:
        """feats (B, frames, in_dim) -> logits (B, n_logits)."""
        if feats.dim() != 3 or feats.shape[1] != self.frames:
            raise ValueError(
                f"feats must be (batch, {self.frames} frames, dim), got "
                f"{tuple(feats.shape)}; the LCNN reads a fixed length: crop or "
                "repeat-pad the audio (data.num_samples=64600 for the seed's)"
            )
        x = feats.transpose(1, 2) if self.time_axis == "width" else feats
        x = x.unsqueeze(1)
        for i in range(1, len(_STAGES) + 1):
            x = getattr(self, f"conv{i}")(x)
        return self.fc_mu(self.out(torch.flatten(x, 1)))
