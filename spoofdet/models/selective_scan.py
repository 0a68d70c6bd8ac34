"""Mamba v1 selective scan: mamba-ssm's CUDA kernels when usable, else a parallel PyTorch scan.

:func:`selective_scan` has mamba-ssm's ``selective_scan_fn`` signature and layout. On CUDA tensors
with a working ``mamba_ssm`` install its kernel runs; everywhere else the pure-PyTorch scan runs:
parallel over time (an odd-even scan, O(L) work in ceil(log2 L) levels), in chunks whose last
state enters the next, with a custom autograd backward that is the same scan run backwards in
time. The only exponent evaluated is one step's ``delta * A`` (<= 0), so nothing overflows that
the recurrence would not. :func:`selective_scan_sequential` is the step loop it is tested against
(float32 results within ~2e-7 of max|y|); :func:`mamba_kernels_status` says which CUDA kernels
are usable, or why not. Design, numerics and speed: docs/design/mamba_scan.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mamba_kernels_status", "selective_scan", "selective_scan_sequential"]

# Its own logger: importing mamba.py's would close an import cycle (mamba.py imports this module).
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
    chunk's tensors in cache (fastest in our measurements, docs/design/mamba_scan.md)."""
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


def _check_scan_options(chunk_size: int | None, backend: str) -> None:
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size={chunk_size!r}: must be None or an integer >= 1")
    if backend not in ("auto", "torch", "mamba_ssm"):
        raise ValueError(f"backend={backend!r}: must be 'auto', 'torch' or 'mamba_ssm'")


def _kernel_for(u: Tensor, backend: str) -> Callable | None:
    """mamba-ssm's scan kernel when ``backend`` allows it and it can run on ``u``, else None.

    Raises ValueError for ``backend="mamba_ssm"`` when the kernel cannot run (saying why).
    """
    if backend != "torch" and u.is_cuda:
        kernel = _kernels()[0]
        if kernel is not None and u.dtype in _KERNEL_DTYPES:
            return kernel
    if backend == "mamba_ssm":
        raise ValueError(
            "backend='mamba_ssm' needs CUDA tensors of dtype float32/float16/bfloat16 and the "
            f"kernel (got device {u.device}, dtype {u.dtype}; {mamba_kernels_status()})"
        )
    return None


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
    dtype. The pure-PyTorch path is the parallel scan of docs/design/mamba_scan.md.

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
    _check_scan_options(chunk_size, backend)
    kernel = _kernel_for(u, backend)
    if kernel is not None:
        return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
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
