"""Mamba back-ends: parameter counts, the parallel selective scan against the step loop, heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spoofdet.models.mamba import FakeMamba, MambaBlock, MambaMixer, PNBiMambaBlock, XLSRMamba
from spoofdet.models.selective_scan import (
    mamba_kernels_status,
    selective_scan,
    selective_scan_sequential,
)

SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are small: with several threads on shared CI cores, synchronisation costs
    more than the work (10x slower here), so run this module single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def scan_inputs(
    b: int, d: int, length: int, n: int, dtype: torch.dtype, regime: str, seed: int = 0
) -> dict:
    """Random scan inputs. ``regime`` sets the step sizes: "small" (decays ~1, long memory),
    "large" (delta * A from -5 to -1000: decays ~0 or exact underflow), "mixed" (small with rare
    huge spikes that wipe the state), "softplus" (raw N(0, 1) for delta_softplus=True)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=dtype)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    if regime == "small":
        delta = rand(b, d, length) * 1e-3
    elif regime == "large":
        delta = 5 + 45 * rand(b, d, length)
    elif regime == "mixed":
        delta = torch.where(
            rand(b, d, length) < 0.05, 20 + 100 * rand(b, d, length), 0.1 * rand(b, d, length)
        )
    else:
        delta = randn(b, d, length)
    return {
        "u": randn(b, d, length),
        "delta": delta,
        "A": -torch.exp(3 * rand(d, n)),
        "B": randn(b, n, length),
        "C": randn(b, n, length),
        "D": randn(d),
        "z": randn(b, d, length),
        "delta_bias": rand(d) * 1e-3,
    }


# ----------------------------------------------------------------------------------------------
# Parameter counts and layout


def test_parameter_counts_match_the_seeds():
    assert n_params(MambaMixer(144)) == 145_440
    assert n_params(XLSRMamba()) == 1_936_950
    assert n_params(PNBiMambaBlock(144)) == 312_624
    # 7 x 312,624 blocks + 147,600 projection + 2 BatchNorm + 145 pooling + 290 classifier
    assert n_params(FakeMamba()) == 2_336_405 == 7 * 312_624 + 147_600 + 2 + 145 + 290
    assert n_params(XLSRMamba(n_logits=1)) == 1_936_950 - 145
    assert n_params(FakeMamba(n_logits=1)) == 2_336_405 - 145


def test_mixer_layout_and_init_follow_mamba_ssm():
    torch.manual_seed(0)
    mixer = MambaMixer(144)
    shapes = {k: tuple(v.shape) for k, v in mixer.state_dict().items()}
    assert shapes == {
        "A_log": (288, 16),
        "D": (288,),
        "in_proj.weight": (576, 144),
        "conv1d.weight": (288, 1, 4),
        "conv1d.bias": (288,),
        "x_proj.weight": (41, 288),
        "dt_proj.weight": (288, 9),
        "dt_proj.bias": (288,),
        "out_proj.weight": (144, 288),
    }
    assert torch.equal(mixer.A_log, torch.log(torch.arange(1, 17.0)).repeat(288, 1))
    assert torch.equal(mixer.D, torch.ones(288))
    dt = F.softplus(mixer.dt_proj.bias.detach())
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert mixer.dt_proj.weight.abs().max() <= 9**-0.5
    block = MambaBlock(144)
    assert {k.split(".")[0] for k in block.state_dict()} == {"mixer", "norm"}


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="n_layers"):
        XLSRMamba(n_layers=5)
    with pytest.raises(ValueError, match="dropout"):
        XLSRMamba(dropout=1.0)
    with pytest.raises(ValueError, match="n_blocks"):
        FakeMamba(n_blocks=0)
    with pytest.raises(ValueError, match="dt_rank"):
        MambaMixer(16, dt_rank=0)
    with pytest.raises(ValueError, match="feats"):
        XLSRMamba(in_dim=8, d_model=8, n_layers=2)(torch.zeros(1, 5, 9))
    with pytest.raises(ValueError, match="feats"):
        FakeMamba(in_dim=8, d_model=8, n_blocks=1)(torch.zeros(1, 0, 8))
    kw = scan_inputs(1, 3, 5, 2, torch.float32, "small")
    for name, bad in (
        ("delta", torch.zeros(1, 3, 4)),
        ("B", torch.zeros(1, 3, 5)),
        ("D", torch.zeros(2)),
        ("A", torch.zeros(2, 2)),
    ):
        with pytest.raises(ValueError, match=f"^{name}:"):
            selective_scan(**{**kw, name: bad})
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**kw, chunk_size=0)
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**kw, backend="triton")
    with pytest.raises(ValueError, match="mamba_ssm"):
        selective_scan(**kw, backend="mamba_ssm")  # CPU tensors


