"""Shard a corpus into Parquet with Ray Data: decode once, 16 kHz mono FLAC, nothing lost, resumable.

Run locally (Ray started in-process) or through the CLI::

    python -m data_prep.shard codecfake --root ~/data/Codecfake --out runs/shards/codecfake
    spoofdet prepare codecfake --root ~/data/Codecfake --out runs/shards/codecfake --json

Submit to a cluster (the corpus root must be readable from every node; --out may be any
filesystem pyarrow supports, e.g. s3:// or gs://)::

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m data_prep.shard codecfake --root /mnt/corpora/Codecfake \\
        --out s3://my-bucket/spoofdet/shards/codecfake --json

Output layout under ``--out``::

    shards/part-00000.parquet ...  rows of spoofdet.data.schema.UTTERANCE_SCHEMA, `audio` = 16 kHz FLAC
    metadata.parquet               the same rows without the audio column (counts, durations, breakdowns)
    quarantine.parquet             utt_id, source_path, reason, detail: every input row not written
    summary.json                   rows_in, rows_written, quarantined, by_reason, shards, ...
    files.json                     name, rows, bytes, sha256 of every shard, metadata and quarantine
    _work/                         the plan, the input manifest (one row group per shard), quarantine parts

Re-running the same command after a crash skips finished shards and redoes the rest; re-running
a finished job is a no-op. Always ``rows_in = rows_written + quarantined``. Check a folder with
``--verify --out DIR``; rewrite what is broken or stray with ``--repair --out DIR``. The format is owned by
spoofdet.data.shards, the writer is spoofdet.data.shard_writer, --verify/--repair are
spoofdet.data.shard_verify (why: docs/design/sharding.md).
"""

from __future__ import annotations

import argparse
import sys

from spoofdet.data.shard_cli import add_arguments, format_summary, run_from_args

# The library is spoofdet.data.shard_writer; these names are re-exported here for this release only.
from spoofdet.data.shard_writer import (
    KILL_ENV,
    PLAN_VERSION,
    QUARANTINE_SCHEMA,
    ROW_GROUP_ROWS,
    ShardError,
    balanced_rows_per_shard,
    estimate_rows_per_shard,
    finalize,
    fingerprint,
    make_plan,
    resolve_out,
    run,
    shard_path,
    write_shard,
)

__all__ = [
    "KILL_ENV",
    "PLAN_VERSION",
    "QUARANTINE_SCHEMA",
    "ROW_GROUP_ROWS",
    "ShardError",
    "add_arguments",
    "balanced_rows_per_shard",
    "estimate_rows_per_shard",
    "finalize",
    "fingerprint",
    "format_summary",
    "main",
    "make_plan",
    "resolve_out",
    "run",
    "run_from_args",
    "shard_path",
    "write_shard",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.shard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
