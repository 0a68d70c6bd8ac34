"""AASIST back-end on SSL features (the SSL-AASIST head of Tak et al., 2022).

``feats[B, T, D] -> logits[B, n_logits]``. With the defaults on a 1024-d front-end the head has
exactly 447,242 parameters (131,200 of them in the 1024->128 projection), as in the seed.

Data flow (shapes for T = 201 frames, i.e. 64,600 samples):

1. Linear ``D -> 128`` per frame; the (128 x T) map is treated as a one-channel image and
   max-pooled 3x3 -> (1, 42, 67); BatchNorm2d(1), SELU.
2. Residual encoder: six blocks, channels 1->32->32->64->64->64->64, spatial size kept (no
   pooling inside the blocks in the SSL variant); BatchNorm2d(64), SELU -> (64, 42, 67).
3. A 1x1-conv attention map weights the encoder output: softmax over time gives 42 spectral
   nodes (+ a learnable positional embedding), softmax over the 42 bins gives T/3 temporal nodes.
4. A graph-attention layer and a top-k graph pooling per node type (S 42->21, T 67->33).
5. Two parallel heterogeneous-graph branches, each with its own learnable master node:
   HS-GAL 64->32, pooling (S 21->10, T 33->16), HS-GAL 32->32 added residually.
6. Element-wise max of the branches; readout ``[max|T|, mean T, max|S|, mean S, master]``
   (5 x 32 = 160) -> dropout 0.5 -> Linear 160 -> n_logits.

Faithful quirks of the seed, kept on purpose so that its parameter count and behaviour match:

* The first convolution of every residual block reads the block's *input*, not its
  pre-activation (BatchNorm -> SELU) output, so that pre-activation is computed by the seed and
  thrown away; here it is not computed. Its BatchNorm (blocks 2-6, 512 parameters) is kept,
  frozen and unused, so that the count and the state-dict layout stay the seed's.
* The 42 spectral nodes come from the fixed 128-d projection (128 // 3), so the positional
  embedding has a fixed size while the number of temporal nodes follows T: any T >= 3 works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AASIST",
    "GraphAttention",
    "HeteroGraphAttention",
    "GraphPool",
    "aasist_xlsr300m",
    "hs_gal_readout",
]


def _pairwise(x: Tensor) -> Tensor:
    """(B, N, D) -> (B, N, N, D) with entry [i, j] = x_i * x_j."""
    return x.unsqueeze(2) * x.unsqueeze(1)


def _batch_norm_nodes(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """BatchNorm1d over the feature axis of node features (B, N, D)."""
    b, n, d = x.shape
    return bn(x.reshape(b * n, d)).view(b, n, d)


class GraphAttention(nn.Module):
    """Graph attention over a fully connected graph of N nodes (one node type).

    ``att[i, j] = softmax_j(tanh(W_a (x_i * x_j)) . w / temperature)``;
    ``out = W_1 (att @ x) + W_2 x`` -> BatchNorm -> SELU. Input dropout 0.2.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.empty(out_dim, 1))
        nn.init.xavier_normal_(self.att_weight)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temperature = temperature

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_drop(x)
        scores = torch.tanh(self.att_proj(_pairwise(x))) @ self.att_weight  # (B, N, N, 1)
        att = torch.softmax(scores.squeeze(-1) / self.temperature, dim=-1)  # over neighbours j
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(_batch_norm_nodes(self.bn, out))


class HeteroGraphAttention(nn.Module):
    """HS-GAL: graph attention over two node types (temporal, spectral) plus a master node.

    Each type gets its own input projection; the two are concatenated into one graph whose
    attention scores use one of three vectors by block (T-T, S-S, and a shared one for T-S and
    S-T). The master node attends over all nodes and is projected with its own weights.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_proj_master = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight22 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight12 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight_master = nn.Parameter(torch.empty(out_dim, 1))
        for w in (self.att_weight11, self.att_weight22, self.att_weight12, self.att_weight_master):
            nn.init.xavier_normal_(w)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_att_master = nn.Linear(in_dim, out_dim)
        self.proj_without_att_master = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.temperature = temperature

    def forward(self, x1: Tensor, x2: Tensor, master: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Args: x1 (B, N1, in_dim), x2 (B, N2, in_dim), master (B, 1, in_dim).

        Returns:
            The updated (x1, x2, master), each with ``out_dim`` features.
        """
        n1 = x1.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        x = self.input_drop(x)

        h = torch.tanh(self.att_proj(_pairwise(x)))  # (B, N, N, out_dim)
        s11 = (h[:, :n1, :n1] @ self.att_weight11).squeeze(-1)
        s12 = (h[:, :n1, n1:] @ self.att_weight12).squeeze(-1)
        s21 = (h[:, n1:, :n1] @ self.att_weight12).squeeze(-1)
        s22 = (h[:, n1:, n1:] @ self.att_weight22).squeeze(-1)
        scores = torch.cat([torch.cat([s11, s12], dim=2), torch.cat([s21, s22], dim=2)], dim=1)
        att = torch.softmax(scores / self.temperature, dim=-1)

        m_scores = (
            torch.tanh(self.att_proj_master(x * master)) @ self.att_weight_master
        )  # (B, N, 1)
        m_att = torch.softmax(m_scores / self.temperature, dim=1)
        master = self.proj_with_att_master(
            m_att.transpose(1, 2) @ x
        ) + self.proj_without_att_master(master)

        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        out = F.selu(_batch_norm_nodes(self.bn, out))
        return out[:, :n1], out[:, n1:], master


