"""Evaluate score files against a corpus key: the library behind ``spoofdet evaluate``.

A key is parsed with the corpus' own parser (:mod:`spoofdet.data.corpora`), so the labels, attacks
and conditions used by the breakdowns are exactly those of the manifests. Score files are read
strictly and matched to the key row by row (:mod:`spoofdet.evaluation.scorefile`); the metrics
come from :mod:`spoofdet.evaluation.report` (definitions in :mod:`spoofdet.evaluation.metrics`).

Which key rows are scored (``phase``):

* ``asvspoof2021-la`` / ``asvspoof2021-df``: the key's phase column, default ``eval`` (the rows
  every published number uses); ``all`` keeps every phase. A score file may also hold trials of
  the other phases (the seed repositories score the whole trial list); they are ignored.
* ``asvspoof2019-la``: the split of the protocol (read from the official file name, or given).
* ``codecfake``: a test set (``C1`` .. ``C7``, ``A1`` .. ``A3``) or ``test``; a single label file
  is its own subset. Ids are ``<subset>/<wav_name>``, as in the manifests.
* ``in-the-wild``: ``eval`` only. Ids are file names (``0.wav``).
* ``csv``: keep rows whose subset column equals it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from spoofdet.data.corpora import (
    prepare_asvspoof2019_la,
    prepare_asvspoof2021_df,
    prepare_asvspoof2021_la,
    prepare_codecfake,
    prepare_csv,
    prepare_in_the_wild,
)
from spoofdet.data.corpora._asvspoof2021 import PHASES
from spoofdet.evaluation.asv_scores import read_asv_scores_2019, read_asv_scores_2021
from spoofdet.evaluation.metrics import AsvScores
from spoofdet.evaluation.report import evaluate_table, summarise_models
from spoofdet.evaluation.scorefile import match_scores, read_scores

FORMATS = (
    "asvspoof2019-la",
    "asvspoof2021-la",
    "asvspoof2021-df",
    "in-the-wild",
    "codecfake",
    "csv",
)
FUSIONS = ("mean",)
#: Which t-DCF form each corpus reports, and so which formats accept ASV scores.
TDCF_FORM = {"asvspoof2019-la": "2019", "asvspoof2021-la": "2021"}


@dataclass(frozen=True)
class Key:
    """A parsed key: every row of the file, and the mask of rows to evaluate."""

    format: str
    path: str
    table: pa.Table
    required: np.ndarray
    selection: str

    @property
    def selected(self) -> pa.Table:
        return self.table.filter(pa.array(self.required))


def load_key(fmt: str, path: str | Path, phase: str | None = None) -> Key:
    """Parse a key file (or a corpus root holding it) in format ``fmt``.

    Raises:
        ValueError: an unknown format or phase for that format.
        ManifestError: the key is missing or malformed (file and line named).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown key format {fmt!r}: expected one of {list(FORMATS)}")
    path = Path(path).expanduser().absolute()
    is_dir = path.is_dir()
    root = path if is_dir else path.parent
    if fmt in ("asvspoof2021-la", "asvspoof2021-df"):
        phase = phase or "eval"
        if phase != "all" and phase not in PHASES:
            raise ValueError(f"--phase for {fmt} must be one of {[*PHASES, 'all']}, got {phase!r}")
        fn = prepare_asvspoof2021_la if fmt == "asvspoof2021-la" else prepare_asvspoof2021_df
        table = fn(root, None, key_file=None if is_dir else path, check_audio=False).table
        phases = np.asarray(table["phase"].to_pylist(), dtype=object)
        required = np.ones(table.num_rows, bool) if phase == "all" else phases == phase
        return Key(fmt, str(path), table, required, f"phase {phase}")
    if fmt == "asvspoof2019-la":
        if is_dir:
            split = phase or "eval"
            table = prepare_asvspoof2019_la(root, split, check_audio=False).table
        else:
            table = prepare_asvspoof2019_la(
                root, phase, protocol_file=path, check_audio=False
            ).table
            split = table["subset"][0].as_py() if table.num_rows else phase
        return Key(fmt, str(path), table, np.ones(table.num_rows, bool), f"split {split}")
    if fmt == "in-the-wild":
        table = prepare_in_the_wild(
            root, phase, meta_file=None if is_dir else path, check_audio=False
        ).table
        return Key(fmt, str(path), table, np.ones(table.num_rows, bool), "eval")
    if fmt == "codecfake":
        if is_dir:
            split = phase or "test"
            table = prepare_codecfake(root, split, check_audio=False).table
        else:
            table = prepare_codecfake(root.parent, phase, label_file=path, check_audio=False).table
            split = phase or path.stem
        return Key(fmt, str(path), table, np.ones(table.num_rows, bool), f"subset {split}")
    table = prepare_csv(path, phase, check_audio=False).table
    return Key(
        fmt,
        str(path),
        table,
        np.ones(table.num_rows, bool),
        f"subset {phase}" if phase else "all rows",
    )


