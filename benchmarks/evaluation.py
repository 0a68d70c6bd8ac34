"""Evaluation cost at the size of the ASVspoof 2021 LA eval set: bootstrap intervals and reports.

    python benchmarks/evaluation.py [--replicates 1000] [--plain 20]

One synthetic trial list the size of 2021 LA eval (148,176 trials: 14,816 bona fide, 133,360
spoof; 67 speakers; 13 attacks and 7 codec conditions), scores drawn per attack with different
separations. Side by side, in one run, on one core:

1. the plain bootstrap: resample each class with replacement and recompute EER, minDCF, actDCF,
   Cllr and AUC from scratch, ``--plain`` replicates (its time per replicate is what 1,000 would
   cost, times 1,000);
2. ``spoofdet.evaluation.bootstrap.bootstrap_intervals``: the scores sorted once, each replicate a
   vector of counts (the same numbers as 1., tested exactly), by trial and by speaker;
3. ``spoofdet.evaluation.report.evaluate_table`` on the whole key table: without bootstrap (tables
   on and off), and with a speaker bootstrap pooled and per group.

Writes the 'evaluation' section of docs/benchmarks.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import machine, write_section  # noqa: E402
from spoofdet.evaluation.bootstrap import BootstrapSpec, bootstrap_intervals  # noqa: E402
from spoofdet.evaluation.metrics import act_dcf, auc, cllr, compute_eer, min_dcf  # noqa: E402
from spoofdet.evaluation.report import evaluate_table  # noqa: E402

N_BONA, N_SPOOF, N_SPEAKERS = 14_816, 133_360, 67
ATTACKS = [f"A{i:02d}" for i in range(7, 20)]
CODECS = [f"C{i}" for i in range(1, 8)]


def trials(seed: int = 0) -> dict[str, np.ndarray]:
    """Scores, labels, speakers, attacks and codecs of a 2021-LA-sized trial list."""
    rng = np.random.default_rng(seed)
    n = N_BONA + N_SPOOF
    label = np.r_[np.ones(N_BONA, int), np.zeros(N_SPOOF, int)]
    attack = np.array(["bonafide"] * N_BONA + list(rng.choice(ATTACKS, N_SPOOF)), dtype=object)
    shift = {a: 1.0 + 3.0 * i / len(ATTACKS) for i, a in enumerate(ATTACKS)}
    mean = np.array([2.0 if a == "bonafide" else 2.0 - shift[a] for a in attack])
    speaker = rng.integers(0, N_SPEAKERS, n)
    score = mean + 0.4 * (speaker % 5 - 2) / 2 + rng.normal(0.0, 1.0, n)  # speakers correlate
    return {
        "score": score,
        "label": label,
        "speaker": np.array([f"S{s:03d}" for s in speaker], dtype=object),
        "attack": attack,
        "codec": rng.choice(CODECS, n).astype(object),
    }


def plain_replicate(bona: np.ndarray, spoof: np.ndarray, rng: np.random.Generator) -> None:
    b = bona[rng.integers(0, bona.size, bona.size)]
    s = spoof[rng.integers(0, spoof.size, spoof.size)]
    compute_eer(b, s)
    min_dcf(b, s)
    act_dcf(b, s)
    cllr(b, s)
    auc(b, s)


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn(*args, **kwargs)
    return time.process_time() - c0, time.perf_counter() - w0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--plain", type=int, default=20, help="replicates of the plain bootstrap")
    args = ap.parse_args(argv)
    t = trials()
    bona, spoof = t["score"][t["label"] == 1], t["score"][t["label"] == 0]
    spk_b, spk_s = t["speaker"][t["label"] == 1], t["speaker"][t["label"] == 0]
    n = args.replicates
    rows = []
    rng = np.random.default_rng(1)
    cpu, wall = timed(lambda: [plain_replicate(bona, spoof, rng) for _ in range(args.plain)])
    rows.append(
        (
            f"plain resample-and-recompute ({args.plain} replicates, scaled to {n})",
            cpu / args.plain * n,
            wall / args.plain * n,
        )
    )
    spec = BootstrapSpec(n, 0)
    rows.append(("bootstrap_intervals, by trial", *timed(bootstrap_intervals, bona, spoof, spec)))
    rows.append(
        (
            f"bootstrap_intervals, by speaker ({N_SPEAKERS} speakers)",
            *timed(
                bootstrap_intervals, bona, spoof, spec, bona_speakers=spk_b, spoof_speakers=spk_s
            ),
        )
    )
    table = {k: list(v) for k, v in t.items() if k != "score"}
    rows.append(
        (
            "evaluate_table, no bootstrap, no tables",
            *timed(evaluate_table, t["score"], table, tables=False),
        )
    )
    rows.append(
        (
            "evaluate_table, no bootstrap, attack x codec table",
            *timed(evaluate_table, t["score"], table),
        )
    )
    rows.append(
        (
            f"evaluate_table, speaker bootstrap N={n}, pooled + {len(ATTACKS) + len(CODECS)} groups",
            *timed(evaluate_table, t["score"], table, bootstrap=spec, tables=False),
        )
    )
    plain = rows[0][1]
    lines = [
        "## Evaluation at 2021 LA eval size (`benchmarks/evaluation.py`)",
        "",
        f"Machine: {machine()}; one thread. {N_BONA + N_SPOOF:,} synthetic trials ({N_BONA:,} "
        f"bona fide, {N_SPOOF:,} spoof, {N_SPEAKERS} speakers, {len(ATTACKS)} attacks, "
        f"{len(CODECS)} codecs), {n:,} bootstrap replicates. Metrics per replicate: EER, minDCF, "
        "actDCF, Cllr, AUC. The plain bootstrap is timed on a few replicates and scaled. Figures "
        "are CPU / wall seconds; the machine may have been shared.",
        "",
        "| what | CPU s | wall s | bootstrap speed-up vs plain (CPU) |",
        "|---|---:|---:|---:|",
    ]
    for i, (name, cpu, wall) in enumerate(rows):
        ratio = f"{plain / max(cpu, 1e-9):.1f}x" if i < 3 else ""  # the bootstrap rows only
        lines.append(f"| {name} | {cpu:.2f} | {wall:.2f} | {ratio} |")
    body = "\n".join(lines)
    print(body)
    write_section("evaluation", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
