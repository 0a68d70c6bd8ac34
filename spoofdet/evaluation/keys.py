"""Evaluate score files against a corpus key: the library behind ``spoofdet evaluate``.

A key is parsed with the corpus' own parser (:mod:`spoofdet.data.corpora`), so the labels, attacks
and conditions used by the breakdowns are exactly those of the manifests. Score files are read
strictly and matched to the key row by row (:mod:`spoofdet.evaluation.scorefile`); the metrics
come from :mod:`spoofdet.evaluation.report` (definitions in :mod:`spoofdet.evaluation.metrics`).

Which key rows are scored (``phase``):

* ``asvspoof2021-la`` / ``asvspoof2021-df``: the key's phase column, default ``eval`` (the rows
  every published number uses); ``all`` keeps every phase. A score file may also hold trials of
  the other phases (the seed repositories score the whole trial list); they are ignored. The
  key may be given as the ``keys/`` folder the official ``evaluate.py`` takes (or ``keys/LA``);
  the LA ASV files beside it give the t-DCF without ``--asv-*`` (:func:`find_asv_files`).
* ``asvspoof2019-la``: the split of the protocol (read from the official file name, or given).
* ``codecfake``: a test set (``C1`` .. ``C7``, ``A1`` .. ``A3``) or ``test``; a single label file
  is its own subset. Ids are ``<subset>/<wav_name>``, as in the manifests; the seed's result files
  (``--score-layout codecfake``) have bare wav names, mapped onto the one selected subset that
  holds each (:mod:`spoofdet.evaluation.official`).
* ``in-the-wild``: ``eval`` only. Ids are file names (``0.wav``).
* ``asvspoof5`` (Track 1): the split of the protocol: ``eval`` by default for the corpus root or
  its ``ASVspoof5_protocols`` folder, read from the official name of a protocol file. The
  official CM key (``filename<TAB>cm-label`` header, told by that first line) is ``eval`` unless
  ``phase`` names the split. The official score TSV (``filename<TAB>cm-score`` header) is read
  without ``--score-layout`` (see :func:`spoofdet.evaluation.scorefile.read_scores`).
* ``csv``: keep rows whose subset column equals it. A ``path`` column is not needed (evaluation
  never opens audio): ``utt_id`` and ``label`` are enough.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from spoofdet.data.corpora._asvspoof2021 import PHASES, find_key
from spoofdet.data.corpora.asvspoof5 import is_official_key, prepare_asvspoof5, read_asvspoof5_key
from spoofdet.evaluation import official, quarantine
from spoofdet.evaluation.asv_scores import read_asv_scores_2019, read_asv_scores_2021
from spoofdet.evaluation.bootstrap import BootstrapSpec
from spoofdet.evaluation.metrics import AsvScores
from spoofdet.evaluation.report import (
    evaluate_table,
    summarise_models,
    text_group,
    text_metrics,
    text_models_table,
    text_tables,
    vote_fusion,
)
from spoofdet.evaluation.scorefile import Scores, match_scores, read_scores

FORMATS = (
    "asvspoof2019-la",
    "asvspoof2021-la",
    "asvspoof2021-df",
    "asvspoof5",
    "in-the-wild",
    "codecfake",
    "csv",
)
#: ``--fuse``: ``mean`` of the scores, or ``vote`` (:func:`spoofdet.evaluation.report.vote_fusion`).
FUSIONS = ("mean", "vote")
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
    #: Set by :func:`exclude_quarantined`: the counts of the quarantined rows taken out of
    #: ``required`` (:mod:`spoofdet.evaluation.quarantine`), and the mask of those rows.
    excluded: dict[str, Any] | None = None
    left_out: np.ndarray | None = None

    @property
    def selected(self) -> pa.Table:
        return self.table.filter(pa.array(self.required))


def exclude_quarantined(key: Key, folders: Sequence[str | Path]) -> Key:
    """``key`` without the rows quarantined in the shard ``folders`` among the rows to score.

    Those rows need no score and are not evaluated; they are counted in ``excluded``
    (:func:`spoofdet.evaluation.quarantine.exclusion`), which :func:`evaluate_files` reports as
    ``excluded_quarantined``. Quarantined ids the key lacks are warned about (UserWarning).
    Every other selected row still needs its score.

    Raises:
        ShardError: a folder without a readable ``quarantine.parquet``.
    """
    if not folders:
        return key
    required, summary, left_out = quarantine.exclusion(
        key.table["utt_id"].to_pylist(), key.required, folders
    )
    note = quarantine.not_in_key_warning(summary, key.path)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    return replace(key, required=required, excluded=summary, left_out=left_out)


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
        # a folder: the keys/ folder the official evaluate.py takes, keys/<TRACK>, or above keys/
        key_file = find_key(path, _track(fmt), None, option="--key") if is_dir else path
        table = fn(root, None, key_file=key_file, check_audio=False).table
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
    if fmt == "asvspoof5":
        if is_dir:
            split = phase or "eval"
            table = prepare_asvspoof5(path, split, check_audio=False).table
        elif is_official_key(path):
            split = phase or "eval"
            table = read_asvspoof5_key(path, split).table
        else:
            table = prepare_asvspoof5(path, phase, check_audio=False).table
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
    table = prepare_csv(path, phase, check_audio=False, require_path=False).table
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
            "--asv-scores keys/LA/ASV/ASVTorch_Kaldi/score.txt (both are found by themselves "
            "when --key is the keys/ folder of LA-keys-full.tar.gz, or a CM key inside it)"
        )
    phase = phase or "eval"
    return read_asv_scores_2021(asv_scores, asv_key, None if phase == "all" else phase), "2021"


def _track(fmt: str) -> str:
    return "LA" if fmt == "asvspoof2021-la" else "DF"


def find_asv_files(
    fmt: str,
    key: Key,
    asv_scores: str | Path | None = None,
    asv_key: str | Path | None = None,
) -> dict[str, str | None] | None:
    """Which ASV files the t-DCF of ``key`` uses (:func:`load_asv` reads them), or None: no t-DCF.

    Files given are used as given. For ``asvspoof2021-la`` what is not given is looked for where
    the official ``evaluate.py`` reads it, beside the CM key (``keys/LA/CM/trial_metadata.txt``):
    ``keys/LA/ASV/trial_metadata.txt`` and ``keys/LA/ASV/ASVTorch_Kaldi/score.txt`` (also spelt
    ``ASVtorch_kaldi``). With neither given, the t-DCF is computed when both are there. For
    ``asvspoof2019-la`` with no ASV file given, the organisers' ASV score file of the protocol's
    split (dev or eval) is used where the release puts it (``LA/ASVspoof2019_LA_asv_scores/``)
    or beside the protocol.

    Returns:
        ``{"scores", "key", "found"}``: the paths (``key`` None for 2019, whose ASV score file
        carries its own keys) and how they were found (``given``, ``beside the CM key <path>``,
        ``key beside the CM key <path>``).
    """
    given = {
        "scores": None if asv_scores is None else str(asv_scores),
        "key": None if asv_key is None else str(asv_key),
        "found": "given",
    }
    if fmt == "asvspoof2019-la" and asv_scores is None and asv_key is None:
        subsets = {v for v in key.table["subset"].to_pylist() if v} if key.table.num_rows else set()
        split = subsets.pop() if len(subsets) == 1 else None
        found = official.asv_2019_beside(Path(key.path), split)
        if found is None:
            return None
        return {"scores": str(found), "key": None, "found": f"beside the CM protocol {key.path}"}
    if fmt != "asvspoof2021-la" or (asv_scores is not None and asv_key is not None):
        return given if asv_scores is not None else None
    cm = Path(key.path)
    if cm.is_dir():
        cm = find_key(cm, "LA", None, option="--key")
    found_key, found_scores = official.asv_files_beside(cm)
    if asv_scores is None:
        if asv_key is not None or found_key is None or found_scores is None:
            return None
        return {
            "scores": str(found_scores),
            "key": str(found_key),
            "found": f"beside the CM key {cm}",
        }
    if found_key is None:
        return given  # load_asv says what is missing
    return {
        "scores": str(asv_scores),
        "key": str(found_key),
        "found": f"key beside the CM key {cm}",
    }


def _read_for_key(path: str | Path, key: Key, layout: str) -> tuple[Scores, str | None]:
    """A score file read for ``key``: a Codecfake result file's bare wav names mapped onto
    ``<subset>/<name>`` ids (:func:`spoofdet.evaluation.official.map_bare_names`)."""
    scores = read_scores(path, layout=layout)
    if key.format != "codecfake" or layout != "codecfake":
        return scores, None
    subsets = list(dict.fromkeys(key.selected["subset"].to_pylist()))
    return official.map_bare_names(scores, key.table["utt_id"].to_pylist(), subsets, key.path)


def evaluate_files(
    score_paths: Sequence[str | Path],
    key: Key,
    *,
    layout: str = "id-score",
    asv: AsvScores | None = None,
    tdcf_form: str | None = None,
    fuse: str | None = None,
    return_aligned: bool = False,
    asv_files: dict[str, str | None] | None = None,
    threshold: float | str | None = None,
    positive: str = "bonafide",
    bootstrap: BootstrapSpec | None = None,
    tables: bool = True,
) -> dict[str, Any] | tuple[dict[str, Any], list[np.ndarray]]:
    """Evaluate one or several score files against ``key``.

    Every file must score every selected key row and nothing outside the key (see
    :func:`spoofdet.evaluation.scorefile.match_scores`); all files are checked before any metric is computed.

    Returns:
        One file: the :func:`spoofdet.evaluation.report.evaluate_table` dict plus ``scores``, ``format``,
        ``key`` and ``selection``. Several files: ``models`` (one such dict each),
        ``over_models`` (best/mean/std of each metric, AUC and the at-threshold metrics
        included, the AMSDF-style report) and ``fusion`` (the metrics of the fused scores:
        ``mean`` per utterance, or ``vote`` of the models at ``threshold``, see
        :func:`spoofdet.evaluation.report.vote_fusion`; None without ``fuse``).
        ``threshold``, ``positive``, ``bootstrap`` and ``tables`` go to
        :func:`spoofdet.evaluation.report.evaluate_table` for every file and the fusion.
        Polarity warnings are re-issued with the score file named. With ``return_aligned``,
        ``(result, aligned)``: per file, its scores aligned with ``key.selected`` (for plots).
        ``id_mapping`` (per file) when a Codecfake result file's bare names were mapped;
        ``asv_files`` when given (:func:`find_asv_files`, reported as is). For a key from
        :func:`exclude_quarantined`, ``excluded_quarantined`` (``count``, ``by_reason``,
        ``examples``, ``outside_selection``, ``not_in_key``; per file also
        ``scored_but_quarantined``: left out although scored).

    Raises:
        ScoreFileError: a malformed or unmatched score file.
        ValueError: an unknown fusion.
    """
    if fuse is not None and fuse not in FUSIONS:
        raise ValueError(f"unknown fusion {fuse!r}: expected one of {list(FUSIONS)}")
    opts: dict[str, Any] = {
        "threshold": threshold,
        "positive": positive,
        "bootstrap": bootstrap,
        "tables": tables,
    }
    ids = key.table["utt_id"].to_pylist()
    required, excluded, left_out = key.required, key.excluded, key.left_out
    selected = key.selected
    read = [_read_for_key(p, key, layout) for p in score_paths]
    full = [match_scores(s, ids, required=required, key_name=f"key {key.path}") for s, _ in read]
    aligned = [a[required] for a in full]
    meta: dict[str, Any] = {"format": key.format, "key": key.path, "selection": key.selection}
    if asv_files is not None:
        meta["asv_files"] = asv_files
    if excluded is not None:
        meta["excluded_quarantined"] = excluded
    results = []
    for path, scores, (_, mapping), whole in zip(score_paths, aligned, read, full):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = evaluate_table(scores, selected, asv=asv, tdcf_form=tdcf_form, **opts)
        for w in caught:
            warnings.warn(f"{path}: {w.message}", UserWarning, stacklevel=2)
        own: dict[str, Any] = {} if mapping is None else {"id_mapping": mapping}
        if excluded is not None:
            own["excluded_quarantined"] = {
                **excluded,
                "scored_but_quarantined": quarantine.scored_excluded(whole, left_out),
            }
        results.append({"scores": str(path), **meta, **own, **r})
    if len(results) == 1:
        return (results[0], aligned) if return_aligned else results[0]
    fusion = None
    if fuse is not None:
        fuse_opts = dict(opts)
        if fuse == "mean":
            fused = np.mean(np.stack(aligned), axis=0)
        else:  # each model votes at its own resolved threshold; the fused decision is fused >= 1/2
            fused = vote_fusion(aligned, [r["at_threshold"]["threshold"] for r in results])
            fuse_opts["threshold"] = 0.5
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fusion = {
                "method": fuse,
                "scores": [str(p) for p in score_paths],
                **meta,
                **evaluate_table(fused, selected, asv=asv, tdcf_form=tdcf_form, **fuse_opts),
            }
        if fuse == "vote":
            fusion["at_threshold"].update(
                threshold_source="vote", optimistic=False, assumes_llr=False
            )
            fusion["vote_thresholds"] = [r["at_threshold"]["threshold"] for r in results]
        for w in caught:
            warnings.warn(f"fused scores: {w.message}", UserWarning, stacklevel=2)
    out = {"models": results, "over_models": summarise_models(results), "fusion": fusion, **meta}
    return (out, aligned) if return_aligned else out


# ----------------------------------------------------------------------------- text report


def _fmt(v: Any, spec: str, unit: str = "") -> str:
    text = "n/a" if v is None else format(v, spec) + unit
    return text.rjust(len(format(0.0, spec) + unit))


def _provenance(r: dict[str, Any]) -> list[str]:
    """Report lines for what was read differently from the files as given: mapped ids, the ASV
    files found, quarantined rows left out."""
    lines = []
    if r.get("id_mapping"):
        lines.append(f"  ids mapped: {r['id_mapping']}")
    files = r.get("asv_files")
    if files and "tdcf" in r:
        key = f", key {files['key']}" if files.get("key") else ""
        lines.append(f"  ASV files ({files['found']}): scores {files['scores']}{key}")
    ex = r.get("excluded_quarantined")
    if ex:
        reasons = ", ".join(f"{k} {v:,}" for k, v in ex["by_reason"].items()) or "none"
        scored = ex.get("scored_but_quarantined", 0)
        lines.append(
            f"  excluded {ex['count']:,} quarantined key row(s) ({reasons}) of "
            f"{', '.join(ex['folders'])}"
            + (f"; {scored:,} of them scored anyway, not used" if scored else "")
            + (
                f"; {ex['not_in_key']:,} quarantined id(s) not in the key"
                if ex["not_in_key"]
                else ""
            )
        )
    return lines


def _report_one(r: dict[str, Any], title: str) -> list[str]:
    lines = [
        title,
        f"  key {r['key']} ({r['format']}, {r['selection']}): {r['n_bonafide']:,} bona fide, "
        f"{r['n_spoof']:,} spoof"
        + (f", {r['n_unlabelled']:,} unlabelled (skipped)" if r.get("n_unlabelled") else ""),
        f"  EER {r['eer']:.3f} %  (threshold {r['threshold']:.6g})   minDCF {r['min_dcf']:.4f}   "
        f"actDCF {r['act_dcf']:.4f}   Cllr {r['cllr']:.4f}   (actDCF and Cllr assume LLR scores)",
        *text_metrics(r),
    ]
    if "tdcf" in r:
        t, op = r["tdcf"], r["tdcf"]["asv"]
        lines.append(
            f"  min t-DCF {t['min_tdcf']:.4f} ({t['form']}; ASV at its EER threshold {op['threshold']:.6g}: "
            f"Pmiss {op['pmiss_asv']:.4f}, Pfa {op['pfa_asv']:.4f}, Pfa_spoof {op['pfa_spoof_asv']:.4f})"
        )
    lines += _provenance(r)
    if r["polarity_warning"]:
        lines.append(
            f"  WARNING: negated scores give EER {r['eer_negated']:.3f} %: the scores look inverted "
            "(higher must mean more bona fide). Nothing was flipped."
        )
    for dim, groups in r["breakdown"].items():
        vs = " (spoof of each vs all bona fide)" if dim in ("attack", "vocoder") else ""
        lines.append(f"  by {dim}{vs}:")
        lines += [text_group(name, g) for name, g in groups.items()]
    return lines + text_tables(r.get("breakdown_2d") or {})


def format_report(result: dict[str, Any]) -> str:
    """Render :func:`evaluate_files` output as a plain-text report."""
    if "models" not in result:
        return "\n".join(_report_one(result, f"scores {result['scores']}"))
    lines: list[str] = []
    for r in result["models"]:
        lines += _report_one(r, f"scores {r['scores']}") + [""]
    lines.append(
        f"over {len(result['models'])} models (best = lowest, highest for AUC and F1; F1 at the "
        "stated threshold):"
    )
    lines += text_models_table(
        result["models"],
        result["over_models"],
        result["fusion"],
        [Path(r["scores"]).name for r in result["models"]],
    )
    if result["fusion"] is not None:
        lines += [""] + _report_one(
            result["fusion"], f"fusion: {result['fusion']['method']} of the scores"
        )
    return "\n".join(lines)