def load_asv(
    fmt: str,
    asv_scores: str | Path,
    asv_key: str | Path | None,
    phase: str | None = None,
) -> tuple[AsvScores, str]:
    """ASV scores for the t-DCF of ``fmt`` and the t-DCF form it reports (``"2019"``/``"2021"``).

    Raises:
        ValueError: the format has no t-DCF, or 2021 LA without its ASV key.
        ScoreFileError: malformed or unmatched ASV files.
    """
    if fmt not in TDCF_FORM:
        raise ValueError(
            f"the t-DCF is defined for {list(TDCF_FORM)} only, not {fmt}; drop --asv-scores"
        )
    if fmt == "asvspoof2019-la":
        if asv_key is not None:
            raise ValueError(
                "--asv-key is not used for asvspoof2019-la: the 2019 ASV score file "
                "(ASVspoof2019.LA.asv.eval.gi.trl.scores.txt) carries its own keys"
            )
        return read_asv_scores_2019(asv_scores), "2019"
    if asv_key is None:
        raise ValueError(
            "asvspoof2021-la needs --asv-key keys/LA/ASV/trial_metadata.txt with "
            "--asv-scores keys/LA/ASV/ASVTorch_Kaldi/score.txt"
        )
    phase = phase or "eval"
    return read_asv_scores_2021(asv_scores, asv_key, None if phase == "all" else phase), "2021"


