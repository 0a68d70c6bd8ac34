"""Raw-waveform AASIST and AASIST-L (Jung et al., ICASSP 2022; clovaai/aasist).

``feats[B, N, 1] -> logits[B, n_logits]``: the head reads the waveform itself (16 kHz, not
normalised), given by the parameter-free ``waveform`` front-end
(``build_model(frontend="waveform", head="aasist_raw")``). With the seed's configurations the
head has exactly **297,866** parameters (AASIST, the defaults) and **85,306** (AASIST-L,
``head_kwargs=AASIST_L``); the state dict holds the seed's 229 tensors and loads its published
``AASIST.pth`` / ``AASIST-L.pth`` after the renaming in ``spoofdet.models.checkpoints``
(``SEEDS["aasist"]``, ``SEEDS["aasist_l"]``).

Data flow for N = 64,600 samples (the seed's input length; AASIST-L numbers in brackets):

1. Sinc convolution: 70 fixed band-pass filters of 129 taps, no padding -> (B, 70, 64,472);
   absolute value, as a one-channel image max-pooled 3x3 -> (B, 1, 23, 21,490);
   BatchNorm2d(1), SELU.
2. Encoder: six residual blocks, channels 1->32->32->64->64->64->64 [1->32->32->24->24->24->24],
   each two (2, 3) convolutions plus a skip (1x3 conv when the channels change), then a (1, 3)
   max-pool over time: width 21,490 -> 7,163 -> 2,387 -> 795 -> 265 -> 88 -> 29, so
   (B, 64, 23, 29).
3. Node features from |encoder output|: max over time gives 23 spectral nodes (+ a learnable
   positional embedding) (B, 23, 64); max over the 23 bins gives 29 temporal nodes (B, 29, 64).
4. GAT-S and GAT-T (64 -> 64 [24 -> 24], temperature 2) and top-k graph pools: S 23 -> 11
   [9], T 29 -> 20 [14] (ratios 0.5 and 0.7 [0.4 and 0.5]).
5. Two heterogeneous-graph branches, each with its own learnable master node: HS-GAL
   64 -> 32 [24 -> 32] (temperature 100), pools S 11 -> 5, T 20 -> 10 [S 9 -> 6, T 14 -> 9],
   HS-GAL 32 -> 32 added residually.
6. Element-wise max of the branches; readout ``[max|T|, mean T, max|S|, mean S, master]``
   (5 x 32 = 160) -> dropout 0.5 -> Linear 160 -> n_logits (bona fide at index 1).

The graph layers are those of the SSL-AASIST head (:mod:`spoofdet.models.aasist`:
``GraphAttention``, ``HeteroGraphAttention``, ``GraphPool`` and its residual block), imported,
not repeated. Any N >= 2,315 samples works (:meth:`RawAASIST.min_samples`): the temporal axis
is divided by 3 seven times.

Faithful quirks of the seed, kept on purpose:

* **Sinc filters are not weights.** They are rebuilt from the configuration (not in the state
  dict, a non-persistent buffer here): mel-spaced band edges over the 257 bins of a 512-point
  FFT, the kernel of 128 made odd (129), ideal band-pass = difference of two ideal low-passes,
  Hamming window, no padding. The dtypes follow the seed's code as it runs under NumPy 2 (the
  pinned 2.4.6): edges in float64, the sinc argument and the sinc in float32 (the seed builds its
  tap grid with ``torch.arange``), band scale and difference in float64, then float32 times a
  float32 Hamming window. This reproduces the seed's filters bit for bit here; a pure float64
  design differs by <= 1.6e-7 (filters up to 0.038) and moves the published models' logits by
  < 1e-6 relative. Under NumPy 1 (the seed's own environment) the band scale was float32 as
  well: <= 4e-8 from these filters.
* The first convolution of each residual block reads the block's input, so the seed's
  pre-activation (BatchNorm -> SELU) output is discarded; its BatchNorm (blocks 2-6) is stored in
  the file and kept here, frozen and unused (as in :mod:`spoofdet.models.aasist`).
* All four HS-GAL pools use ``pool_ratios[2]``; ``pool_ratios[3]`` and ``temperatures[3]`` are
  read from the configuration but unused. For AASIST-L this means temporal HS pools of 0.7, not
  the 0.5 its configuration lists at index 3.
* The encoder repeats the last ``filts`` entry for blocks 4-6.
* The positional embedding of the spectral nodes has ``n_filters // 3`` rows (the seed writes
  23, which is 70 // 3).
* Not reproduced: the seed's optional training-time frequency mask (``Freq_aug``, zeroing up to
  19 adjacent filters); its published configurations leave it off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spoofdet.models.aasist import (
    GraphAttention,
    GraphPool,
    HeteroGraphAttention,
    _ResidualBlock,
    hs_gal_readout,
)

__all__ = ["RawAASIST", "AASIST_L", "sinc_filterbank"]

#: ``head_kwargs`` of AASIST-L (clovaai/aasist ``config/AASIST-L.conf``'s model_config): 85,306
#: parameters. The defaults of :class:`RawAASIST` are AASIST (``config/AASIST.conf``).
AASIST_L: dict[str, Any] = {
    "filts": [70, [1, 32], [32, 32], [32, 24], [24, 24]],
    "gat_dims": [24, 32],
    "pool_ratios": [0.4, 0.5, 0.7, 0.5],
    "temperatures": [2.0, 2.0, 100.0, 100.0],
}


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def sinc_filterbank(
    n_filters: int = 70, kernel_size: int = 128, sample_rate: int = 16_000, n_fft: int = 512
) -> Tensor:
    """The seed's fixed sinc band-pass filters, ``float32[n_filters, K]`` (K = kernel made odd).

    Band edges: ``n_filters + 1`` points equally spaced in mel between the lowest and highest
    bin frequency of an ``n_fft``-point FFT (0 Hz and Nyquist). Filter i is the ideal band-pass
    between edges i and i + 1 (difference of two ideal low-passes ``2 f / sr * sinc(2 f n / sr)``,
    n = -(K-1)/2 .. (K-1)/2) times a Hamming window. Dtypes as in the module docstring.
    """
    if n_filters < 1 or kernel_size < 1:
        raise ValueError(
            f"sinc filters: n_filters and kernel_size must be positive, "
            f"got {n_filters}, {kernel_size}"
        )
    k = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size  # symmetric filters
    bins_hz = (sample_rate // 2) * np.linspace(0.0, 1.0, n_fft // 2 + 1)
    mel = _hz_to_mel(bins_hz)
    edges = _mel_to_hz(np.linspace(mel.min(), mel.max(), n_filters + 1))  # float64
    taps = np.arange(k, dtype=np.float32) - np.float32((k - 1) // 2)  # float32 grid, exact integers

    def lowpass(f: float) -> np.ndarray:
        arg = taps * np.float32(2 * f) / np.float32(sample_rate)  # float32 like the seed's grid
        return (2 * f / sample_rate) * np.sinc(arg).astype(np.float64)

    bands = np.stack([lowpass(hi) - lowpass(lo) for lo, hi in zip(edges[:-1], edges[1:])])
    return torch.from_numpy(np.hamming(k).astype(np.float32) * bands.astype(np.float32))


def _check_config(
    filts: Sequence[Any],
    gat_dims: Sequence[int],
    pool_ratios: Sequence[float],
    temperatures: Sequence[float],
) -> list[tuple[int, int]]:
    """Validate a seed-style configuration; returns the six encoder blocks' (in, out) channels."""
    try:
        n_filters = int(filts[0])
        pairs = [(int(a), int(b)) for a, b in filts[1:]]
    except (TypeError, ValueError, IndexError):
        raise ValueError(
            f"filts: expected [n_filters, [1, c1], [c1, c2], [c2, c3], [c3, c3]] "
            f"as in the seed's config, got {filts!r}"
        ) from None
    if (
        len(pairs) != 4
        or n_filters < 3
        or pairs[0][0] != 1
        or pairs[3][0] != pairs[3][1]
        or any(pairs[i][1] != pairs[i + 1][0] for i in range(3))
    ):
        raise ValueError(
            f"filts: expected [n_filters >= 3, [1, c1], [c1, c2], [c2, c3], [c3, c3]] "
            f"(chained channels; the last block repeats three times), got {filts!r}"
        )
    if len(gat_dims) != 2 or min(gat_dims) < 1:
        raise ValueError(f"gat_dims: two positive sizes [GAT out, HS-GAL out], got {gat_dims!r}")
    if len(pool_ratios) != 4 or not all(0 < r <= 1 for r in pool_ratios):
        raise ValueError(
            f"pool_ratios: four keep ratios in (0, 1] as in the seed's config, got {pool_ratios!r}"
        )
    if len(temperatures) != 4 or not all(t > 0 for t in temperatures):
        raise ValueError(
            f"temperatures: four positive values as in the seed's config, got {temperatures!r}"
        )
    return pairs + [pairs[3], pairs[3]]