# ----------------------------------------------------------------------------------------------
# The selective scan


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("regime", ["small", "large", "mixed", "softplus"])
def test_parallel_scan_matches_the_step_loop(dtype, regime):
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    softplus = regime == "softplus"
    for length, chunk_size, options in (
        (1, None, SCAN_ARGS),
        (2, 1, SCAN_ARGS),
        (13, 4, SCAN_ARGS),
        (208, None, SCAN_ARGS),
        (201, 7, ("u", "delta", "A", "B", "C")),
        (1000, None, SCAN_ARGS),
        (1000, 64, ("u", "delta", "A", "B", "C", "z")),
        (1000, 1000, ("u", "delta", "A", "B", "C", "D", "delta_bias")),
    ):
        kw = {k: v for k, v in scan_inputs(2, 6, length, 4, dtype, regime).items() if k in options}
        ref, ref_last = selective_scan_sequential(
            **kw, delta_softplus=softplus, return_last_state=True
        )
        out, last = selective_scan(
            **kw, delta_softplus=softplus, return_last_state=True, chunk_size=chunk_size
        )
        assert out.dtype == dtype and out.shape == (2, 6, length)
        assert torch.isfinite(out).all() and torch.isfinite(last).all()
        scale = ref.abs().max()
        torch.testing.assert_close(
            out, ref, rtol=rtol, atol=rtol * scale, msg=f"L={length} chunk={chunk_size}"
        )
        torch.testing.assert_close(last, ref_last, rtol=rtol, atol=rtol * ref_last.abs().max())


def test_parallel_scan_regimes_behave_as_expected():
    """Large steps forget: y_t only sees step t. Tiny steps remember: y_t ~ <sum_s delta_s B_s u_s, C_t>."""
    kw = scan_inputs(1, 3, 50, 4, torch.float64, "large")
    kw["delta"] += 40  # every decay <= exp(-45)
    x = (
        kw["delta"][..., None] * kw["u"][..., None] * kw["B"].transpose(1, 2)[:, None]
    )  # (b, d, L, n)
    only_now = (x * kw["C"].transpose(1, 2)[:, None]).sum(-1)
    plain = {k: kw[k] for k in ("u", "delta", "A", "B", "C")}
    torch.testing.assert_close(selective_scan(**plain), only_now, rtol=1e-12, atol=1e-12)
    kw = scan_inputs(1, 3, 50, 4, torch.float64, "small")
    kw["delta"] *= 1e-3  # total decay over 50 steps >= exp(-1e-3)
    plain = {k: kw[k] for k in ("u", "delta", "A", "B", "C")}
    x = kw["delta"][..., None] * kw["u"][..., None] * kw["B"].transpose(1, 2)[:, None]
    no_decay = (x.cumsum(2) * kw["C"].transpose(1, 2)[:, None]).sum(-1)
    torch.testing.assert_close(
        selective_scan(**plain), no_decay, rtol=2e-3, atol=2e-3 * no_decay.abs().max()
    )


