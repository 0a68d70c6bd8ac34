"""Leaving the clips quarantined at sharding out of an evaluation (``--exclude-quarantined``).

``spoofdet score`` scores the clips of a shard folder; the clips the shard job could not use are
listed in that folder's ``quarantine.parquet`` (``utt_id, source_path, reason, detail``) and have
no score, so evaluating against the full corpus key would report them missing. Given the shard
folders, :func:`read_quarantine` reads their quarantines and :func:`exclusion` takes those rows
out of the rows to score, counting everything it does:

* ``count`` / ``by_reason`` / ``examples``: selected key rows left out (they need no score);
* ``outside_selection``: quarantined key rows that were not to be scored anyway (another phase);
* ``not_in_key``: quarantined ids the key does not hold (a shard folder of another corpus or
  split?), warned about;
* ``scored_but_quarantined`` (per score file, :func:`scored_excluded`): left out although the
  file scores them (a score from another run of the clip cannot be told apart; it is not used).

A selected row that is not quarantined still needs its score: missing scores stay an error.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spoofdet.data import shards
from spoofdet.evaluation.scorefile import MAX_EXAMPLES


def read_quarantine(folders: Sequence[str | os.PathLike]) -> dict[str, str]:
    """``utt_id -> reason`` over the ``quarantine.parquet`` of each shard folder (first one wins
    for an id quarantined in several).

    Raises:
        ShardError: a folder that does not exist or has no readable ``quarantine.parquet``
            (naming it and what ``--exclude-quarantined`` takes).
    """
    reasons: dict[str, str] = {}
    for folder in folders:
        folder = Path(folder).expanduser()
        path = folder / shards.QUARANTINE_FILE
        if not folder.is_dir():
            raise shards.ShardError(
                f"--exclude-quarantined {folder}: not a folder; give the shard folder written by "
                "`spoofdet prepare --out DIR` (it holds shards/, metadata.parquet and "
                "quarantine.parquet)"
            )
        if not path.is_file():
            raise shards.ShardError(
                f"--exclude-quarantined {folder}: no {shards.QUARANTINE_FILE} there; give the "
                "shard folder written by `spoofdet prepare --out DIR` (the shard job writes "
                f"{shards.QUARANTINE_FILE} when it finishes: re-run it with the same --out if "
                "it was interrupted)"
            )
        try:
            table = pq.read_table(path, columns=["utt_id", "reason"])
        except (OSError, pa.ArrowException, KeyError) as exc:
            raise shards.ShardError(
                f"cannot read {path} (expected the columns utt_id and reason): {exc}; "
                f"re-run `spoofdet prepare` with --out {folder} to write it again"
            ) from None
        for utt, reason in zip(table["utt_id"].to_pylist(), table["reason"].to_pylist()):
            if utt is not None:
                reasons.setdefault(utt, reason or "unknown")
    return reasons


def exclusion(
    key_ids: Sequence[str],
    required: np.ndarray,
    folders: Sequence[str | os.PathLike],
) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """Take the rows quarantined in ``folders`` out of ``required``.

    Returns:
        ``(required, summary, excluded)``: the new mask, the counts of the module docstring
        (``folders``, ``count``, ``by_reason``, ``examples``, ``outside_selection``,
        ``not_in_key``, ``not_in_key_examples``) and the mask of the rows left out.
    """
    reasons = read_quarantine(folders)
    index = {utt: i for i, utt in enumerate(key_ids)}
    in_key = np.zeros(len(key_ids), dtype=bool)
    for utt in reasons:
        i = index.get(utt)
        if i is not None:
            in_key[i] = True
    req = np.asarray(required, dtype=bool)
    excluded = in_key & req
    rows = np.flatnonzero(excluded)
    by_reason = Counter(reasons[key_ids[i]] for i in rows)
    absent = [u for u in reasons if u not in index]
    summary = {
        "folders": [str(Path(f).expanduser()) for f in folders],
        "count": int(rows.size),
        "by_reason": dict(sorted(by_reason.items())),
        "examples": [key_ids[i] for i in rows[:MAX_EXAMPLES]],
        "outside_selection": int((in_key & ~req).sum()),
        "not_in_key": len(absent),
        "not_in_key_examples": absent[:MAX_EXAMPLES],
    }
    return req & ~excluded, summary, excluded


def scored_excluded(aligned: np.ndarray, excluded: np.ndarray) -> int:
    """How many of the ``excluded`` rows the score file scores anyway (left out all the same)."""
    return int((excluded & np.isfinite(aligned)).sum())


def not_in_key_warning(summary: dict[str, Any], key_path: str) -> str | None:
    """The warning for quarantined ids the key lacks, or None when every one is in the key."""
    n = summary["not_in_key"]
    if not n:
        return None
    ex = ", ".join(repr(u) for u in summary["not_in_key_examples"])
    return (
        f"{n:,} quarantined id(s) in {', '.join(summary['folders'])} are not in the key "
        f"{key_path}, e.g. {ex}: is that the shard folder of this corpus and key?"
    )
