"""Nes2Net-X back-end (Liu et al., 2025): a nested Res2Net over SSL features, no projection.

``feats[B, T, D] -> logits[B, n_logits]``. On 1024-d features with the seed settings
(nest ratios 8 and 8, dilation 2, SE ratio 1, mean pooling) the head has exactly 511,014
parameters with one logit (the released checkpoints) and 512,039 with two (the training script).

Structure:

* **Outer nest.** The D channels are split into ``outer`` groups g_0..g_{outer-1} of C = D / outer
  channels (8 x 128 for XLS-R). Stage 0 reads g_0, stage i reads (stage i-1 output) + g_i; each
  stage is an inner block -> ReLU -> BatchNorm1d(C). The ``outer - 1`` stage outputs and the
  untouched last group are concatenated back to D channels -> BatchNorm1d -> ReLU -> mean over
  time -> Linear D -> n_logits.
* **Inner block** (a Res2Net bottleneck with a growing stack, :class:`NestedBottleneck`): 1x1 conv
  -> ReLU -> BN; split into ``inner`` groups of width w = C / inner. A stack (extra last axis)
  starts as the last group; at step i the raw group i is appended, one Conv2d (w -> w, kernel
  (k, 1), dilation (d, 1)) is applied to every slice of the stack -> ReLU -> BatchNorm2d, that
  result becomes the new stack, and a learnable weighted sum over its slices (weights start at
  1 / depth) gives step i's output. The ``inner - 1`` step outputs and the last group are
  concatenated -> 1x1 conv -> ReLU -> BN -> squeeze-excitation gate -> + the block input.

Works for any number of frames (convolutions are padded to keep T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Nes2NetX", "NestedBottleneck", "nes2net_x_xlsr300m"]


class _SqueezeExcite(nn.Module):
    """Channel gate: mean over time -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> x * gate."""

    def __init__(self, channels: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, kernel_size=1)
        self.up = nn.Conv1d(bottleneck, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.up(F.relu(self.down(x.mean(dim=2, keepdim=True)))))
        return x * gate


class NestedBottleneck(nn.Module):
    """The inner block of Nes2Net-X on (B, channels, T); see the module docstring.

    Args:
        channels: Input and output channels (must be divisible by ``scale``).
        scale: Number of groups the bottleneck is split into.
        kernel_size: Odd temporal kernel of the per-slice convolutions.
        dilation: Temporal dilation of those convolutions.
        se_ratio: Channel reduction of the squeeze-excitation gate.
    """

    def __init__(
        self,
        channels: int = 128,
        scale: int = 8,
        kernel_size: int = 3,
        dilation: int = 2,
        se_ratio: int = 1,
    ) -> None:
        super().__init__()
        if channels % scale or kernel_size % 2 == 0 or scale < 2:
            raise ValueError(
                f"need channels divisible by scale >= 2 and an odd kernel_size; got channels={channels}, "
                f"scale={scale}, kernel_size={kernel_size}"
            )
        self.width = channels // scale
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=1)
        self.bn1 = nn.BatchNorm1d(channels)
        pad = dilation * (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            nn.Conv2d(
                self.width,
                self.width,
                kernel_size=(kernel_size, 1),
                dilation=(dilation, 1),
                padding=(pad, 0),
            )
            for _ in range(scale - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(scale - 1))
        self.mix = nn.ParameterList(
            nn.Parameter(torch.full((i + 2,), 1.0 / (i + 2))) for i in range(scale - 1)
        )
        self.conv3 = nn.Conv1d(channels, channels, kernel_size=1)
        self.bn3 = nn.BatchNorm1d(channels)
        self.se = _SqueezeExcite(channels, channels // se_ratio)

    def forward(self, x: Tensor) -> Tensor:
        groups = self.bn1(F.relu(self.conv1(x))).split(self.width, dim=1)
        stack = groups[-1].unsqueeze(-1)  # (B, w, T, depth)
        outs = []
        for i, (conv, bn, mix) in enumerate(zip(self.convs, self.bns, self.mix)):
            stack = torch.cat([stack, groups[i].unsqueeze(-1)], dim=-1)
            stack = bn(F.relu(conv(stack)))
            outs.append(stack @ mix)  # weighted sum over the depth axis -> (B, w, T)
        out = self.bn3(F.relu(self.conv3(torch.cat(outs + [groups[-1]], dim=1))))
        return self.se(out) + x


class Nes2NetX(nn.Module):
    """Nes2Net-X head: ``feats[B, T, in_dim] -> logits[B, n_logits]``.

    Args:
        in_dim: Feature size (1024 for XLS-R 300M); must be divisible by ``outer``.
        n_logits: 1 (released checkpoints) or 2 (bona fide logit at index 1).
        outer: Groups of the outer nest (seed ``Nes_ratio[0]`` = 8).
        inner: Groups of each inner block (seed ``Nes_ratio[1]`` = 8).
        kernel_size: Temporal kernel of the inner convolutions (3).
        dilation: Their dilation (2).
        se_ratio: Squeeze-excitation reduction (1).

    Raises:
        ValueError: If ``in_dim`` is not divisible by ``outer`` or ``n_logits`` is not 1 or 2.
    """

    def __init__(
        self,
        in_dim: int = 1024,
        n_logits: int = 2,
        outer: int = 8,
        inner: int = 8,
        kernel_size: int = 3,
        dilation: int = 2,
        se_ratio: int = 1,
    ) -> None:
        super().__init__()
        if n_logits not in (1, 2):
            raise ValueError(f"n_logits must be 1 or 2, got {n_logits}")
        if outer < 2 or in_dim % outer:
            raise ValueError(f"in_dim={in_dim} must be divisible by outer={outer} (>= 2)")
        self.channels = in_dim // outer
        self.blocks = nn.ModuleList(
            NestedBottleneck(self.channels, inner, kernel_size, dilation, se_ratio)
            for _ in range(outer - 1)
        )
        self.block_bns = nn.ModuleList(nn.BatchNorm1d(self.channels) for _ in range(outer - 1))
        self.bn = nn.BatchNorm1d(in_dim)
        self.out = nn.Linear(in_dim, n_logits)

    def forward(self, feats: Tensor) -> Tensor:
        """feats (B, T, in_dim) -> logits (B, n_logits)."""
        if feats.dim() != 3:
            raise ValueError(f"feats must be (batch, frames, dim), got {tuple(feats.shape)}")
        groups = feats.transpose(1, 2).split(self.channels, dim=1)
        outs: list[Tensor] = []
        for i, (block, bn) in enumerate(zip(self.blocks, self.block_bns)):
            h = groups[0] if i == 0 else outs[-1] + groups[i]
            outs.append(bn(F.relu(block(h))))
        x = F.relu(self.bn(torch.cat(outs + [groups[-1]], dim=1)))
        return self.out(x.mean(dim=2))


def nes2net_x_xlsr300m(n_logits: int = 1) -> Nes2NetX:
    """Nes2Net-X as released, on XLS-R 300M features: 511,014 parameters (512,039 with 2 logits)."""
    return Nes2NetX(in_dim=1024, n_logits=n_logits)