class RawAASIST(nn.Module):
    """Raw-waveform AASIST head: ``feats[B, N, 1]`` (or ``wave[B, N]``) ``-> logits[B, n_logits]``.

    Args:
        in_dim: Must be 1 (the ``waveform`` front-end's feature size).
        n_logits: 2 (bona fide logit at index 1, as the seed) or 1.
        filts: ``[n_filters, [1, c1], [c1, c2], [c2, c3], [c3, c3]]``: sinc filters, then the
            residual blocks' (in, out) channels (the last entry serves blocks 4-6).
        gat_dims: Output sizes of GAT-S/GAT-T and of the HS-GAL layers.
        pool_ratios: Keep ratios of pool S, pool T and the four HS-GAL pools (index 3 unused).
        temperatures: Of GAT-S, GAT-T and the HS-GAL layers (index 3 unused).
        first_conv: Sinc kernel size (made odd).
        sample_rate: Of the input, in Hz (sets the filters' band edges).

    Raises:
        ValueError: naming the argument, for an ``in_dim`` other than 1 or a configuration not
            shaped like the seed's.
    """

    def __init__(
        self,
        in_dim: int = 1,
        n_logits: int = 2,
        *,
        filts: Sequence[Any] = (70, (1, 32), (32, 32), (32, 64), (64, 64)),
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.7, 0.5, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0, 100.0),
        first_conv: int = 128,
        sample_rate: int = 16_000,
    ) -> None:
        super().__init__()
        if in_dim != 1:
            raise ValueError(
                f"in_dim: raw AASIST reads the waveform, so 1 (frontend 'waveform'), got {in_dim}"
            )
        if n_logits not in (1, 2):
            raise ValueError(f"n_logits must be 1 or 2, got {n_logits}")
        blocks = _check_config(filts, gat_dims, pool_ratios, temperatures)
        n_filters, enc_dim = int(filts[0]), blocks[-1][1]
        g0, g1 = int(gat_dims[0]), int(gat_dims[1])
        r_s, r_t, r_h = float(pool_ratios[0]), float(pool_ratios[1]), float(pool_ratios[2])
        self.sinc_filters: Tensor
        filters = sinc_filterbank(n_filters, first_conv, sample_rate).unsqueeze(1)  # (n, 1, K)
        self.register_buffer("sinc_filters", filters, persistent=False)  # rebuilt, never saved
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.Sequential(
            *[  # encoder.<k>.0 = the seed's Residual_block, .1 its pool
                nn.Sequential(_ResidualBlock(i, o, first=(k == 0)), nn.MaxPool2d((1, 3)))
                for k, (i, o) in enumerate(blocks)
            ]
        )
        self.pos_s = nn.Parameter(torch.randn(1, n_filters // 3, enc_dim))
        self.master1 = nn.Parameter(torch.randn(1, 1, g0))
        self.master2 = nn.Parameter(torch.randn(1, 1, g0))
        self.gat_s = GraphAttention(enc_dim, g0, float(temperatures[0]))
        self.gat_t = GraphAttention(enc_dim, g0, float(temperatures[1]))
        self.hs_gal11 = HeteroGraphAttention(g0, g1, float(temperatures[2]))
        self.hs_gal12 = HeteroGraphAttention(g1, g1, float(temperatures[2]))
        self.hs_gal21 = HeteroGraphAttention(g0, g1, float(temperatures[2]))
        self.hs_gal22 = HeteroGraphAttention(g1, g1, float(temperatures[2]))
        self.pool_s = GraphPool(r_s, g0)
        self.pool_t = GraphPool(r_t, g0)
        self.pool_hs1 = GraphPool(r_h, g1)  # all four HS-GAL pools use pool_ratios[2], as the seed
        self.pool_ht1 = GraphPool(r_h, g1)
        self.pool_hs2 = GraphPool(r_h, g1)
        self.pool_ht2 = GraphPool(r_h, g1)
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(5 * g1, n_logits)

    def min_samples(self) -> int:
        """Shortest input: the sinc conv, 3x3 pool and six (1, 3) pools must leave >= 1 frame."""
        return self.sinc_filters.shape[-1] - 1 + 3 ** (1 + len(self.encoder))

    def forward(self, feats: Tensor) -> Tensor:
        """``feats`` (B, N, 1) from the ``waveform`` front-end or (B, N) -> (B, n_logits)."""
        wave = feats.squeeze(-1) if feats.dim() == 3 and feats.shape[-1] == 1 else feats
        if wave.dim() != 2 or wave.shape[1] < self.min_samples():
            raise ValueError(
                f"raw AASIST needs a waveform (batch, samples >= "
                f"{self.min_samples()}) or (batch, samples, 1), got "
                f"{tuple(feats.shape)}; repeat-pad short clips"
            )
        x = F.conv1d(wave.unsqueeze(1), self.sinc_filters.to(wave.dtype))  # (B, n_filt, N - K + 1)
        x = F.max_pool2d(x.unsqueeze(1).abs(), (3, 3))  # (B, 1, n_filters // 3, W)
        x = F.selu(self.first_bn(x))
        e = self.encoder(x).abs()  # (B, C, F, W')
        spectral = e.amax(dim=3).transpose(1, 2) + self.pos_s  # (B, F, C): max over time
        temporal = e.amax(dim=2).transpose(1, 2)  # (B, W', C): max over frequency
        s = self.pool_s(self.gat_s(spectral))
        t = self.pool_t(self.gat_t(temporal))

        return hs_gal_readout(self, t, s)