def evaluate_files(
    score_paths: Sequence[str | Path],
    key: Key,
    *,
    layout: str = "id-score",
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    fuse: str | None = None,
) -> dict[str, Any]:
    """Evaluate one or several score files against ``key``.

    Every file must score every selected key row and nothing outside the key (see
    :func:`spoofdet.evaluation.scorefile.match_scores`); all files are checked before any metric is computed.

    Returns:
        One file: the :func:`spoofdet.evaluation.report.evaluate_table` dict plus ``scores``, ``format``,
        ``key`` and ``selection``. Several files: ``models`` (one such dict each),
        ``over_models`` (best/mean/std of each metric, the AMSDF-style report) and ``fusion``
        (the metrics of the per-utterance mean of the scores, or None without ``fuse``).
        Polarity warnings are re-issued with the score file named.

    Raises:
        ScoreFileError: a malformed or unmatched score file.
        ValueError: an unknown fusion.
    """
    if fuse is not None and fuse not in FUSIONS:
        raise ValueError(f"unknown fusion {fuse!r}: expected one of {list(FUSIONS)}")
    ids = key.table["utt_id"].to_pylist()
    selected = key.selected
    aligned = [
        match_scores(
            read_scores(p, layout=layout), ids, required=key.required, key_name=f"key {key.path}"
        )[key.required]
        for p in score_paths
    ]
    meta = {"format": key.format, "key": key.path, "selection": key.selection}
    results = []
    for path, scores in zip(score_paths, aligned):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = evaluate_table(scores, selected, asv=asv, tdcf_form=tdcf_form)
        for w in caught:
            warnings.warn(f"{path}: {w.message}", UserWarning, stacklevel=2)
        results.append({"scores": str(path), **meta, **r})
    if len(results) == 1:
        return results[0]
    fusion = None
    if fuse == "mean":
        fused = np.mean(np.stack(aligned), axis=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fusion = {
                "method": "mean",
                "scores": [str(p) for p in score_paths],
                **meta,
                **evaluate_table(fused, selected, asv=asv, tdcf_form=tdcf_form),
            }
        for w in caught:
            warnings.warn(f"fused scores: {w.message}", UserWarning, stacklevel=2)
    return {"models": results, "over_models": summarise_models(results), "fusion": fusion, **meta}


# ----------------------------------------------------------------------------- text report


def _fmt(v: Any, spec: str, unit: str = "") -> str:
    text = "n/a" if v is None else format(v, spec) + unit
    return text.rjust(len(format(0.0, spec) + unit))


def _report_one(r: dict[str, Any], title: str) -> list[str]:
    lines = [
        title,
        f"  key {r['key']} ({r['format']}, {r['selection']}): {r['n_bonafide']:,} bona fide, "
        f"{r['n_spoof']:,} spoof"
        + (f", {r['n_unlabelled']:,} unlabelled (skipped)" if r.get("n_unlabelled") else ""),
        f"  EER {r['eer']:.3f} %  (threshold {r['threshold']:.6g})   minDCF {r['min_dcf']:.4f}   "
        f"actDCF {r['act_dcf']:.4f}   Cllr {r['cllr']:.4f}   (actDCF and Cllr assume LLR scores)",
    ]
    if "tdcf" in r:
        t, op = r["tdcf"], r["tdcf"]["asv"]
        lines.append(
            f"  min t-DCF {t['min_tdcf']:.4f} ({t['form']}; ASV at its EER threshold {op['threshold']:.6g}: "
            f"Pmiss {op['pmiss_asv']:.4f}, Pfa {op['pfa_asv']:.4f}, Pfa_spoof {op['pfa_spoof_asv']:.4f})"
        )
    if r["polarity_warning"]:
        lines.append(
            f"  WARNING: negated scores give EER {r['eer_negated']:.3f} %: the scores look inverted "
            "(higher must mean more bona fide). Nothing was flipped."
        )
    for dim, groups in r["breakdown"].items():
        vs = " (spoof of each vs all bona fide)" if dim in ("attack", "vocoder") else ""
        lines.append(f"  by {dim}{vs}:")
        for name, g in groups.items():
            tdcf = f"  min t-DCF {_fmt(g['min_tdcf'], '.4f')}" if "min_tdcf" in g else ""
            lines.append(
                f"    {name:<34} EER {_fmt(g['eer'], '7.3f', ' %')}  minDCF {_fmt(g['min_dcf'], '.4f')}{tdcf}"
                f"  ({g['n_bonafide']:,} bona fide, {g['n_spoof']:,} spoof)"
            )
    return lines


def format_report(result: dict[str, Any]) -> str:
    """Render :func:`evaluate_files` output as a plain-text report."""
    if "models" not in result:
        return "\n".join(_report_one(result, f"scores {result['scores']}"))
    lines: list[str] = []
    for r in result["models"]:
        lines += _report_one(r, f"scores {r['scores']}") + [""]
    lines.append(f"over {len(result['models'])} models (best / mean / std):")
    for k, v in result["over_models"].items():
        scale = "%" if k == "eer" else ""
        lines.append(
            f"  {k:<9} {v['best']:.4f}{scale} / {v['mean']:.4f}{scale} / {v['std']:.4f}{scale}"
        )
    if result["fusion"] is not None:
        lines += [""] + _report_one(
            result["fusion"], f"fusion: {result['fusion']['method']} of the scores"
        )
    return "\n".join(lines)
