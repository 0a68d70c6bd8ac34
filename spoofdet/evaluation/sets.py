"""Eval sets for ``spoofdet score`` / ``promote``: what they are, which rows count, their metrics and tables.

An eval set (``--eval-set``) is ``[NAME=]PATH`` where PATH is a shard folder written by
``spoofdet prepare`` (``shards/`` + ``metadata.parquet``) or a folder of audio files (unlabelled:
scores and a histogram, no metrics). The default NAME is the folder name, prefixed by its parent
when the folder is a split (``runs/demo/shards/asvspoof2019-la/eval`` -> ``asvspoof2019-la-eval``).

Labels, attacks, codecs, vocoder groups, subsets and phases come from the schema columns of
``metadata.parquet`` (no protocol file is re-parsed). Rows scored per set: every row; rows
**evaluated**: those of phase ``eval`` when the set has a phase column (ASVspoof 2021 LA/DF, as
``spoofdet evaluate`` and every paper), all rows otherwise; ``--phase all`` evaluates every row.

Before anything is scored, :func:`check_ids` makes sure every id can be written: a shard set's
``scores.txt`` is whitespace-separated, so its ids must be single tokens without control
characters, each once (shard folders written before the manifest parsers refused such ids can
hold them); a folder of audio is listed once up front (its ``scores.csv`` quotes any name).

The cross-dataset table states per set how many of the rows evaluated were scored and how many
failed to decode (``scored 198 of 200 (2 failed to decode)``): metrics cover scored rows only.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spoofdet.data import shards
from spoofdet.errors import SpoofdetError
from spoofdet.evaluation.report import evaluate_table

SPLIT_NAMES = ("train", "dev", "eval", "test", "progress", "hidden")
#: Metrics compared across sets and by ``spoofdet promote`` (all: lower is better).
METRICS = ("eer", "min_dcf", "act_dcf", "cllr")
#: Metrics that mean something only for calibrated LLR scores.
LLR_METRICS = ("act_dcf", "cllr")
#: Bad ids named in full in a refusal; the others are counted.
IDS_SHOWN = 5


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
        shards.checked_shard_files(
            folder
        )  # a missing, stray or truncated file: caught before scoring
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


def unwritable_id(utt: str) -> str | None:
    """Why ``utt`` cannot be an id of a whitespace-separated score file, or None: empty, or
    holding whitespace (a space, tab, newline...) or another control character."""
    if not utt:
        return "empty"
    for c in utt:
        if c.isspace():
            return f"holds whitespace {c!r}"
        if unicodedata.category(c) == "Cc":
            return f"holds the control character {c!r}"
    return None


def check_ids(sets: list[EvalSet]) -> None:
    """Refuse, before anything is scored, eval sets whose ids cannot be written (module
    docstring): a shard set's ``utt_id`` that is empty, holds whitespace or control characters,
    or repeats; a folder whose listing fails.

    Raises:
        SpoofdetError: naming each bad set, the first few ids (``repr``) and what to do.
    """
    from spoofdet.data.corpora import prepare_folder

    problems = []
    for es in sets:
        if es.kind == "folder":
            prepare_folder(es.path, check_audio=False)  # raises, naming the files, if it must
            continue
        ids = pq.read_table(os.path.join(es.path, shards.METADATA_FILE), columns=["utt_id"])
        bad, seen, repeated = [], set(), []
        for utt in ids["utt_id"].to_pylist():
            why = unwritable_id("" if utt is None else str(utt))
            if why:
                bad.append(f"{utt!r} ({why})")
            elif utt in seen:
                repeated.append(repr(utt))
            seen.add(utt)
        where = f"eval set {es.name} ({es.path}/{shards.METADATA_FILE})"
        if bad:
            problems.append(
                f"{where}: {len(bad)} utt_id(s) cannot be written to the whitespace-separated "
                f"scores.txt, e.g. {', '.join(bad[:IDS_SHOWN])}; rename the files and re-create "
                "the shards with `spoofdet prepare` (which now refuses such ids)"
            )
        if repeated:
            problems.append(
                f"{where}: {len(repeated)} utt_id(s) occur more than once, e.g. "
                f"{', '.join(repeated[:IDS_SHOWN])}; re-create the shards with `spoofdet prepare`"
            )
    if problems:
        raise SpoofdetError(
            "nothing was scored: " + (problems[0] if len(problems) == 1 else " | ".join(problems)),
            problems,
        )


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

    actDCF and Cllr are set to None for raw (uncalibrated) scores, pooled and in every
    breakdown group: they assume LLRs. The at-threshold metrics (accuracy, F1, ...) are taken at
    the Bayes LLR threshold for calibrated scores and at the EER threshold of raw ones (flagged
    ``optimistic``: no other threshold means anything for raw scores).
    """
    use = mask & np.isfinite(scores)
    labels = np.asarray([v if v is not None else -1 for v in table["label"].to_pylist()])
    if not ((labels[use] == 1).any() and (labels[use] == 0).any()):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_table(
            scores[use], table.filter(pa.array(use)), threshold=None if calibrated else "eer"
        )
    result["warnings"] = [str(w.message) for w in caught]
    if not calibrated:
        result["act_dcf"] = result["cllr"] = None
        for groups in result["breakdown"].values():
            for g in groups.values():
                g["act_dcf"] = g["cllr"] = None
    return result


