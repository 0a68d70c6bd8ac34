"""Eval sets for ``spoofdet score`` / ``promote``: what they are, which rows count, their metrics and tables.

An eval set (``--eval-set``) is ``[NAME=]PATH`` where PATH is a shard folder written by
``spoofdet prepare`` (``shards/`` + ``metadata.parquet``) or a folder of audio files (unlabelled:
scores and a histogram, no metrics). The default NAME is the folder name, prefixed by its parent
when the folder is a split (``runs/demo/shards/asvspoof2019-la/eval`` -> ``asvspoof2019-la-eval``).

Labels, attacks, codecs, vocoder groups, subsets and phases come from the schema columns of
``metadata.parquet`` (no protocol file is re-parsed). Rows scored per set: every row; rows
**evaluated**: those of phase ``eval`` when the set has a phase column (ASVspoof 2021 LA/DF, as
``spoofdet evaluate`` and every paper), all rows otherwise; ``--phase all`` evaluates every row.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spoofdet.data import shards
from spoofdet.evaluation.report import evaluate_table

SPLIT_NAMES = ("train", "dev", "eval", "test", "progress", "hidden")
#: Metrics compared across sets and by ``spoofdet promote`` (all: lower is better).
METRICS = ("eer", "min_dcf", "act_dcf", "cllr")
#: Metrics that mean something only for calibrated LLR scores.
LLR_METRICS = ("act_dcf", "cllr")


@dataclass(frozen=True)
class EvalSet:
    """One eval set: ``kind`` is ``shards`` (labelled metadata) or ``folder`` (audio files, unlabelled)."""

    name: str
    path: str
    kind: str


def default_name(path: str | Path) -> str:
    """``.../asvspoof2019-la/eval`` -> ``asvspoof2019-la-eval``; ``.../in-the-wild`` -> ``in-the-wild``."""
    p = Path(path).expanduser().resolve()
    name = f"{p.parent.name}-{p.name}" if p.name in SPLIT_NAMES and p.parent.name else p.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def parse_eval_set(spec: str) -> EvalSet:
    """Parse ``[NAME=]PATH`` and find out what PATH holds.

    Raises:
        ValueError: a bad name or a path that is neither a shard folder nor a folder.
    """
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    if name and not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ValueError(f"--eval-set {spec}: NAME may hold letters, digits, '.', '_' and '-' only")
    folder = Path(path).expanduser()
    if shards.is_readable(folder):
        return EvalSet(name or default_name(folder), str(folder.resolve()), "shards")
    if folder.is_dir():
        if (folder / shards.SHARDS_DIR).is_dir():
            raise ValueError(
                f"--eval-set {spec}: {folder / shards.METADATA_FILE} is missing; the shard job writes it "
                f"when it finishes. Re-run `spoofdet prepare` with the same --out to complete it."
            )
        return EvalSet(name or default_name(folder), str(folder.resolve()), "folder")
    raise ValueError(
        f"--eval-set {spec}: {folder} is not a folder; give a shard folder from `spoofdet prepare` "
        "(holding shards/ and metadata.parquet) or a folder of audio files"
    )


def parse_eval_sets(specs: list[str]) -> list[EvalSet]:
    """Parse several specs; names must be unique (they name output folders and MLflow metrics)."""
    sets = [parse_eval_set(s) for s in specs]
    seen: dict[str, str] = {}
    for s in sets:
        if s.name in seen:
            raise ValueError(
                f"two eval sets are named {s.name!r} ({seen[s.name]} and {s.path}); "
                "name them apart with NAME=PATH"
            )
        seen[s.name] = s.path
    return sets


def read_metadata(es: EvalSet) -> pa.Table:
    """The metadata rows of a shard set (every written row; no audio)."""
    return pq.read_table(os.path.join(es.path, shards.METADATA_FILE))


def fingerprint(table: pa.Table) -> str:
    """A short hash of the rows of a set (ids, labels, phases): evaluations of equal sets share it."""
    import hashlib

    cols = [
        table[c].to_pylist() if c in table.column_names else [None] * table.num_rows
        for c in ("utt_id", "label", "phase")
    ]
    h = hashlib.sha1()
    for row in zip(*cols):
        h.update(("\t".join("" if v is None else str(v) for v in row) + "\n").encode())
    return h.hexdigest()[:16]


def quarantined(es: EvalSet) -> int:
    """Rows of the source corpus the shard job could not use (they have no score)."""
    q = Path(es.path) / shards.QUARANTINE_FILE
    return pq.read_metadata(q).num_rows if q.is_file() else 0


def select_rows(table: pa.Table, phase: str | None) -> tuple[np.ndarray, str]:
    """Mask of rows to evaluate and its description (see the module docstring)."""
    phases = (
        table["phase"].to_pylist() if "phase" in table.column_names else [None] * table.num_rows
    )
    has_phase = any(p is not None for p in phases)
    if phase == "all" or (phase is None and not has_phase):
        return np.ones(table.num_rows, dtype=bool), "all rows"
    if not has_phase:
        raise ValueError(
            f"--phase {phase}: this set has no phase column (only ASVspoof 2021 LA/DF do); "
            "leave --phase out"
        )
    want = phase or "eval"
    mask = np.asarray([p == want for p in phases], dtype=bool)
    if not mask.any():
        raise ValueError(
            f"no rows of phase {want!r}; phases present: {sorted({p for p in phases if p})}"
        )
    return mask, f"phase {want}"


def align(table: pa.Table, raw: dict[str, float]) -> np.ndarray:
    """Scores in metadata order (NaN where a clip has no score)."""
    return np.asarray([raw.get(u, math.nan) for u in table["utt_id"].to_pylist()], dtype=np.float64)


def set_metrics(
    table: pa.Table, scores: np.ndarray, mask: np.ndarray, *, calibrated: bool
) -> dict[str, Any] | None:
    """``spoofdet.evaluation.report.evaluate_table`` on the selected, scored rows; None without both classes.

    actDCF and Cllr are set to None for raw (uncalibrated) scores: they assume LLRs.
    """
    use = mask & np.isfinite(scores)
    labels = np.asarray([v if v is not None else -1 for v in table["label"].to_pylist()])
    if not ((labels[use] == 1).any() and (labels[use] == 0).any()):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_table(scores[use], table.filter(pa.array(use)))
    result["warnings"] = [str(w.message) for w in caught]
    if not calibrated:
        result["act_dcf"] = result["cllr"] = None
    return result


def _cell(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def cross_dataset_table(
    results: list[dict[str, Any]], protocol: dict[str, Any], model: str
) -> tuple[str, dict]:
    """Markdown and JSON of one row per eval set (the cross-dataset matrix), protocol stated in both."""
    rows = []
    for r in results:
        m = r.get("metrics") or {}
        rows.append(
            {
                "eval_set": r["eval_set"],
                "selection": r["selection"],
                "n_bonafide": m.get("n_bonafide"),
                "n_spoof": m.get("n_spoof"),
                "n_scored": r["n_scored"],
                **{k: m.get(k) for k in METRICS},
            }
        )
    done = [r for r in rows if r["eer"] is not None]
    pooled = {
        k: (
            float(np.mean([r[k] for r in done]))
            if done and all(r[k] is not None for r in done)
            else None
        )
        for k in METRICS
    }
    lines = [
        f"Model: {model}. Protocol: {protocol['length']} ({protocol['description']}). "
        "EER in %, minDCF/actDCF at ASVspoof 5 costs (Pspoof 0.05, Cmiss 1, Cfa 10), Cllr in bits; "
        "actDCF/Cllr need calibrated LLRs.",
        "",
        "| eval set | rows evaluated | bona fide | spoof | EER % | minDCF | actDCF | Cllr |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['eval_set']} | {r['selection']} | {_cell(r['n_bonafide'], ',')} "
            f"| {_cell(r['n_spoof'], ',')} "
            f"| {_cell(r['eer'], '.2f')} | {_cell(r['min_dcf'], '.4f')} | {_cell(r['act_dcf'], '.4f')} "
            f"| {_cell(r['cllr'], '.4f')} |"
        )
    if len(done) > 1:
        lines.append(
            f"| **mean over {len(done)} sets** | | | | {_cell(pooled['eer'], '.2f')} | "
            f"{_cell(pooled['min_dcf'], '.4f')} | {_cell(pooled['act_dcf'], '.4f')} | "
            f"{_cell(pooled['cllr'], '.4f')} |"
        )
    return "\n".join(lines) + "\n", {
        "model": model,
        "protocol": protocol,
        "sets": rows,
        "mean_over_sets": pooled,
    }
