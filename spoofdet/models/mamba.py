"""Mamba back-ends on SSL features: XLSR-Mamba "DuaBiMamba" and Fake-Mamba "PN-BiMamba".

Both heads map ``feats[B, T, D] -> logits[B, n_logits]`` for any T >= 1 and start alike: Linear
``D -> d_model`` per frame, BatchNorm2d(1) over the (B, 1, T, d_model) map, SELU.

* :class:`XLSRMamba` (Xiao & Das, 2025): dropout, then two independent stacks of
  ``n_layers / 2`` pre-norm Mamba blocks (:class:`MambaBlock`: add -> RMSNorm -> mixer, the
  residual stream kept in fp32), one on x and one on x reversed in time; ONE final RMSNorm
  (``norm_f``) applied to each direction (see below); an attention pooling per direction;
  concat -> Linear ``2d -> d`` -> dropout -> Linear ``d -> n_logits``. **1,936,950** parameters
  with the defaults on 1024-d features, as in the seed: 147,600 projection + 2 BatchNorm + 12 x
  (145,440 mixer + 144 norm) + 144 final norm + 2 x 145 pooling + 41,616 + 290.
* :class:`FakeMamba` (Xuan et al., 2025): seven :class:`PNBiMambaBlock` (LayerNorm -> one
  Mamba mixer run on x and on x reversed, sharing its weights -> LayerNorm of the sum -> FFN
  ``d -> 4d -> GELU -> d`` plus the block input), attention pooling, Linear ``d -> n_logits``.
  **2,336,405** parameters with the defaults on 1024-d features: 7 x 312,624 per block
  (2,188,368, the seed's "2.19M encoder") + 147,600 projection + 2 BatchNorm + 145 pooling +
  290 classifier. The seed notes' "~2.34M" is this figure rounded.

XLSR-Mamba's final norm (``final_norm``). The seed (swagshaw/XLSR-Mamba ``mamba_blocks.py``,
``MixerModel.forward``, bidirectional branch) ends each stack with mamba-ssm's fused add+norm
called as ``rms_norm_fn(hidden_states, ..., residual=f_residual)`` (and ``b_residual``), where
``hidden_states`` is the stack *input* (the dropped-out x, not flipped for either direction) and
the residual is the stream the last block returned, i.e. before that block's mixer output is
added. So the seed computes ``RMSNorm(x + x + h_1 + ... + h_{n-1})`` forward and, at position t
of the reversed stream, ``RMSNorm(x[t] + x[T-1-t] + ...)`` backward; the last block of each stack
never reaches the classifier. ``final_norm="seed"`` (the default) computes exactly that, so the
published checkpoints score as published; it skips the two dead blocks (same output, less work)
and ties their parameters into the logits with weight 0 while gradients are on, so that DDP sees
every parameter used. ``final_norm="last_block"`` is mamba-ssm's ``MixerModel`` behaviour,
``RMSNorm(residual + last block output)`` per stack in its own time order: every block counts,
for training new models only (a seed checkpoint loads, but computes something else). Both modes
use one ``norm_f`` for the two directions, as the seed does.

Fake-Mamba runs its shared mixer once on the batch ``[x; reversed x]`` instead of twice (same
result).

The mixer (:class:`MambaMixer`) is Mamba v1 with mamba-ssm's ``Mamba`` layout, parameter names
and initialisation (145,440 parameters at d_model 144), so mamba-ssm state dicts load. On CUDA
with a working ``mamba_ssm`` (and ``causal_conv1d``) install its kernels run the scan and the
convolution; everywhere else :func:`selective_scan` is pure PyTorch.

The pure-PyTorch scan is parallel over time. With ``a_t = exp(delta_t * A)`` and
``x_t = delta_t * u_t * B_t`` the state obeys ``h_t = a_t * h_{t-1} + x_t``; steps combine
associatively, ``(a2, x2) o (a1, x1) = (a2 * a1, a2 * x1 + x2)``, so each pair of neighbouring
steps is merged into one step of a half-length sequence, that sequence is scanned recursively
(giving the odd states), and the even states follow from their odd predecessors in one
vectorised step: an odd-even, work-efficient scan with O(L) work in ceil(log2 L) levels and no
Python loop over time. The time axis is cut into chunks scanned one after the other, the last
state of a chunk entering the next through its first input; by default a chunk holds about
2**18 state elements on CPU (it stays in cache, which was fastest) and the whole sequence on
GPU. Backward is a custom autograd function: the adjoint ``g_t = dLoss/dh_t`` obeys
``g_t = a_{t+1} g_{t+1} + C_t dy_t``, the same scan run backwards in time, so training keeps
only the states of each chunk rather than every intermediate of the recursion.

Numerics: the only exponent ever evaluated is ``delta * A`` of a single step (<= 0 for the
Mamba parameterisation ``A = -exp(A_log)``, ``delta >= 0``), so every factor is in [0, 1]; the
scan multiplies such factors and adds weighted inputs, never divides and never takes the exp of
a sum. Nothing can overflow that the recurrence itself would not, and strong decays underflow to
exact zeros. We did not use the ``exp(S_t - S_s)`` form with ``S = cumsum(delta * A)``: its
factorised version ``exp(S_t) * exp(-S_s)`` overflows float32 once a chunk accumulates ~88 nats
of decay (one step of delta = 6 at A = -16), subtracting long cumsums loses about
``|S| * 2**-24`` absolute in each exponent, and the masked pairwise version is exact but needs
chunk-length times more memory (A differs per channel and state in Mamba v1, so there is no
matrix form as in Mamba-2). The additions happen in tree order instead of left to right: in
float32 the result is within ~2e-7 of max|y| of the step loop (itself ~2e-7 from float64), for
step sizes from 1e-3 (decays ~1, L = 1000) to 120 (decays underflowing to 0), see the tests.

Speed (CPU, one thread, float32, softplus/D/z on, min of 9 runs; ``benchmarks/models.py`` owns
the official figures): B=4, D=288, L=208, N=16: forward 31 ms vs 52 ms for the step loop,
forward+backward 91 vs 86 ms; L=1000: 151 vs 346 ms and 455 vs 767 ms; B=1, D=64, L=1000: 8.6 vs
21 ms and 31 vs 79 ms. On GPU the loop costs several kernel launches per step, the scan a few
per level.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FakeMamba",
    "MambaBlock",
    "MambaMixer",
    "PNBiMambaBlock",
    "XLSRMamba",
    "XLSR_MAMBA_FINAL_NORMS",
    "mamba_kernels_status",
    "selective_scan",
    "selective_scan_sequential",
]

logger = logging.getLogger(__name__)

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------------------
# Optional CUDA kernels


@functools.cache
def _kernels() -> tuple[Callable | None, Callable | None, str]:
    """``(selective_scan_fn, causal_conv1d_fn, status)``: imported and tried once, on first CUDA use.

    Any exception counts as "not usable": without CUDA the import raises ImportError, and a build
    for another torch/CUDA raises OSError, RuntimeError, AttributeError, or a TypeError such as
    ``causal_conv1d_fwd(): incompatible function arguments`` only when called (seeds.md section
    9), hence the tiny trial call on the current CUDA device.
    """
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        one = torch.ones(1, 1, 2, device="cuda")
        selective_scan_fn(one, one, -one[0, :, :1], one, one)
    except Exception as exc:  # noqa: BLE001 - a broken extension may raise anything
        status = (
            f"mamba_ssm unusable ({type(exc).__name__}: {exc}); the pure-PyTorch scan runs instead"
        )
        logger.debug(status)
        return None, None, status
    try:
        from causal_conv1d import causal_conv1d_fn

        causal_conv1d_fn(
            torch.ones(1, 8, 4, device="cuda"),
            torch.ones(8, 4, device="cuda"),
            None,
            activation="silu",
        )
    except Exception as exc:  # noqa: BLE001
        status = (
            f"mamba_ssm scan kernel in use; causal_conv1d unusable ({type(exc).__name__}: {exc})"
        )
        logger.debug(status)
        return selective_scan_fn, None, status
    return (
        selective_scan_fn,
        causal_conv1d_fn,
        "mamba_ssm scan and causal_conv1d kernels in use on CUDA",
    )


def mamba_kernels_status() -> str:
    """One line saying which CUDA kernels are usable and, if not, why (imports them once)."""
    return _kernels()[2]


# ----------------------------------------------------------------------------------------------
# Selective scan


def _check_scan_args(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> None:
    if u.dim() != 3 or u.shape[2] < 1:
        raise ValueError(f"u: expected (batch, channels, length >= 1), got shape {tuple(u.shape)}")
    b, d, length = u.shape
    if A.dim() != 2 or A.shape[0] != d or A.is_complex():
        raise ValueError(
            f"A: expected real (channels={d}, d_state), got shape {tuple(A.shape)} dtype {A.dtype}"
        )
    n = A.shape[1]
    expected = {
        "delta": (delta, (b, d, length)),
        "B": (B, (b, n, length)),
        "C": (C, (b, n, length)),
        "D": (D, (d,)),
        "z": (z, (b, d, length)),
        "delta_bias": (delta_bias, (d,)),
    }
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(
                f"{name}: expected shape {shape}, got {tuple(t.shape)} "
                "(layout u, delta, z: (batch, channels, length); B, C: (batch, d_state, length))"
            )


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _readout(h: Tensor, c: Tensor) -> Tensor:
    """``y[b, t, d] = sum_n h[b, t, d, n] * c[b, t, n]``."""
    return (h * c.unsqueeze(-2)).sum(-1)


def _scan_into(a: Tensor, x: Tensor, out: Tensor) -> Tensor:
    """Write all states of ``h_t = a_t * h_{t-1} + x_t`` (h_{-1} = 0) along dim 1 into ``out``.

    Odd-even recursion: merging steps (2k, 2k+1) gives a half-length scan whose states are the
    odd states; each even state then follows from its odd predecessor. Writes in place, so it
    must run without autograd (it is the engine of :class:`_ChunkScan` and of inference).
    """
    length = x.shape[1]
    if length == 1:
        return out.copy_(x)
    m = length // 2 * 2
    a_even, a_odd, x_even, x_odd = a[:, 0:m:2], a[:, 1:m:2], x[:, 0:m:2], x[:, 1:m:2]
    h_odd = _scan_into(a_odd * a_even, torch.addcmul(x_odd, a_odd, x_even), out[:, 1:m:2])
    out[:, 0] = x[:, 0]
    torch.addcmul(x_even[:, 1:], a_even[:, 1:], h_odd[:, :-1], out=out[:, 2:m:2])
    if length > m:
        torch.addcmul(x[:, -1], a[:, -1], h_odd[:, -1], out=out[:, -1])
    return out


class _ChunkScan(torch.autograd.Function):
    """``(a, x, c) -> (y, last state)`` of one chunk, with a reverse-time scan as its backward.

    The adjoint ``g_t = dLoss/dh_t`` obeys ``g_t = a_{t+1} g_{t+1} + c_t gy_t``, the same kind of
    recurrence backwards in time, so backward costs about one forward scan and keeps only the
    states h instead of every intermediate of the recursion.
    """

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        h = _scan_into(a, x, torch.empty_like(x))
        ctx.save_for_backward(a, c, h)
        return _readout(h, c), h[:, -1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor, grad_last: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, c, h = ctx.saved_tensors
        length = a.shape[1]
        # Scan in reversed time r = L-1-t, where the decay of step r is a_{t+1} (the one at r = 0
        # multiplies a zero state); only the small (b, L, .) tensors are flipped before the product.
        src = grad_y.flip(1).unsqueeze(-1) * c.flip(1).unsqueeze(-2)
        src[:, 0] += grad_last
        order = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(length - 1, 0, -1)]).to(
            a.device
        )
        g = _scan_into(a.index_select(1, order), src, torch.empty_like(src)).flip(1)
        grad_a = torch.empty_like(a)
        grad_a[:, 0] = 0
        torch.mul(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
        grad_c = (grad_y.unsqueeze(-1) * h).sum(2)
        return grad_a, g, grad_c


def _auto_chunk_size(
    batch: int, channels: int, length: int, d_state: int, device: torch.device
) -> int:
    """Whole sequence on accelerators; on CPU chunks of ~2**18 state elements, which keeps a
    chunk's tensors in cache (fastest in our measurements, see the module docstring)."""
    if device.type != "cpu":
        return length
    return max(16, 2**18 // (batch * channels * d_state))


def _selective_scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor]:
    dtype = _compute_dtype(u)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype).unsqueeze(-1)
    if delta_softplus:
        delta = F.softplus(delta)
    # Time-major views (b, L, d) and (b, L, n): each time step is then a contiguous (d, n) slab.
    u_t, delta_t, b_t, c_t = (
        u.transpose(1, 2),
        delta.transpose(1, 2),
        B.transpose(1, 2),
        C.transpose(1, 2),
    )
    if chunk_size is None:
        chunk_size = _auto_chunk_size(*u.shape, A.shape[1], u.device)
    ys, last = [], None
    for d, u_c, b_c, c_c in zip(*(t.split(chunk_size, dim=1) for t in (delta_t, u_t, b_t, c_t))):
        a = torch.exp(d.unsqueeze(-1) * A)  # (b, t, d, n)
        x = (d * u_c).unsqueeze(-1) * b_c.unsqueeze(2)  # (b, t, d, n)
        if last is not None:  # the carried state enters through the chunk's first step
            x = torch.cat([torch.addcmul(x[:, :1], a[:, :1], last.unsqueeze(1)), x[:, 1:]], 1)
        if torch.is_grad_enabled() and (a.requires_grad or x.requires_grad or c_c.requires_grad):
            y, last = _ChunkScan.apply(a, x, c_c)
        else:
            h = _scan_into(a, x, torch.empty_like(x))
            y, last = _readout(h, c_c), h[:, -1].clone()
        ys.append(y)
    y = (ys[0] if len(ys) == 1 else torch.cat(ys, 1)).transpose(1, 2)  # (b, d, L)
    if D is not None:
        y = y + u * D.to(dtype).unsqueeze(-1)
    if z is not None:
        y = y * F.silu(z.to(dtype))
    return y, last


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan with mamba-ssm's ``selective_scan_fn`` signature and layout.

    ``delta <- softplus(delta + delta_bias)`` (each step optional), then per channel d and state
    n: ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = <h_t, C_t> + D u_t``, and
    ``out = y * silu(z)``. Computed in float32 (float64 for float64 ``u``), returned as ``u``'s
    dtype. The pure-PyTorch path is the parallel scan of the module docstring.

    Args:
        u: (batch, channels, length) input.
        delta: (batch, channels, length) step sizes (before ``delta_bias`` / softplus).
        A: (channels, d_state) real state matrix diagonal, normally negative.
        B: (batch, d_state, length) input projection per step.
        C: (batch, d_state, length) output projection per step.
        D: optional (channels,) skip weight.
        z: optional (batch, channels, length) gate.
        delta_bias: optional (channels,) added to ``delta``.
        delta_softplus: apply softplus to ``delta``.
        return_last_state: also return the final state (batch, channels, d_state).
        chunk_size: pure-PyTorch path only: scan the time axis in chunks of this many steps,
            carrying the state from one to the next (any value gives the same result up to
            rounding). ``None`` picks one: the whole sequence on accelerators, chunks of about
            2**18 state elements on CPU (cache-friendly).
        backend: ``"auto"`` (mamba-ssm's kernel for CUDA tensors of a kernel dtype when it is
            usable, else PyTorch), ``"torch"``, or ``"mamba_ssm"`` (fails if unusable).

    Returns:
        ``out`` (batch, channels, length), or ``(out, last_state)``. The PyTorch path returns a
        transposed (non-contiguous) view.

    Raises:
        ValueError: for a tensor of the wrong shape (named), a bad ``chunk_size`` or ``backend``,
            or ``backend="mamba_ssm"`` when the kernel cannot run (the message says why).
    """
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size={chunk_size!r}: must be None or an integer >= 1")
    if backend not in ("auto", "torch", "mamba_ssm"):
        raise ValueError(f"backend={backend!r}: must be 'auto', 'torch' or 'mamba_ssm'")
    if backend != "torch" and u.is_cuda:
        kernel = _kernels()[0]
        if kernel is not None and u.dtype in _KERNEL_DTYPES:
            return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "mamba_ssm":
        raise ValueError(
            f"backend='mamba_ssm' needs CUDA tensors of dtype float32/float16/bfloat16 and the kernel "
            f"(got device {u.device}, dtype {u.dtype}; {mamba_kernels_status()})"
        )
    out, last = _selective_scan_torch(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size
    )
    out = out.to(u.dtype)
    return (out, last) if return_last_state else out


def selective_scan_sequential(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference :func:`selective_scan`: the recurrence as a Python loop over time steps.

    Same arguments, layout, dtypes and result; for tests and benchmarks only (slow on GPU).

    Raises:
        ValueError: for a tensor of the wrong shape (named).
    """
    _check_scan_args(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u)
    u_c, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    decay = torch.exp(delta[..., None] * A[:, None, :])  # (b, d, L, n)
    inp = (delta * u_c)[..., None] * B.transpose(1, 2)[:, None]  # (b, d, L, n)
    h = u_c.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for a_t, x_t, c_t in zip(decay.unbind(2), inp.unbind(2), C.unbind(2)):
        h = a_t * h + x_t
        ys.append((h * c_t[:, None, :]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + u_c * D.to(dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dtype))
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y


# ----------------------------------------------------------------------------------------------
# Modules


def _fp32_or_more(t: Tensor) -> Tensor:
    """The SSM parameters go to the scan in float32 (as mamba-ssm does), or float64 if they are."""
    return t if t.dtype == torch.float64 else t.float()


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")
    return value


class MambaMixer(nn.Module):
    """Mamba (v1) mixer, ``(B, L, d_model) -> (B, L, d_model)``, laid out as mamba-ssm's ``Mamba``.

    in_proj (no bias) splits into x and the gate z (``d_inner = expand * d_model`` each); x goes
    through a depthwise causal conv1d (bias) and SiLU; x_proj (no bias) gives the low-rank dt,
    B and C; dt_proj (bias, applied inside the scan as ``delta_bias`` with softplus) maps dt to
    ``d_inner`` step sizes; ``A = -exp(A_log)``; the scan output is gated by ``silu(z)`` and
    out_proj (no bias) maps back. Initialisation as mamba-ssm: dt_proj weight ``U(+-s)`` (or
    ``s``) with ``s = dt_rank**-0.5 * dt_scale``, its bias the inverse softplus of step sizes
    log-uniform in [dt_min, dt_max] (floored at dt_init_floor), ``A_log = log(1..d_state)`` per
    channel, ``D = 1``; PyTorch defaults elsewhere.

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
        self.d_inner = int(expand * d_model)
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
            self.d_inner,
            self.d_inner,
            d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            dt = torch.exp(
                torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            )
            dt = dt.clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) == dt
        self.dt_proj.bias._no_reinit = True
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

    See the module docstring for the data flow, the parameter count (1,936,950 with the
    defaults) and the two ``final_norm`` modes. As in mamba-ssm's ``MixerModel`` (which the
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
        final_norm: ``"seed"`` (default): what the seed computes, ``RMSNorm(x + residual)`` with
            the residual stream before the last block's output is added, so the last block of
            each stack is not run (its parameters stay, so seed checkpoints load, and get zero
            gradients); ``"last_block"``: ``RMSNorm(residual + last block output)``, every block
            counts (mamba-ssm's ``MixerModel``). Same parameters in both modes.

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
        """The residual stream after the stack: ``x`` plus the output of every block run (all of
        them for "last_block"; all but the last for "seed", whose last output is never used)."""
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
        fwd, bwd = self.mixer(torch.cat([h, h.flip(1)], dim=0)).chunk(
            2, dim=0
        )  # one call, both directions
        return self.ffn(self.norm2(fwd + bwd.flip(1))) + x


class FakeMamba(nn.Module):
    """Fake-Mamba's PN-BiMamba back-end, ``feats[B, T, in_dim] -> logits[B, n_logits]``.

    Linear ``in_dim -> d_model`` -> BatchNorm2d(1) -> SELU -> ``n_blocks`` x
    :class:`PNBiMambaBlock` -> attention pooling -> Linear ``d_model -> n_logits``. 2,336,405
    parameters with the defaults (module docstring).

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
