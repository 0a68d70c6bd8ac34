"""Training input throughput: shards -> decoded, cropped, RawBoosted batches, clips/s per CPU core.

    python benchmarks/input_pipeline.py [--clips 480] [--algo 5]

One corpus of speech-like clips (2-8 s, uniform, so most are longer than the 4-s crop, as in
ASVspoof) is sharded once with ``spoofdet``'s shard job. Then, in one run and side by side:

1. one core, one thread: ``spoofdet.data.transforms.prepare_rows`` over every shard row +
   ``BatchCollate``, i.e. the work of one Ray Data task, without Ray (the per-core cost of the
   pipeline);
2. the real pipeline: ``build_train_dataset`` on a local Ray cluster with every core, consumed with
   ``iter_torch_batches(batch_size=16, local_shuffle_buffer_size=64)`` as a train worker does
   (one untimed warm-up epoch first, so worker start-up is not counted).

Each with RawBoost off and on (algorithm 5, p = 1: every clip augmented; crop first).

3. variable-length input on a second corpus of mixed lengths (1-20 s, log-uniform, like
   In-the-Wild or Deepfake-Eval clips): the Ray pipeline consumed with ``iter_train_batches`` as a
   train worker does, 4-s crops (``crop: first``, 16 rows a batch) against whole clips
   (``crop: none``, ``max_seconds`` 16) batched by total duration (``batch_seconds`` 64, i.e.
   16 x 4 s of samples a batch): clips/s, audio seconds/s and the padding fraction (padded
   samples / batch samples: repeat-padding of short clips for crops, zeros for duration batches).

Writes the 'input_pipeline' section of docs/benchmarks.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import soundfile as sf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import machine, write_section  # noqa: E402
from data_prep import shard  # noqa: E402
from spoofdet.data.collate import BatchCollate  # noqa: E402
from spoofdet.data.corpora import prepare_csv  # noqa: E402
from spoofdet.data.duration_batches import padding_fraction  # noqa: E402
from spoofdet.data.pipeline import (  # noqa: E402
    READ_COLUMNS,
    Source,
    build_train_dataset,
    iter_train_batches,
    set_epoch,
    shard_files,
)
from spoofdet.data.sampling import read_metadata  # noqa: E402
from spoofdet.data.transforms import NUM_SAMPLES, Recipe, prepare_rows  # noqa: E402
from spoofdet.testing.synthetic import bonafide_clip  # noqa: E402

BATCH = 16


def make_shards(root: Path, n: int, seed: int = 0, log_range: tuple[float, float] | None = None):
    """``n`` speech-like clips of 2-8 s (uniform), or log-uniform in ``log_range`` seconds."""
    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True)
    lines = ["path,label"]
    for i in range(n):
        if log_range is None:
            seconds = float(rng.uniform(2.0, 8.0))
        else:
            seconds = float(np.exp(rng.uniform(*np.log(log_range))))
        x = bonafide_clip(rng, 16_000, seconds)
        sf.write(audio / f"c{i:05d}.flac", x, 16_000, subtype="PCM_16")
        lines.append(f"c{i:05d}.flac,{'bonafide' if i % 4 == 0 else 'spoof'}")
    (audio / "manifest.csv").write_text("\n".join(lines) + "\n")
    shard.run(
        prepare_csv(audio).table,
        str(root / "shards"),
        corpus="csv",
        shard_rows=40,
        executor="local",
        progress=False,
    )
    return Source(str(root / "shards"), name="bench")


def one_core(source: Source, algo: int) -> tuple[int, float, float]:
    recipe = Recipe(rawboost_algo=algo, seed=1)
    collate = BatchCollate()
    files = shard_files(source)
    n, t0 = 0, time.perf_counter()
    seconds = 0.0
    for f in files:
        t = pq.read_table(f, columns=READ_COLUMNS)
        cols = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
        seconds += float(cols["num_samples"].sum()) / 16_000
        for s in range(0, len(t), BATCH):
            batch = collate(
                prepare_rows({k: v[s : s + BATCH] for k, v in cols.items()}, recipe, epoch=0)
            )
            n += len(batch["utt_id"])
    return n, time.perf_counter() - t0, seconds


def ray_pipeline(source: Source, algo: int, cpus: int) -> tuple[int, float]:
    pipe = build_train_dataset([source], rawboost_algo=algo, seed=1, batch_rows=BATCH)

    def epoch(e: int) -> int:
        set_epoch(pipe.clock, e)
        return sum(
            len(b["utt_id"])
            for b in pipe.dataset.iter_torch_batches(
                batch_size=BATCH,
                collate_fn=BatchCollate(),
                local_shuffle_buffer_size=64,
                local_shuffle_seed=e,
            )
        )

    epoch(0)  # warm-up
    t0 = time.perf_counter()
    n = epoch(1)
    return n, time.perf_counter() - t0


MAX_SECONDS = 16.0
BATCH_SECONDS = 64.0


def variable_length(source: Source, crop: str) -> dict[str, float]:
    """One timed epoch (after a warm-up) of ``iter_train_batches`` on the Ray pipeline: 4-s crops
    (``crop="first"``, 16 rows a batch) or whole clips by duration (``crop="none"``)."""
    duration = crop == "none"
    pipe = build_train_dataset(
        [source],
        crop=crop,
        max_seconds=MAX_SECONDS if duration else None,
        seed=1,
        batch_rows=BATCH,
    )
    meta = read_metadata(source, ("utt_id", "num_samples"))
    stored = dict(zip(meta["utt_id"], meta["num_samples"].astype(int)))

    def epoch(e: int) -> tuple[int, float, float]:
        set_epoch(pipe.clock, e)
        n, real, lengths = 0, 0, []
        for b in iter_train_batches(
            {"train": pipe.dataset},
            shares=None,
            batch_size=BATCH,
            shuffle_buffer=64,
            shuffle_seed=e,
            batch_seconds=BATCH_SECONDS if duration else None,
        ):
            n += len(b["utt_id"])
            if duration:
                lengths.append(b["lengths"].tolist())
                real += int(b["lengths"].sum())
            else:  # a crop's real samples: the clip's, up to the crop; the rest is repeat-padding
                got = [min(stored[u], NUM_SAMPLES) for u in b["utt_id"]]
                real += sum(got)
        if duration:
            return n, real, padding_fraction(lengths)
        total = n * NUM_SAMPLES
        return n, real, (total - real) / total if total else 0.0

    epoch(0)  # warm-up
    t0 = time.perf_counter()
    n, real, pad = epoch(1)
    wall = time.perf_counter() - t0
    return {"clips": n, "wall": wall, "audio_s": real / 16_000, "padding": pad}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clips", type=int, default=480, help="clips in the benchmark corpus")
    ap.add_argument(
        "--mixed-clips", type=int, default=240, help="clips in the mixed-length (1-20 s) corpus"
    )
    ap.add_argument("--algo", type=int, default=5, help="RawBoost algorithm for the 'on' rows")
    ap.add_argument(
        "--cpus", type=int, default=os.cpu_count() or 1, help="CPUs for the Ray cluster"
    )
    args = ap.parse_args(argv)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        source = make_shards(Path(tmp) / "uniform", args.clips)
        mixed = make_shards(Path(tmp) / "mixed", args.mixed_clips, seed=1, log_range=(1.0, 20.0))
        mixed_s = float(read_metadata(mixed, ("num_samples",))["num_samples"].sum()) / 16_000
        rows = []
        for algo in (0, args.algo):
            one_core(source, algo)  # warm-up (imports, FFT plans)
            n, wall, audio_s = one_core(source, algo)
            rows.append(("one core, one thread (`prepare_rows` + collate)", algo, 1, n, wall))
            print(f"one core, algo {algo}: {n / wall:.0f} clips/s", flush=True)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            for algo in (0, args.algo):
                n, wall = ray_pipeline(source, algo, args.cpus)
                rows.append(
                    (
                        f"Ray Data pipeline -> `iter_torch_batches` ({args.cpus} CPUs)",
                        algo,
                        args.cpus,
                        n,
                        wall,
                    )
                )
                print(f"ray, algo {algo}: {n / wall:.0f} clips/s", flush=True)
            var_rows = []
            for crop in ("first", "none"):
                r = variable_length(mixed, crop)
                var_rows.append((crop, r))
                print(f"mixed, crop {crop}: {r}", flush=True)
        finally:
            ray.shutdown()

    table = "\n".join(
        f"| {what} | {'off' if algo == 0 else f'algo {algo}'} | {cores} | {n} | {wall:.2f} s | "
        f"{n / wall:.0f} | {n / wall / cores:.0f} |"
        for what, algo, cores, n, wall in rows
    )
    var_table = "\n".join(
        f"| {label} | {r['clips']} | {r['wall']:.2f} s | {r['clips'] / r['wall']:.0f} | "
        f"{r['audio_s'] / r['wall']:.0f} | {r['audio_s'] / r['clips']:.1f} s | "
        f"{100 * r['padding']:.1f} % |"
        for label, r in (
            (
                "4-s crops (`crop: first`), 16 rows a batch"
                if crop == "first"
                else f"whole clips (`crop: none`, `max_seconds: {MAX_SECONDS:.0f}`), "
                f"`batch_seconds: {BATCH_SECONDS:.0f}`",
                r,
            )
            for crop, r in var_rows
        )
    )
    body = f"""## Training input pipeline (`benchmarks/input_pipeline.py`)

