"""Model speed on CPU: each back-end head on XLS-R features, the whole detector's real-time factor,
and (when ``spoofdet.models.mamba`` provides it) the parallel selective scan against the loop.

    python benchmarks/models.py [--threads 1] [--batch 4] [--repeats 5] [--rtf-repeats 3]
                                [--seconds 1 2 3 4 5 6]

1. Heads: random features (B, 201, 1024) (= 4.04-s clips through XLS-R), the seed-sized heads
   with random weights; forward in eval mode under ``inference_mode``, forward + backward in
   train mode. Time per clip = median time per batch / B. Then the seed systems of
   ``NEW_SYSTEMS`` as ``spoofdet import`` builds them, each on what it reads (SLS: 24 layer
   outputs; Codecfake: layer-5 features; raw AASIST and mel-LCNN: the waveform, through their
   parameter-free front-ends).
2. Detector: the XLS-R 300M architecture with random weights (``xlsr_300m_random``: the shape
   of ``facebook/wav2vec2-xls-r-300m`` without a download; speed does not depend on the weights)
   + each head, batch 1, eval mode, for 1-6 s inputs. Real-time factor = compute time / audio
   duration (below 1 = faster than real time). The front-end is shared by the heads.
3. Mamba scan: ``selective_scan`` (parallel, pure PyTorch) vs ``selective_scan_sequential``
   (Python loop over time) at XLSR-Mamba's mixer size (288 channels, 16 states, 201 steps).

Each measurement is the median of its repeats after one untimed warm-up call (for the detector:
one warm-up per head, then the heads interleaved run by run, to keep the whole run under ~5
minutes on a 2-core machine). Both the process's CPU time and the wall time are reported.
Writes the 'models' section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import machine, write_section  # noqa: E402
from spoofdet.models import Detector, build_head  # noqa: E402
from spoofdet.models.frontend import load_frontend  # noqa: E402

HEAD_COLUMNS = (
    "| head | parameters | forward ms/clip (eval), CPU / wall "
    "| forward + backward ms/clip (train), CPU / wall |\n|---|---|---|---|"
)
SYSTEM_COLUMNS = (
    "| system | input | parameters | forward ms/clip (eval), CPU / wall "
    "| forward + backward ms/clip (train), CPU / wall |\n|---|---|---|---|---|"
)
FRAMES, DIM, SR = 201, 1024, 16_000


def once(fn: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    c, w = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c, time.perf_counter() - w


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (CPU, wall) seconds of ``repeats`` calls after one untimed warm-up call."""
    fn()
    runs = [once(fn) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _ms(t: tuple[float, float], digits: int = 1) -> str:
    return f"{1e3 * t[0]:.{digits}f} / {1e3 * t[1]:.{digits}f}"


#: Heads that read the last layer's (B, T, 1024) features (the others are in NEW_SYSTEMS).
FEATURE_HEADS = ("aasist", "xlsr_mamba", "fake_mamba", "nes2net_x")


def available_heads() -> tuple[list[str], str]:
    heads, notes = [], []
    for name in FEATURE_HEADS:
        try:
            build_head(name, DIM)
            heads.append(name)
        except ImportError as err:  # the Mamba module may be missing in a partial checkout
            notes.append(f"{name} skipped ({err})")
    return heads, "; ".join(notes)


def time_module(
    module: torch.nn.Module, x: torch.Tensor, repeats: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(forward, forward + backward) (CPU, wall) seconds per clip: eval mode under ``inference_mode``,
    then train mode with a cross-entropy backward."""
    batch = x.shape[0]
    labels = torch.randint(0, 2, (batch,), generator=torch.Generator().manual_seed(0))

    def fwd() -> None:
        with torch.inference_mode():
            module(x)

    def fwd_bwd() -> None:
        module.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(module(x), labels).backward()

    module.eval()
    f = tuple(t / batch for t in timed(fwd, repeats))
    module.train()
    fb = tuple(t / batch for t in timed(fwd_bwd, repeats))
    return f, fb


def bench_heads(
    heads: list[str], batch: int, repeats: int
) -> list[tuple[str, int, tuple[float, float], tuple[float, float]]]:
    rows = []
    feats = torch.randn(batch, FRAMES, DIM)
    for name in heads:
        torch.manual_seed(0)
        head = build_head(name, DIM)
        n = sum(p.numel() for p in head.parameters())
        f, fb = time_module(head, feats, repeats)
        rows.append((name, n, f, fb))
        print(
            f"head {name}: {n:,} params, fwd {_ms(f)} ms/clip, fwd+bwd {_ms(fb)} ms/clip (cpu / wall)",
            flush=True,
        )
    return rows


#: Seed systems benchmarked beside the heads: those whose input is not (B, 201, 1024) features of
#: the last layer, or whose head has other settings (name -> what the timed module reads).
NEW_SYSTEMS = (
    "sls",
    "aasist",
    "aasist_l",
    "codecfake_w2v2_aasist",
    "codecfake_w2v2_lcnn",
    "codecfake_mel_lcnn",
)


def seed_system(name: str, batch: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """(module, input, what the input is) for seed system ``name``: its head on what it reads, with
    its parameter-free front-end in front where it has one (raw waveform, Codecfake's mel)."""
    from spoofdet.models import build_model
    from spoofdet.models.seeds import SEEDS, build_seed_head

    spec = SEEDS[name]
    g = torch.Generator().manual_seed(0)
    if spec.frontend not in ("fairseq", "pretrained"):  # the whole system: waveform in
        module = build_model(
            spec.frontend, spec.head, head_kwargs=dict(spec.model.get("head_kwargs", {}))
        )
        return (
            module,
            0.1 * torch.randn(batch, 64_600, generator=g),
            f"{spec.frontend} front-end + head, 64,600 samples",
        )
    module = build_seed_head(name, spec.n_logits or 2)
    if spec.model.get("frontend_layer") == "all":
        return (
            module,
            torch.randn(batch, 24, FRAMES, DIM, generator=g),
            "24 layer outputs of 201 x 1024",
        )
    layer = spec.model.get("frontend_layer")
    return (
        module,
        torch.randn(batch, FRAMES, DIM, generator=g),
        f"201 x 1024 (layer {layer or 'last'})",
    )


def bench_systems(
    names: list[str], batch: int, wave_batch: int, repeats: int, wave_repeats: int
) -> list[tuple[str, int, str, tuple[float, float], tuple[float, float]]]:
    from spoofdet.models.seeds import SEEDS

    rows = []
    for name in names:
        torch.manual_seed(0)
        wave = SEEDS[name].frontend not in ("fairseq", "pretrained")
        b, r = (wave_batch, wave_repeats) if wave else (batch, repeats)
        module, x, what = seed_system(name, b)
        n = sum(p.numel() for p in module.parameters())
        f, fb = time_module(module, x, r)
        rows.append((name, n, what + f", B = {b}", f, fb))
        print(
            f"system {name}: {n:,} params, fwd {_ms(f)} ms/clip, fwd+bwd {_ms(fb)} ms/clip (cpu / wall)",
            flush=True,
        )
    return rows


def bench_rtf(
    heads: list[str], seconds: list[int], repeats: int
) -> tuple[dict[str, list[tuple[float, float]]], int]:
    torch.manual_seed(0)
    frontend = load_frontend("xlsr_300m_random").eval()
    n_front = sum(p.numel() for p in frontend.parameters())
    dets = {name: Detector(frontend, build_head(name, frontend.out_dim)).eval() for name in heads}

    def run(det: Detector, wave: torch.Tensor) -> Callable[[], None]:
        def call() -> None:
            with torch.inference_mode():
                det(wave)

        return call

    for det in dets.values():  # one warm-up per detector keeps the whole run under ~5 min here
        run(det, 0.1 * torch.randn(1, seconds[0] * SR))()
    rtf: dict[str, list[tuple[float, float]]] = {name: [] for name in heads}
    for s in seconds:
        wave = 0.1 * torch.randn(1, s * SR)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in heads}
        for _ in range(repeats):  # heads interleaved, so that load from other jobs hits all alike
            for name, det in dets.items():
                runs[name].append(once(run(det, wave)))
        for name in heads:
            rtf[name].append(
                (
                    statistics.median(r[0] for r in runs[name]) / s,
                    statistics.median(r[1] for r in runs[name]) / s,
                )
            )
        print(
            f"{s} s: RTF "
            + ", ".join(f"{n} {rtf[n][-1][0]:.3f} / {rtf[n][-1][1]:.3f}" for n in heads),
            flush=True,
        )
    return rtf, n_front


def bench_scan(batch: int, repeats: int) -> str:
    try:
        from spoofdet.models.selective_scan import selective_scan, selective_scan_sequential
    except ImportError as err:
        return (
            "Not measured: `spoofdet.models.selective_scan` does not provide `selective_scan` / "
            f"`selective_scan_sequential` ({err})."
        )
    d, n, length = 288, 16, FRAMES
    g = torch.Generator().manual_seed(0)
    u = torch.randn(batch, d, length, generator=g)
    delta = torch.randn(batch, d, length, generator=g)
    a = -torch.rand(d, n, generator=g) * 8
    b_, c_ = torch.randn(batch, n, length, generator=g), torch.randn(batch, n, length, generator=g)
    dd, z, bias = (
        torch.randn(d, generator=g),
        torch.randn(batch, d, length, generator=g),
        torch.randn(d, generator=g),
    )
    rows, outs = [], {}
    for label, fn in (
        ("parallel `selective_scan`", selective_scan),
        ("loop `selective_scan_sequential`", selective_scan_sequential),
    ):

        def fwd() -> None:
            with torch.inference_mode():
                outs[label] = fn(u, delta, a, b_, c_, dd, z, bias, True)

        leaves = [t.clone().requires_grad_(True) for t in (u, delta, b_, c_)]

        def fwd_bwd() -> None:
            for t in leaves:
                t.grad = None
            fn(leaves[0], leaves[1], a, leaves[2], leaves[3], dd, z, bias, True).sum().backward()

        f = tuple(t / batch for t in timed(fwd, repeats))
        fb = tuple(t / batch for t in timed(fwd_bwd, repeats))
        rows.append(f"| {label} | {_ms(f, 2)} | {_ms(fb, 2)} |")
        print(
            f"scan {label}: fwd {_ms(f, 2)} ms/clip, fwd+bwd {_ms(fb, 2)} ms/clip (cpu / wall)",
            flush=True,
        )
    diff = (
        (outs["parallel `selective_scan`"] - outs["loop `selective_scan_sequential`"])
        .abs()
        .max()
        .item()
    )
    return (
        "| implementation | forward ms/clip, CPU / wall "
        "| forward + backward ms/clip, CPU / wall |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nOne mixer's scan per 4-s clip: batch {batch}, 288 channels x 16 states x "
        f"{length} steps, float32. Largest output difference between the two: {diff:.1e}. An "
        "XLSR-Mamba head runs 12 such scans per clip, Fake-Mamba 14 (7 blocks x 2 directions)."
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument(
        "--batch", type=int, default=4, help="clips per batch in the head and scan benchmarks"
    )
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed repeats per head / scan measurement"
    )
    ap.add_argument(
        "--rtf-repeats", type=int, default=3, help="timed repeats per detector and input length"
    )
    ap.add_argument(
        "--seconds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="detector input lengths"
    )
    ap.add_argument(
        "--wave-batch",
        type=int,
        default=1,
        help="clips per batch for waveform-input systems (raw AASIST)",
    )
    ap.add_argument(
        "--wave-repeats", type=int, default=3, help="timed repeats for waveform-input systems"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    heads, skipped = available_heads()
    head_rows = bench_heads(heads, args.batch, args.repeats)
    systems = bench_systems(
        list(NEW_SYSTEMS), args.batch, args.wave_batch, args.repeats, args.wave_repeats
    )
    scan = bench_scan(args.batch, args.repeats)
    rtf, n_front = bench_rtf(heads, args.seconds, args.rtf_repeats)
    total = time.perf_counter() - start

    head_table = "\n".join(f"| {n} | {p:,} | {_ms(f)} | {_ms(fb)} |" for n, p, f, fb in head_rows)
    system_table = "\n".join(
        f"| `{n}` | {what} | {p:,} | {_ms(f)} | {_ms(fb)} |" for n, p, what, f, fb in systems
    )
    rtf_head = (
        "| head | "
        + " | ".join(f"{s} s" for s in args.seconds)
        + " |\n|---|"
        + "---|" * len(args.seconds)
    )
    rtf_table = "\n".join(
        f"| {n} | " + " | ".join(f"{c:.2f} / {w:.2f}" for c, w in rtf[n]) + " |" for n in heads
    )
    note = (" " + skipped + ".") if skipped else ""
    body = f"""## Models on CPU (`benchmarks/models.py`)

Machine: {machine()}; torch {torch.__version__} with {args.threads} intra-op thread(s). Random
weights (speed does not depend on them). Each figure is the median of {args.repeats} (heads, scan)
or {args.rtf_repeats} (detector) timed runs after a warm-up run (detector: one warm-up per head,
then the heads interleaved run by run; repeats kept this low so the whole run stays under ~5 min).
Figures are **CPU time / wall time**: other jobs shared this 2-core machine while it ran, and with
one thread the process's CPU time is the compute cost without the waiting for a core, so read the
first number; the wall time shows what the load did. Total benchmark time {total:.0f} s.{note}

### Heads on XLS-R features (B = {args.batch} clips of 201 x 1024, i.e. 4.04 s each)

{HEAD_COLUMNS}
{head_table}

### Seed systems added with `spoofdet import` (per 4.04-s clip; the SSL front-end excluded)

Each system as `spoofdet import` builds it (`spoofdet.models.seeds.SEEDS`), on what it reads:
SLS on all 24 layer outputs, Codecfake's heads on layer-5 features, and the waveform systems (raw
AASIST / AASIST-L with their sinc front-end, mel-LCNN with its mel front-end) end to end from
64,600 samples (B = {args.wave_batch}, {args.wave_repeats} repeats: raw AASIST convolves 70 filters
over the full sample rate, which makes it the costliest model here on CPU).

{SYSTEM_COLUMNS}
{system_table}

### Whole detector: real-time factor (compute time / audio time), batch 1, eval

XLS-R 300M-shaped front-end (`xlsr_300m_random`, {n_front:,} parameters, all 24 layers, last
hidden state) + each head, CPU / wall. Below 1 = faster than real time.

{rtf_head}
{rtf_table}

### Mamba selective scan: parallel vs loop

{scan}
"""
    print(body)
    print(f"written to {write_section('models', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