def test_scan_in_half_precision_computes_in_float32():
    kw = scan_inputs(2, 4, 30, 3, torch.float32, "softplus")
    ref = selective_scan_sequential(**kw, delta_softplus=True)
    out = selective_scan(
        **{k: v.bfloat16() if k in ("u", "delta", "z") else v for k, v in kw.items()},
        delta_softplus=True,
    )
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05 * ref.abs().max())


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 5, 64])
def test_parallel_scan_gradients(chunk_size):
    kw = {
        k: v.requires_grad_()
        for k, v in scan_inputs(2, 3, 13, 4, torch.float64, "softplus", seed=1).items()
    }

    def run(fn, **extra):
        out, last = fn(**kw, delta_softplus=True, return_last_state=True, **extra)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        return torch.autograd.grad((out * weights).sum() + last.square().sum(), list(kw.values()))

    for name, got, want in zip(
        kw, run(selective_scan, chunk_size=chunk_size), run(selective_scan_sequential)
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)
    small = tuple(
        v.requires_grad_()
        for v in scan_inputs(1, 2, 9, 3, torch.float64, "softplus", seed=2).values()
    )
    assert torch.autograd.gradcheck(
        lambda *t: selective_scan(
            *t, delta_softplus=True, return_last_state=True, chunk_size=chunk_size
        ),
        small,
    )


# ----------------------------------------------------------------------------------------------
# Mixer and heads


def test_mixer_matches_a_direct_computation():
    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4, d_conv=3, expand=2).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    xi, z = mixer.in_proj(x).chunk(2, dim=-1)  # (B, L, 16)
    w = mixer.conv1d.weight[:, 0]  # (16, 3)
    padded = F.pad(xi, (0, 0, 2, 0))
    xi = F.silu(sum(padded[:, k : k + 11] * w[:, k] for k in range(3)) + mixer.conv1d.bias)
    dt, b, c = mixer.x_proj(xi).split([1, 4, 4], dim=-1)
    y = selective_scan_sequential(
        xi.transpose(1, 2),
        mixer.dt_proj(dt).transpose(1, 2),
        -torch.exp(mixer.A_log),
        b.transpose(1, 2),
        c.transpose(1, 2),
        mixer.D,
        z=z.transpose(1, 2),
        delta_softplus=True,
    )
    torch.testing.assert_close(mixer(x), mixer.out_proj(y.transpose(1, 2)), rtol=1e-10, atol=1e-12)


