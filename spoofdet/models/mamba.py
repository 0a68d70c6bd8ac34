"""Mamba back-ends on SSL features: XLSR-Mamba "DuaBiMamba" and Fake-Mamba "PN-BiMamba".

Both heads map ``feats[B, T, D] -> logits[B, n_logits]``, T >= 1: :class:`XLSRMamba` (two stacks
of :class:`MambaBlock`, one per time direction) and :class:`FakeMamba` (:class:`PNBiMambaBlock`,
one mixer run on both directions). :class:`MambaMixer` is Mamba v1 in mamba-ssm's layout, so its
state dicts load; the scan is :mod:`spoofdet.models.selective_scan`.

XLSR-Mamba's final norm: ``final_norm="seed"`` (default) computes what the published checkpoints
do, ``RMSNorm(x + residual)`` with x the stack input and the residual taken before the last
block's output is added, so the last block of each stack is skipped (tied in with weight 0 for
DDP). ``final_norm="last_block"`` (mamba-ssm's ``MixerModel``, every block counts) is for training
new models only. Data flow, parameter counts, the seed's code: docs/design/mamba_scan.md.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spoofdet.models.selective_scan import (
    _kernels,
    mamba_kernels_status,
    selective_scan,
    selective_scan_sequential,
)

__all__ = [
    "FakeMamba",
    "MambaBlock",
    "MambaMixer",
    "PNBiMambaBlock",
    "XLSRMamba",
    "XLSR_MAMBA_FINAL_NORMS",
    # re-exported from spoofdet.models.selective_scan for this release only; import them from there
    "mamba_kernels_status",
    "selective_scan",
    "selective_scan_sequential",
]


def _fp32_or_more(t: Tensor) -> Tensor:
    """The SSM parameters go to the scan in float32 (as mamba-ssm does), or float64 if they are."""
    return t if t.dtype == torch.float64 else t.float()


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    return value


def _init_dt_proj(
    dt_proj: nn.Linear, dt_init: str, std: float, dt_min: float, dt_max: float, floor: float
) -> None:
    """mamba-ssm's dt_proj init: weight ``U(+-std)`` (or ``std``), bias the inverse softplus of
    step sizes log-uniform in [dt_min, dt_max], floored at ``floor``."""
    with torch.no_grad():
        if dt_init == "constant":
            dt_proj.weight.fill_(std)
        else:
            dt_proj.weight.uniform_(-std, std)
        log_min, log_max = math.log(dt_min), math.log(dt_max)
        dt = torch.exp(torch.rand(dt_proj.out_features) * (log_max - log_min) + log_min)
        dt = dt.clamp(min=floor)
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) == dt
    dt_proj.bias._no_reinit = True


class MambaMixer(nn.Module):
    """Mamba (v1) mixer, ``(B, L, d_model) -> (B, L, d_model)``, laid out as mamba-ssm's ``Mamba``.

    in_proj (no bias) splits into x and the gate z (``d_inner = expand * d_model`` each); x goes
    through a depthwise causal conv1d (bias) and SiLU; x_proj (no bias) gives the low-rank dt,
    B and C; dt_proj (bias, applied inside the scan as ``delta_bias`` with softplus) maps dt to
    ``d_inner`` step sizes; ``A = -exp(A_log)``; the scan output is gated by ``silu(z)`` and
    out_proj (no bias) maps back. Initialisation as mamba-ssm: dt_proj as
    :func:`_init_dt_proj`, ``A_log = log(1..d_state)`` per channel, ``D = 1``; PyTorch defaults
    elsewhere.

    Args:
        d_model: Model width.
        d_state: State size N per channel.
        d_conv: Causal convolution width.
        expand: ``d_inner = int(expand * d_model)``.
        dt_rank: Rank of dt, or ``"auto"`` = ``ceil(d_model / 16)``.
        dt_min: Smallest initial step size.
        dt_max: Largest initial step size.
        dt_init: ``"random"`` or ``"constant"`` dt_proj weight.
        dt_scale: Scale of the dt_proj weight init.
        dt_init_floor: Floor of the initial step sizes.
        conv_bias: Bias in conv1d.
        bias: Bias in in_proj and out_proj.

    Raises:
        ValueError: for an invalid argument (named).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = _positive_int("d_model", d_model)
        self.d_state = _positive_int("d_state", d_state)
        self.d_conv = _positive_int("d_conv", d_conv)
        if (
            isinstance(expand, bool)
            or not isinstance(expand, (int, float))
            or int(expand * d_model) < 1
        ):
            raise ValueError(f"expand={expand!r}: must be a number with int(expand * d_model) >= 1")
        self.d_inner = d_inner = int(expand * d_model)
        self.dt_rank = (
            math.ceil(d_model / 16) if dt_rank == "auto" else _positive_int("dt_rank", dt_rank)
        )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min={dt_min!r}, dt_max={dt_max!r}: need 0 < dt_min <= dt_max")
        if dt_init not in ("random", "constant"):
            raise ValueError(f"dt_init={dt_init!r}: must be 'random' or 'constant'")
        if not dt_init_floor > 0:
            raise ValueError(f"dt_init_floor={dt_init_floor!r}: must be > 0")

        # Creation order (and so the RNG stream) follows mamba-ssm.
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank**-0.5 * dt_scale
        _init_dt_proj(self.dt_proj, dt_init, std, dt_min, dt_max, dt_init_floor)
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """(B, L, d_model) -> (B, L, d_model)."""
        length = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)  # (B, d_inner, L) each
        conv_fn = _kernels()[1] if x.is_cuda else None
        if conv_fn is not None and 2 <= self.d_conv <= 4:
            x = conv_fn(
                x.contiguous(), self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu"
            )
        else:
            x = F.silu(self.conv1d(x)[..., :length])
        dt, b, c = self.x_proj(x.transpose(1, 2)).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias goes in as delta_bias
        y = selective_scan(
            x,
            delta,
            -torch.exp(_fp32_or_more(self.A_log)),
            b.transpose(1, 2).contiguous(),
            c.transpose(1, 2).contiguous(),
            _fp32_or_more(self.D),
            z=z,
            delta_bias=_fp32_or_more(self.dt_proj.bias),
            delta_softplus=True,
        )
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    """mamba-ssm's pre-norm ``Block``: ``(h, res) -> (mixer(norm(res + h)), res + h)``.

    The caller owns the residual stream, kept in float32 when ``residual_in_fp32``.

    Args:
        d_model: Model width.
        d_state: Mixer state size.
        d_conv: Mixer convolution width.
        expand: Mixer expansion.
        norm_eps: RMSNorm epsilon.
        residual_in_fp32: Keep the residual stream in float32.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
    ) -> None:
        super().__init__()
        self.mixer = MambaMixer(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.residual_in_fp32 = residual_in_fp32

    def forward(
        self, hidden_states: Tensor, residual: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        residual = hidden_states if residual is None else residual + hidden_states
        hidden_states = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = _fp32_or_more(residual)
        return self.mixer(hidden_states), residual


def _attention_pool(score: nn.Linear, x: Tensor) -> Tensor:
    """(B, T, d) -> (B, d): average over time weighted by ``softmax_t(score(x_t))``."""
    return (torch.softmax(score(x), dim=1) * x).sum(1)


def _check_feats(feats: Tensor, in_dim: int) -> None:
    if feats.dim() != 3 or feats.shape[1] < 1 or feats.shape[2] != in_dim:
        raise ValueError(
            f"feats: expected (batch, frames >= 1, {in_dim}), got shape {tuple(feats.shape)}"
        )


def _check_common(in_dim: int, d_model: int, d_state: int, d_conv: int, n_logits: int) -> None:
    for name, value in (
        ("in_dim", in_dim),
        ("d_model", d_model),
        ("d_state", d_state),
        ("d_conv", d_conv),
        ("n_logits", n_logits),
    ):
        _positive_int(name, value)


#: ``final_norm`` values of :class:`XLSRMamba` (see the module docstring).
XLSR_MAMBA_FINAL_NORMS = ("seed", "last_block")


class XLSRMamba(nn.Module):
    """XLSR-Mamba's "DuaBiMamba" back-end, ``feats[B, T, in_dim] -> logits[B, n_logits]``.

    Data flow and parameter count (1,936,950 with the defaults): docs/design/mamba_scan.md; the
    two ``final_norm`` modes: the module docstring. As in mamba-ssm's ``MixerModel`` (which the
    seed's stacks follow), each out_proj weight is scaled by ``1 / sqrt(n_layers / 2)`` at init,
    mamba-ssm's "rescale prenorm residual".

    Args:
        in_dim: Feature size of the front-end.
        d_model: Width of the Mamba stacks.
        n_layers: Mamba blocks in total, half per direction (even).
        d_state: Mixer state size.
        d_conv: Mixer convolution width.
        expand: Mixer expansion.
        n_logits: Output size (index 1 = bona fide for 2).
        dropout: After the input SELU and after the ``2d -> d`` layer.
        final_norm: ``"seed"`` (default): what the seed computes; the last block of each stack
            is not run (its parameters stay, so seed checkpoints load, and get zero gradients).
            ``"last_block"``: every block counts. Same parameters in both; module docstring.

    Raises:
        ValueError: for an invalid argument (named).
    """

    def __init__(
        self,
        in_dim: int = 1024,
        d_model: int = 144,
        n_layers: int = 12,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        n_logits: int = 2,
        dropout: float = 0.1,
        final_norm: str = "seed",
    ) -> None:
        super().__init__()
        _check_common(in_dim, d_model, d_state, d_conv, n_logits)
        if _positive_int("n_layers", n_layers) % 2:
            raise ValueError(
                f"n_layers={n_layers!r}: must be even (half the blocks read each direction)"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout!r}: must be in [0, 1)")
        if final_norm not in XLSR_MAMBA_FINAL_NORMS:
            raise ValueError(
                f"final_norm={final_norm!r}: must be one of {XLSR_MAMBA_FINAL_NORMS} "
                "('seed' computes what the published XLSR-Mamba computes)"
            )
        self.in_dim = in_dim
        self.final_norm = final_norm
        self.proj = nn.Linear(in_dim, d_model)
        self.bn = nn.BatchNorm2d(1)
        self.act = nn.SELU()
        self.dropout = nn.Dropout(dropout)
        block = functools.partial(
            MambaBlock, d_model, d_state=d_state, d_conv=d_conv, expand=expand
        )
        self.forward_layers = nn.ModuleList(block() for _ in range(n_layers // 2))
        self.backward_layers = nn.ModuleList(block() for _ in range(n_layers // 2))
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.forward_pool = nn.Linear(d_model, 1)
        self.backward_pool = nn.Linear(d_model, 1)
        self.fc = nn.Linear(2 * d_model, d_model)
        self.fc_dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, n_logits)
        with torch.no_grad():
            for layer in (*self.forward_layers, *self.backward_layers):
                layer.mixer.out_proj.weight.div_(math.sqrt(n_layers // 2))

    def _stream(self, layers: nn.ModuleList, x: Tensor) -> Tensor:
        """The residual stream after the stack: ``x`` plus the output of every block run."""
        # "seed": the last block's output never reaches the seed's final norm, so it is not run.
        run = layers if self.final_norm == "last_block" else layers[:-1]
        hidden, residual = x, None
        for layer in run:
            hidden, residual = layer(hidden, residual)
        return hidden if residual is None else residual + hidden

    def _norm(self, stream: Tensor, x: Tensor) -> Tensor:
        # "seed": mamba-ssm's fused add+norm called with the stack *input* as hidden_states, i.e.
        # RMSNorm(x + stream). For both directions x is the un-flipped input, so the backward
        # stream (reversed time) at position t is added to x at t, not at T - 1 - t.
        if self.final_norm == "seed":
            stream = x + stream
        return self.norm_f(stream.to(self.norm_f.weight.dtype))

    def _zero_grad_to_unused(self, logits: Tensor) -> Tensor:
        """``logits`` unchanged, with the blocks "seed" never runs tied in with weight 0, so that
        they get (zero) gradients: DDP raises on parameters that get none."""
        if self.final_norm != "seed" or not torch.is_grad_enabled():
            return logits
        last_blocks = (self.forward_layers[-1], self.backward_layers[-1])
        unused = [p for block in last_blocks for p in block.parameters() if p.requires_grad]
        if not unused:
            return logits
        # One element per tensor (a sum of whole tensors could overflow and turn 0 * inf into NaN).
        tie = torch.stack([p.reshape(-1)[0].to(logits.dtype) for p in unused]).sum()
        return logits + 0.0 * tie

    def forward(self, feats: Tensor) -> Tensor:
        """(B, T, in_dim) -> (B, n_logits); raises ValueError for another shape."""
        _check_feats(feats, self.in_dim)
        x = self.dropout(self.act(self.bn(self.proj(feats).unsqueeze(1)).squeeze(1)))
        fwd = self._norm(self._stream(self.forward_layers, x), x)
        bwd = self._norm(self._stream(self.backward_layers, x.flip(1)), x)
        pooled = torch.cat(
            [_attention_pool(self.forward_pool, fwd), _attention_pool(self.backward_pool, bwd)],
            dim=-1,
        )
        return self._zero_grad_to_unused(self.classifier(self.fc_dropout(self.fc(pooled))))


class PNBiMambaBlock(nn.Module):
    """Fake-Mamba's PN-BiMamba block, ``(B, T, d) -> (B, T, d)``.

    ``h = LN1(x)``; ``f = mixer(h)``; ``b = flip(mixer(flip(h)))`` with the same mixer;
    ``out = FFN(LN2(f + b)) + x``, FFN = Linear ``d -> ffn_mult * d`` -> GELU -> Linear back
    (no dropout). 312,624 parameters at d 144 with the other defaults.

    Args:
        d_model: Width.
        d_state: Mixer state size.
        d_conv: Mixer convolution width.
        expand: Mixer expansion.
        ffn_mult: FFN hidden size over d_model.
    """

    def __init__(
        self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: float = 2, ffn_mult: int = 4
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = MambaMixer(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm2 = nn.LayerNorm(d_model)
        hidden = ffn_mult * d_model
        self.ffn = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        # one mixer call for both directions
        fwd, bwd = self.mixer(torch.cat([h, h.flip(1)], dim=0)).chunk(2, dim=0)
        return self.ffn(self.norm2(fwd + bwd.flip(1))) + x


class FakeMamba(nn.Module):
    """Fake-Mamba's PN-BiMamba back-end, ``feats[B, T, in_dim] -> logits[B, n_logits]``.

    Linear ``in_dim -> d_model`` -> BatchNorm2d(1) -> SELU -> ``n_blocks`` x
    :class:`PNBiMambaBlock` -> attention pooling -> Linear ``d_model -> n_logits``. 2,336,405
    parameters with the defaults (docs/design/mamba_scan.md).

    Args:
        in_dim: Feature size of the front-end.
        d_model: Block width.
        n_blocks: Number of PN-BiMamba blocks.
        d_state: Mixer state size.
        d_conv: Mixer convolution width.
        expand: Mixer expansion.
        ffn_mult: FFN hidden size over d_model.
        n_logits: Output size (index 1 = bona fide for 2).

    Raises:
        ValueError: for an invalid argument (named).
    """

    def __init__(
        self,
        in_dim: int = 1024,
        d_model: int = 144,
        n_blocks: int = 7,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        ffn_mult: int = 4,
        n_logits: int = 2,
    ) -> None:
        super().__init__()
        _check_common(in_dim, d_model, d_state, d_conv, n_logits)
        _positive_int("n_blocks", n_blocks)
        _positive_int("ffn_mult", ffn_mult)
        self.in_dim = in_dim
        self.proj = nn.Linear(in_dim, d_model)
        self.bn = nn.BatchNorm2d(1)
        self.act = nn.SELU()
        self.blocks = nn.ModuleList(
            PNBiMambaBlock(
                d_model, d_state=d_state, d_conv=d_conv, expand=expand, ffn_mult=ffn_mult
            )
            for _ in range(n_blocks)
        )
        self.pool = nn.Linear(d_model, 1)
        self.classifier = nn.Linear(d_model, n_logits)

    def forward(self, feats: Tensor) -> Tensor:
        """(B, T, in_dim) -> (B, n_logits); raises ValueError for another shape."""
        _check_feats(feats, self.in_dim)
        x = self.act(self.bn(self.proj(feats).unsqueeze(1)).squeeze(1))
        for block in self.blocks:
            x = block(x)
        return self.classifier(_attention_pool(self.pool, x))