class GraphPool(nn.Module):
    """Top-k graph pooling: keep the ``int(ratio * N)`` (at least 1) best-scoring nodes.

    Scores are ``sigmoid(Linear(dropout(h)))``; kept nodes are multiplied by their score, in the
    order of decreasing score.
    """

    def __init__(self, ratio: float, in_dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.ratio = ratio
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B, N, 1)
        k = max(int(h.shape[1] * self.ratio), 1)
        idx = torch.topk(scores, k, dim=1).indices.expand(-1, -1, h.shape[2])
        return torch.gather(h * scores, 1, idx)


class _ResidualBlock(nn.Module):
    """Two (2, 3) convolutions with a skip (1x3 conv when channels change); size kept."""

    def __init__(self, in_ch: int, out_ch: int, first: bool = False) -> None:
        super().__init__()
        # The seed's pre-activation output is unused (see the module docstring). The norm is kept
        # on the non-first blocks for parameter and state-dict parity only, frozen so that DDP
        # never waits for gradients that cannot come (it never enters the forward pass).
        self.bn1 = None if first else nn.BatchNorm2d(in_ch).requires_grad_(False)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = (
            nn.Conv2d(in_ch, out_ch, kernel_size=(1, 3), padding=(0, 1))
            if in_ch != out_ch
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.selu(self.bn2(self.conv1(x))))
        return out + (x if self.downsample is None else self.downsample(x))