def _cell(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def coverage(n_scored: int, n_rows: int, n_failed: int) -> str:
    """``scored 198 of 200 (2 failed to decode)``; ``scored 200 of 200`` when none failed."""
    text = f"scored {n_scored:,} of {n_rows:,}"
    if n_failed:
        text += f" ({n_failed:,} failed to decode)"
    missing = n_rows - n_scored - n_failed
    if missing > 0:
        text += f" ({missing:,} without a score)"
    return text


def cross_dataset_table(
    results: list[dict[str, Any]], protocol: dict[str, Any], model: str
) -> tuple[str, dict]:
    """Markdown and JSON of one row per eval set (the cross-dataset matrix), protocol stated in both.

    Each row says which rows were evaluated and how many of them were scored
    (:func:`coverage`, from the result's ``n_evaluated_rows``/``n_evaluated_scored``/
    ``n_evaluated_failed``, else its ``n_scored``/``n_failed``): a set where clips failed to
    decode never reads as complete.
    """
    rows = []
    for r in results:
        m = r.get("metrics") or {}
        n_rows = r.get("n_evaluated_rows", r["n_scored"] + r.get("n_failed", 0))
        n_ok = r.get("n_evaluated_scored", r["n_scored"])
        n_failed = r.get("n_evaluated_failed", r.get("n_failed", 0))
        rows.append(
            {
                "eval_set": r["eval_set"],
                "selection": r["selection"],
                "n_rows": n_rows,
                "n_scored": n_ok,
                "n_failed": n_failed,
                "scored": coverage(n_ok, n_rows, n_failed),
                "n_bonafide": m.get("n_bonafide"),
                "n_spoof": m.get("n_spoof"),
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
        "actDCF/Cllr need calibrated LLRs. Metrics cover the scored rows only.",
        "",
        "| eval set | rows evaluated | scored | bona fide | spoof | EER % | minDCF | actDCF "
        "| Cllr |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['eval_set']} | {r['selection']} | {r['scored']} "
            f"| {_cell(r['n_bonafide'], ',')} | {_cell(r['n_spoof'], ',')} "
            f"| {_cell(r['eer'], '.2f')} | {_cell(r['min_dcf'], '.4f')} | {_cell(r['act_dcf'], '.4f')} "
            f"| {_cell(r['cllr'], '.4f')} |"
        )
    if len(done) > 1:
        lines.append(
            f"| **mean over {len(done)} sets** | | | | | {_cell(pooled['eer'], '.2f')} | "
            f"{_cell(pooled['min_dcf'], '.4f')} | {_cell(pooled['act_dcf'], '.4f')} | "
            f"{_cell(pooled['cllr'], '.4f')} |"
        )
    incomplete = [r for r in rows if r["n_scored"] < r["n_rows"]]
    if incomplete:
        lines += [
            "",
            "Not every row was scored: "
            + "; ".join(f"{r['eval_set']}: {r['scored']}" for r in incomplete)
            + " (the first 20 failures and their reasons: key failed of the set's metrics.json).",
        ]
    return "\n".join(lines) + "\n", {
        "model": model,
        "protocol": protocol,
        "sets": rows,
        "mean_over_sets": pooled,
        "complete": not incomplete,
    }