def test_pn_bimamba_block_runs_one_mixer_both_ways():
    torch.manual_seed(0)
    block = PNBiMambaBlock(8, d_state=4).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    h = block.norm1(x)
    want = block.ffn(block.norm2(block.mixer(h) + block.mixer(h.flip(1)).flip(1))) + x
    torch.testing.assert_close(block(x), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("head", [XLSRMamba, FakeMamba])
def test_head_shapes_default_size(head):
    torch.manual_seed(0)
    model = head().eval()
    with torch.no_grad():
        for frames in (1, 201, 208):
            logits = model(torch.randn(1, frames, 1024))
            assert logits.shape == (1, 2) and torch.isfinite(logits).all()
        assert head(n_logits=1).eval()(torch.randn(1, 3, 1024)).shape == (1, 1)


def tiny(head: type) -> torch.nn.Module:
    if head is XLSRMamba:
        return XLSRMamba(in_dim=12, d_model=8, n_layers=4, d_state=4)
    return FakeMamba(in_dim=12, d_model=8, n_blocks=2, d_state=4)


@pytest.mark.parametrize("head", [XLSRMamba, FakeMamba])
def test_forward_backward_reaches_every_parameter(head):
    torch.manual_seed(0)
    model = tiny(head).train()
    logits = model(torch.randn(3, 17, 12))
    F.cross_entropy(logits, torch.tensor([0, 1, 1])).backward()
    # XLSR-Mamba's default final_norm="seed" never uses the last block of each stack (as the
    # seed): those get exact zero gradients (DDP needs one for every parameter), all else trains.
    dead = ("forward_layers.1.", "backward_layers.1.") if head is XLSRMamba else ()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.startswith(dead):
            assert (p.grad == 0).all(), name
        elif not name.endswith("pool.bias"):  # softmax over time ignores a shift: 0 up to rounding
            assert p.grad.abs().sum() > 0, name


def test_xlsr_mamba_last_block_norm_trains_every_block():
    torch.manual_seed(0)
    model = XLSRMamba(in_dim=12, d_model=8, n_layers=4, d_state=4, final_norm="last_block").train()
    F.cross_entropy(model(torch.randn(3, 17, 12)), torch.tensor([0, 1, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and (p.grad.abs().sum() > 0 or name.endswith("pool.bias")), name


def test_xlsr_mamba_seed_norm_is_the_seeds_formula():
    """final_norm="seed", written out: RMSNorm(x + residual before the last block) per stack,
    with the un-flipped x added to the backward stack's time-reversed stream."""
    torch.manual_seed(0)
    model = XLSRMamba(in_dim=12, d_model=8, n_layers=6, d_state=4).double().eval()
    feats = torch.randn(2, 9, 12, dtype=torch.float64)
    x = model.act(model.bn(model.proj(feats).unsqueeze(1)).squeeze(1))

    def stream(layers: torch.nn.ModuleList, inp: torch.Tensor) -> torch.Tensor:
        hidden, residual = inp, None
        for layer in layers[:-1]:  # the last block's output is never added
            hidden, residual = layer(hidden, residual)
        return residual + hidden

    fwd = model.norm_f(x + stream(model.forward_layers, x))
    bwd = model.norm_f(x + stream(model.backward_layers, x.flip(1)))  # x NOT flipped back
    pool = [
        (torch.softmax(lin(h), 1) * h).sum(1)
        for lin, h in ((model.forward_pool, fwd), (model.backward_pool, bwd))
    ]
    want = model.classifier(model.fc(torch.cat(pool, -1)))
    with torch.no_grad():
        torch.testing.assert_close(model(feats), want, rtol=1e-10, atol=1e-12)
        other = XLSRMamba(in_dim=12, d_model=8, n_layers=6, d_state=4, final_norm="last_block")
        other.load_state_dict(model.state_dict())  # same parameters, another computation
        assert (other.double().eval()(feats) - want).abs().max() > 1e-3


def test_xlsr_mamba_final_norm_is_checked():
    with pytest.raises(ValueError, match="final_norm='fixed'.*'seed', 'last_block'"):
        XLSRMamba(final_norm="fixed")


# Logits of tiny(head) (seed 0, eval) for torch.randn(2, 7, 12) drawn right after the model.
# XLSRMamba's changed when its default became the seed's final norm (final_norm="seed"); the
# values pinned before are now those of final_norm="last_block" (LAST_BLOCK_PIN, same weights).
PINNED = {
    XLSRMamba: [[0.34350622, -0.22061734], [0.35338330, -0.14410719]],
    FakeMamba: [[0.16278060, 0.26782084], [0.13978571, 0.16642046]],
}


@pytest.mark.parametrize("head", [XLSRMamba, FakeMamba])
def test_pinned_outputs(head):
    torch.manual_seed(0)
    model = tiny(head).eval()
    feats = torch.randn(2, 7, 12)
    with torch.no_grad():
        logits = model(feats)
    torch.testing.assert_close(logits, torch.tensor(PINNED[head]), rtol=1e-5, atol=1e-5)


LAST_BLOCK_PIN = [[0.27826351, -0.26713273], [0.32418901, -0.20039456]]


def test_pinned_outputs_last_block_final_norm():
    torch.manual_seed(0)
    model = XLSRMamba(in_dim=12, d_model=8, n_layers=4, d_state=4, final_norm="last_block").eval()
    feats = torch.randn(2, 7, 12)
    with torch.no_grad():
        logits = model(feats)
    torch.testing.assert_close(logits, torch.tensor(LAST_BLOCK_PIN), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# mamba-ssm kernels (CUDA only)


def _kernels_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the mamba-ssm kernels cannot run")
    status = mamba_kernels_status()
    if status.startswith("mamba_ssm unusable"):
        pytest.skip(status)


@pytest.mark.gpu
def test_matches_mamba_ssm_kernels():
    _kernels_or_skip()
    kw = {k: v.cuda() for k, v in scan_inputs(2, 64, 208, 16, torch.float32, "softplus").items()}
    want = selective_scan(**kw, delta_softplus=True, backend="torch")
    got = selective_scan(**kw, delta_softplus=True, backend="mamba_ssm")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max())
    torch.manual_seed(0)
    model = XLSRMamba().eval()
    feats = torch.randn(2, 208, 1024)
    with torch.no_grad():
        on_cpu = model(feats)
        on_gpu = model.cuda()(feats.cuda()).cpu()  # mamba-ssm scan (and causal_conv1d if present)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)
