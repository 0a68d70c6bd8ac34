"""Linear score fusion by logistic regression: several detectors' scores -> one LLR.

The BOSARIS / ASVspoof 5 practice (the organisers' score-fusion tool, WeDefense): for ``d``
systems with scores ``s_1 .. s_d`` per trial, fit weights ``w`` and an offset ``b`` so that
``sum_i w_i s_i + b`` is the log posterior odds of bona fide at the prior ``pi``, by minimising
the same prior-weighted cross-entropy as :mod:`spoofdet.evaluation.calibration`::

    J(w, b) = pi * mean_bonafide softplus(-(w.s + b)) + (1 - pi) * mean_spoof softplus(w.s + b)

(Newton's method in ``d + 1`` dimensions with backtracking; the objective is convex), and return
``LLR(s) = w.s + b - logit(pi)``. Each input is standardised (mean and standard deviation over
both classes) before the fit and the map is expressed in raw scores afterwards, exactly as the
calibration does, so for ``d = 1`` the fusion is the calibration's map (same start, same steps).
The default prior is the calibration's (:data:`~spoofdet.evaluation.calibration.DEFAULT_P_BONAFIDE`).

Unlike a calibration slope, a fusion weight may be negative (an input used to cancel another's
errors); that is kept and warned about. :class:`Fusion` serialises to JSON with a weight per
input name and the dev metrics of every input and of the fusion. :func:`fit_files` and
:func:`apply_files` are what ``spoofdet fuse`` runs: dev score files matched strictly to a key
(:func:`spoofdet.evaluation.scorefile.match_scores`), eval score files matched to each other.
Needs numpy and scipy only.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spoofdet.errors import SpoofdetError
from spoofdet.evaluation.calibration import DEFAULT_P_BONAFIDE, fit_linear_llr
from spoofdet.evaluation.metrics import act_dcf, cllr, compute_eer, min_dcf
from spoofdet.evaluation.scorefile import Scores, match_scores, read_scores

METHOD = "prior-weighted-logistic-regression-fusion"
#: Ids named in a mismatch error.
MAX_EXAMPLES = 5


class FusionError(SpoofdetError):
    """A fusion cannot be fitted, loaded or applied; the message says why and what to do."""


@dataclass(frozen=True)
class Fusion:
    """``LLR = sum_i weights[i] * score_i + offset``, fitted at ``p_bonafide`` on ``n_bonafide`` +
    ``n_spoof`` dev trials; ``names`` say which input each weight belongs to (in order), ``dev``
    holds the dev metrics of each input and of the fusion (:func:`dev_metrics`)."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    offset: float
    p_bonafide: float
    n_bonafide: int
    n_spoof: int
    dev: dict[str, Any] = field(default_factory=dict)
    method: str = METHOD

    def apply(self, scores: Any) -> np.ndarray:
        """Map a ``(trials, inputs)`` score matrix to LLRs (one per trial).

        Raises:
            FusionError: a matrix with another number of columns than inputs.
        """
        x = np.asarray(scores, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.weights):
            raise FusionError(
                f"the fusion has {len(self.weights)} inputs ({', '.join(self.names)}) but the "
                f"scores have shape {x.shape}; give one score column per input, in that order"
            )
        return x @ np.asarray(self.weights) + self.offset

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "inputs": [{"name": n, "weight": w} for n, w in zip(self.names, self.weights)],
            "offset": self.offset,
            "p_bonafide": self.p_bonafide,
            "n_bonafide": self.n_bonafide,
            "n_spoof": self.n_spoof,
            "dev": self.dev,
        }

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "fusion") -> Fusion:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            FusionError: not an object, a missing field, an unknown method, a non-finite number,
                an input without name or weight.
        """
        if not isinstance(d, dict):
            raise FusionError(f"{where}: expected a JSON object, got {type(d).__name__}")
        needed = ("method", "inputs", "offset", "p_bonafide", "n_bonafide", "n_spoof")
        missing = [k for k in needed if k not in d]
        if missing:
            raise FusionError(
                f"{where}: missing field(s) {missing}; a fusion file is what `spoofdet fuse` "
                "writes beside its output (FUSED.fusion.json)"
            )
        if d["method"] != METHOD:
            raise FusionError(
                f"{where}: field 'method' is {d['method']!r}; only {METHOD!r} is supported"
            )
        inputs = d["inputs"]
        if not isinstance(inputs, list) or not inputs:
            raise FusionError(f"{where}: field 'inputs' must be a non-empty list")
        for i, item in enumerate(inputs):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
                raise FusionError(f"{where}: inputs[{i}] needs a 'name' (string)")
            if not _finite(item.get("weight")):
                raise FusionError(
                    f"{where}: inputs[{i}] ({item['name']}): 'weight' must be a finite number, "
                    f"got {item.get('weight')!r}"
                )
        for name in ("offset", "p_bonafide"):
            if not _finite(d[name]):
                raise FusionError(
                    f"{where}: field {name!r} must be a finite number, got {d[name]!r}"
                )
        if not 0.0 < d["p_bonafide"] < 1.0:
            raise FusionError(
                f"{where}: field 'p_bonafide' must lie in (0, 1), got {d['p_bonafide']!r}"
            )
        return cls(
            tuple(item["name"] for item in inputs),
            tuple(float(item["weight"]) for item in inputs),
            float(d["offset"]),
            float(d["p_bonafide"]),
            int(d["n_bonafide"]),
            int(d["n_spoof"]),
            dict(d.get("dev") or {}),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON whole (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Fusion:
        path = Path(path)
        if not path.is_file():
            raise FusionError(f"fusion file not found: {path}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise FusionError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(d, where=str(path))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _matrix(x: Any, d: int | None, what: str) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim == 1 and d in (None, 1):
        m = m[:, None]
    if m.ndim != 2 or (d is not None and m.shape[1] != d):
        raise FusionError(f"{what}: expected a (trials, {d or 'inputs'}) matrix, got {m.shape}")
    return m


def fit_fusion(
    bonafide_scores: Any,
    spoof_scores: Any,
    *,
    names: Sequence[str] | None = None,
    p_bonafide: float = DEFAULT_P_BONAFIDE,
) -> Fusion:
    """Fit a linear logistic-regression fusion on dev scores.

    Args:
        bonafide_scores, spoof_scores: ``(trials, inputs)`` matrices (a 1-D array is one input),
            higher = more bona fide in every column.
        names: a name per input (default ``input1`` ..).
        p_bonafide: the target prior of bona fide the cross-entropy is weighted at.

    Returns:
        The :class:`Fusion` with :func:`dev_metrics` of every input and of the fused LLRs.
        A negative weight is kept and warned about (UserWarning naming the input).

    Raises:
        FusionError: no trials of a class, non-finite scores, an input whose scores are all
            equal, a prior outside (0, 1), a diverged fit.
    """
    if not 0.0 < p_bonafide < 1.0:
        raise FusionError(f"p_bonafide must lie in (0, 1), got {p_bonafide!r}")
    tar = _matrix(bonafide_scores, None, "bona fide scores")
    d = tar.shape[1]
    non = _matrix(spoof_scores, d, "spoof scores")
    names = tuple(names) if names is not None else tuple(f"input{i + 1}" for i in range(d))
    if len(names) != d:
        raise FusionError(f"{len(names)} names for {d} inputs")
    for what, x in (("bona fide", tar), ("spoof", non)):
        if x.shape[0] == 0:
            raise FusionError(f"no {what} dev trials to fit the fusion on")
        bad = ~np.isfinite(x)
        if bad.any():
            col = int(np.flatnonzero(bad.any(axis=0))[0])
            raise FusionError(
                f"{int(bad.sum())} {what} score(s) are NaN or infinite (e.g. input {names[col]})"
            )
    flat = [names[i] for i in np.flatnonzero(np.concatenate([tar, non]).std(axis=0) == 0.0)]
    if flat:
        raise FusionError(
            f"every dev score of {', '.join(flat)} is identical: such an input carries nothing "
            "to fuse; leave it out"
        )
    weights, offset = fit_linear_llr(tar, non, p_bonafide)
    if not (np.all(np.isfinite(weights)) and math.isfinite(offset)):
        raise FusionError("fusion fit diverged (non-finite weights or offset)")
    fusion = Fusion(
        names, tuple(float(v) for v in weights), offset, float(p_bonafide), len(tar), len(non)
    )
    llr_t, llr_n = fusion.apply(tar), fusion.apply(non)
    if llr_t.min() > llr_n.max():
        warnings.warn(
            "the fused dev scores separate the classes perfectly: the weights are limited only by "
            "the optimiser and the LLRs will be over-confident; use a harder or larger dev set",
            stacklevel=2,
        )
    dev = {
        "inputs": {n: dev_metrics(tar[:, i], non[:, i]) for i, n in enumerate(names)},
        "fusion": {**dev_metrics(llr_t, llr_n), "cllr": cllr(llr_t, llr_n)},
    }
    for n, wt in zip(names, weights):
        if wt < 0:
            warnings.warn(
                f"input {n} gets a negative weight ({wt:.4g}): the fusion uses it to cancel the "
                f"other inputs' errors, or its scores are inverted (its dev EER "
                f"{dev['inputs'][n]['eer']:.2f} %); check its polarity",
                stacklevel=2,
            )
    return Fusion(fusion.names, fusion.weights, offset, fusion.p_bonafide, len(tar), len(non), dev)


def dev_metrics(bonafide: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
    """EER (%), minDCF and actDCF (the scores taken as LLRs: meaningful for calibrated ones)."""
    return {
        "eer": 100.0 * compute_eer(bonafide, spoof)[0],
        "min_dcf": min_dcf(bonafide, spoof)[0],
        "act_dcf": act_dcf(bonafide, spoof),
    }


def dev_matrix(
    score_paths: Sequence[str | os.PathLike], key: Any, *, layout: str = "id-score"
) -> tuple[np.ndarray, np.ndarray, int]:
    """The dev scores of every file, matched strictly to ``key`` (a
    :class:`spoofdet.evaluation.keys.Key`: every selected key row scored, no id outside the key,
    no duplicate), as ``(bona fide matrix, spoof matrix, unlabelled rows)``; a column per file.

    Raises:
        ScoreFileError: a malformed or unmatched score file (file, counts and examples named).
        FusionError: the key's selected rows lack a class.
    """
    ids = key.table["utt_id"].to_pylist()
    columns = [
        match_scores(
            read_scores(p, layout=layout), ids, required=key.required, key_name=f"key {key.path}"
        )[key.required]
        for p in score_paths
    ]
    x = np.stack(columns, axis=1)
    labels = np.asarray([-1 if v is None else v for v in key.selected["label"].to_pylist()])
    for value, what in ((1, "bona fide"), (0, "spoof")):
        if not (labels == value).any():
            raise FusionError(
                f"key {key.path} ({key.selection}) has no {what} rows: a fusion is fitted on "
                "labelled dev trials of both classes; pass the dev key (and --phase)"
            )
    return x[labels == 1], x[labels == 0], int((labels == -1).sum())


def eval_matrix(
    score_paths: Sequence[str | os.PathLike], *, layout: str = "id-score"
) -> tuple[list[str], np.ndarray]:
    """The eval scores of every file as ``(ids in the first file's order, (trials, files)
    matrix)``. Every file must score exactly the same ids, each once.

    Raises:
        ScoreFileError: a malformed file.
        FusionError: a file with a duplicated id, or whose ids differ from the first file's
            (the file, the counts and examples of the differing ids named).
    """
    read = [read_scores(p, layout=layout) for p in score_paths]
    for s in read:
        _no_duplicates(s)
    first = read[0]
    ref = set(first.ids)
    for s in read[1:]:
        ids = set(s.ids)
        missing = [u for u in first.ids if u not in ids]
        extra = [u for u in s.ids if u not in ref]
        if missing or extra:
            raise FusionError(
                f"{s.path} does not score the same ids as {first.path}: "
                f"{len(missing)} id(s) of {first.path} are missing from it"
                + (f" (e.g. {', '.join(map(repr, missing[:MAX_EXAMPLES]))})" if missing else "")
                + f" and {len(extra)} of its id(s) are not in {first.path}"
                + (f" (e.g. {', '.join(map(repr, extra[:MAX_EXAMPLES]))})" if extra else "")
                + "; fuse score files of the same trials (score every model on the same eval set)"
            )
    columns = [first.scores]
    for s in read[1:]:
        by_id = dict(zip(s.ids, s.scores))
        columns.append(np.asarray([by_id[u] for u in first.ids]))
    return list(first.ids), np.stack(columns, axis=1)


def _no_duplicates(scores: Scores) -> None:
    dups = scores.duplicates()
    if dups:
        ex = ", ".join(
            f"{u!r} (lines {', '.join(map(str, ln))})"
            for u, ln in list(dups.items())[:MAX_EXAMPLES]
        )
        raise FusionError(
            f"{scores.path}: {len(dups)} id(s) occur more than once, e.g. {ex}; write each trial once"
        )


def fit_files(
    score_paths: Sequence[str | os.PathLike],
    key: Any,
    *,
    layout: str = "id-score",
    p_bonafide: float = DEFAULT_P_BONAFIDE,
) -> Fusion:
    """:func:`fit_fusion` on dev score files matched to ``key`` (:func:`dev_matrix`); the inputs
    are named by their paths as given, plus the dev counts and the unlabelled rows left out."""
    tar, non, unlabelled = dev_matrix(score_paths, key, layout=layout)
    fusion = fit_fusion(tar, non, names=[str(p) for p in score_paths], p_bonafide=p_bonafide)
    dev = {
        **fusion.dev,
        "key": key.path,
        "selection": key.selection,
        "n_unlabelled_left_out": unlabelled,
    }
    return Fusion(
        fusion.names,
        fusion.weights,
        fusion.offset,
        fusion.p_bonafide,
        fusion.n_bonafide,
        fusion.n_spoof,
        dev,
    )


def apply_files(
    fusion: Fusion, score_paths: Sequence[str | os.PathLike], *, layout: str = "id-score"
) -> tuple[list[str], np.ndarray]:
    """Fuse eval score files (one per fusion input, in the fusion's order): ``(ids, LLRs)``.

    Raises:
        FusionError: another number of files than inputs, ids that differ between files.
    """
    if len(score_paths) != len(fusion.weights):
        raise FusionError(
            f"the fusion has {len(fusion.weights)} inputs ({', '.join(fusion.names)}) but "
            f"{len(score_paths)} score file(s) were given to apply it to; give one per input, "
            "in the same order"
        )
    ids, x = eval_matrix(score_paths, layout=layout)
    return ids, fusion.apply(x)


def fusion_json_path(out: str | os.PathLike) -> Path:
    """Where ``spoofdet fuse`` writes the fusion of output ``out``: ``FUSED.txt`` ->
    ``FUSED.fusion.json``."""
    out = Path(out)
    return out.with_name((out.stem if out.suffix else out.name) + ".fusion.json")