class AASIST(nn.Module):
    """SSL-AASIST head: ``feats[B, T, in_dim] -> logits[B, n_logits]``.

    Args:
        in_dim: Feature size of the front-end (1024 for XLS-R 300M).
        n_logits: 2 (bona fide logit at index 1) or 1 (a bona fide score).
        proj_dim: Size of the per-frame projection (128 in the seed).
        channels: Residual encoder channels after the input channel (seed: 32, 32, 64, 64, 64, 64).
        gat_dims: Output sizes of the first graph layers and of the HS-GAL branches.
        pool_ratios: Keep ratios of the S/T pools and of the HS-GAL S/T pools.
        temperatures: Softmax temperatures of GAT-S, GAT-T and the HS-GAL layers.

    Raises:
        ValueError: If ``n_logits`` is not 1 or 2, or ``proj_dim`` < 3.
    """

    def __init__(
        self,
        in_dim: int = 1024,
        n_logits: int = 2,
        proj_dim: int = 128,
        channels: tuple[int, ...] = (32, 32, 64, 64, 64, 64),
        gat_dims: tuple[int, int] = (64, 32),
        pool_ratios: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.5),
        temperatures: tuple[float, float, float] = (2.0, 2.0, 100.0),
    ) -> None:
        super().__init__()
        if n_logits not in (1, 2):
            raise ValueError(f"n_logits must be 1 or 2, got {n_logits}")
        if proj_dim < 3:
            raise ValueError(f"proj_dim must be >= 3 (it is max-pooled by 3), got {proj_dim}")
        enc_dim = channels[-1]
        self.proj = nn.Linear(in_dim, proj_dim)
        self.first_bn = nn.BatchNorm2d(1)
        ins = (1,) + tuple(channels[:-1])
        self.encoder = nn.Sequential(
            *[_ResidualBlock(i, o, first=(k == 0)) for k, (i, o) in enumerate(zip(ins, channels))]
        )
        self.encoder_bn = nn.BatchNorm2d(enc_dim)
        self.attention = nn.Sequential(
            nn.Conv2d(enc_dim, 128, kernel_size=1),
            nn.SELU(inplace=True),
            nn.BatchNorm2d(128),
            nn.Conv2d(128, enc_dim, kernel_size=1),
        )
        self.pos_s = nn.Parameter(torch.randn(1, proj_dim // 3, enc_dim))
        self.master1 = nn.Parameter(torch.randn(1, 1, gat_dims[0]))
        self.master2 = nn.Parameter(torch.randn(1, 1, gat_dims[0]))
        self.gat_s = GraphAttention(enc_dim, gat_dims[0], temperatures[0])
        self.gat_t = GraphAttention(enc_dim, gat_dims[0], temperatures[1])
        self.pool_s = GraphPool(pool_ratios[0], gat_dims[0])
        self.pool_t = GraphPool(pool_ratios[1], gat_dims[0])
        self.hs_gal11 = HeteroGraphAttention(gat_dims[0], gat_dims[1], temperatures[2])
        self.hs_gal12 = HeteroGraphAttention(gat_dims[1], gat_dims[1], temperatures[2])
        self.hs_gal21 = HeteroGraphAttention(gat_dims[0], gat_dims[1], temperatures[2])
        self.hs_gal22 = HeteroGraphAttention(gat_dims[1], gat_dims[1], temperatures[2])
        self.pool_hs1 = GraphPool(pool_ratios[2], gat_dims[1])
        self.pool_ht1 = GraphPool(pool_ratios[3], gat_dims[1])
        self.pool_hs2 = GraphPool(pool_ratios[2], gat_dims[1])
        self.pool_ht2 = GraphPool(pool_ratios[3], gat_dims[1])
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(5 * gat_dims[1], n_logits)

    def forward(self, feats: Tensor) -> Tensor:
        """feats (B, T, in_dim), T >= 3 -> logits (B, n_logits)."""
        if feats.dim() != 3 or feats.shape[1] < 3:
            raise ValueError(f"feats must be (batch, frames >= 3, dim), got {tuple(feats.shape)}")
        x = self.proj(feats).transpose(1, 2).unsqueeze(1)  # (B, 1, proj_dim, T)
        x = F.selu(self.first_bn(F.max_pool2d(x, (3, 3))))
        x = F.selu(self.encoder_bn(self.encoder(x)))  # (B, C, F, T')
        w = self.attention(x)

        spectral = (x * torch.softmax(w, dim=-1)).sum(dim=-1).transpose(
            1, 2
        ) + self.pos_s  # (B, F, C)
        temporal = (x * torch.softmax(w, dim=-2)).sum(dim=-2).transpose(1, 2)  # (B, T', C)
        s = self.pool_s(self.gat_s(spectral))
        t = self.pool_t(self.gat_t(temporal))

        return hs_gal_readout(self, t, s)


def _branch(
    head: nn.Module,
    t: Tensor,
    s: Tensor,
    master: Tensor,
    first: HeteroGraphAttention,
    second: HeteroGraphAttention,
    pool_t: GraphPool,
    pool_s: GraphPool,
) -> tuple[Tensor, Tensor, Tensor]:
    """One HS-GAL branch: graph layer, pooling, a second graph layer added residually."""
    t, s, master = first(t, s, master)
    t, s = pool_t(t), pool_s(s)
    t_aug, s_aug, m_aug = second(t, s, master)
    return head.drop_way(t + t_aug), head.drop_way(s + s_aug), head.drop_way(master + m_aug)


def hs_gal_readout(head: nn.Module, t: Tensor, s: Tensor) -> Tensor:
    """The back half shared by the SSL and raw-waveform AASIST heads: two HS-GAL branches, each
    with its own master node, their element-wise max, the readout ``[max|T|, mean T, max|S|,
    mean S, master]`` and the output layer. ``head`` holds ``master1/2``, ``hs_gal11/12/21/22``,
    ``pool_ht1/hs1/ht2/hs2``, ``drop_way``, ``drop`` and ``out`` (the seeds' names)."""
    b = t.shape[0]
    t1, s1, m1 = _branch(
        head,
        t,
        s,
        head.master1.expand(b, -1, -1),
        head.hs_gal11,
        head.hs_gal12,
        head.pool_ht1,
        head.pool_hs1,
    )
    t2, s2, m2 = _branch(
        head,
        t,
        s,
        head.master2.expand(b, -1, -1),
        head.hs_gal21,
        head.hs_gal22,
        head.pool_ht2,
        head.pool_hs2,
    )
    t, s, master = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)
    hidden = torch.cat(
        [t.abs().amax(dim=1), t.mean(dim=1), s.abs().amax(dim=1), s.mean(dim=1), master.squeeze(1)],
        dim=1,
    )
    return head.out(head.drop(hidden))


def aasist_xlsr300m(n_logits: int = 2) -> AASIST:
    """The seed's SSL-AASIST head on XLS-R 300M features (1024-d): 447,242 parameters."""
    return AASIST(in_dim=1024, n_logits=n_logits)