Machine: {machine()}, no GPU. Corpus: {args.clips} speech-like clips of 2-8 s
(uniform; {audio_s / args.clips:.1f} s mean), 16 kHz FLAC in spoofdet shards. Each clip: decode only
the 64,600-sample window (FLAC seek), repeat-pad if shorter, RawBoost on the crop, collate to the
batch contract (`wave[B,64600] float32`, `label`, `utt_id`), batches of {BATCH}. RawBoost 'on'
augments every clip (p = 1).

| pipeline | RawBoost | cores | clips | wall | clips/s | clips/s per core |
|---|---|---|---|---|---|---|
{table}

The one-core rows are the cost a Ray Data task pays per clip; the Ray rows add the streaming
executor, object store, local shuffle buffer and the driver-side consumer, all sharing the same
{args.cpus} cores (on a GPU node the consumer is the train worker). Target: >= 150 augmented 4-s clips/s
per core.

### Variable-length input: whole clips batched by duration vs 4-s crops

Same machine ({args.cpus} CPUs, no GPU). Corpus: {args.mixed_clips} speech-like clips of 1-20 s
(log-uniform; {mixed_s / args.mixed_clips:.1f} s mean, {mixed_s:.0f} s in all), RawBoost off. Both
through the Ray Data pipeline and `iter_train_batches` (shuffle window 64 rows), one timed epoch
after a warm-up. Audio s/s counts real samples delivered (crops keep at most 4.04 s of a clip);
padding = padded samples / batch samples (crops: repeat-padding of clips under 4.04 s; duration
batches: zeros after each clip, described by `lengths`).

| input | clips | wall | clips/s | audio s/s | audio per clip | padding |
|---|---|---|---|---|---|---|
{var_table}

Duration batches sort each 64-row window by length and pack it into batches of at most
{BATCH_SECONDS:.0f} s of padded samples, so a batch holds neighbouring lengths and padding stays
small; each clip costs its whole decode, so clips/s falls as the audio per clip grows.
"""
    print(f"wrote {write_section('input_pipeline', body)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
