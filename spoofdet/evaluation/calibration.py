"""Linear score calibration: raw scores -> log-likelihood ratios (bona fide vs spoof).

The ASVspoof 5 / BOSARIS practice: fit ``a`` and ``b`` so that ``a * s + b`` is the log
posterior odds of bona fide at a chosen prior ``pi``, by minimising the prior-weighted
cross-entropy on a development set::

    J(a, b) = pi * mean_bonafide softplus(-(a s + b)) + (1 - pi) * mean_spoof softplus(a s + b)

(Newton's method; the objective is convex) and return ``LLR(s) = a * s + b - logit(pi)``. The
default ``pi`` is the effective prior of bona fide of the ASVspoof 5 cost model (Pspoof 0.05,
Cmiss 1, Cfa 10: ``pi = 0.95 / 1.45``), whose Bayes threshold on the LLR is ``-ln(1.9)``, so
:func:`spoofdet.evaluation.metrics.act_dcf` of the calibrated scores is what the fit optimises
for. A positive slope keeps the order of the scores
(EER and minDCF are unchanged); a negative one is refused with what was measured
(:func:`diagnose`: the dev EER, the EER of the negated scores, the class counts, and whether the
model is at chance, inverted or was given too few trials). :func:`check_calibratable` refuses the
same cases before a fit, for ``spoofdet calibrate``.

The fitted map is a small :class:`Calibration` that serialises to JSON, so it can be stored with
a model and applied at inference time. Needs numpy and scipy only.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from spoofdet.errors import SpoofdetError
from spoofdet.evaluation.metrics import ASVSPOOF5_COSTS, compute_eer

METHOD = "prior-weighted-logistic-regression"
#: Default target prior of bona fide: the ASVspoof 5 effective prior (about 0.655).
DEFAULT_P_BONAFIDE: float = ASVSPOOF5_COSTS.effective_prior
#: Fewer dev trials than this in either class are too few to judge or fit a calibration.
MIN_TRIALS_PER_CLASS = 10
#: A model whose EER and negated-score EER are both at least this (%) is at chance.
CHANCE_EER = 40.0


class CalibrationError(SpoofdetError):
    """A calibration cannot be fitted or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Calibration:
    """``LLR = slope * score + offset``, fitted at ``p_bonafide`` on ``n_bonafide`` + ``n_spoof`` trials."""

    slope: float
    offset: float
    p_bonafide: float
    n_bonafide: int
    n_spoof: int
    method: str = METHOD

    def apply(self, scores: Any) -> np.ndarray:
        """Map raw scores (any shape) to LLRs."""
        return self.slope * np.asarray(scores, dtype=np.float64) + self.offset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "calibration") -> Calibration:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            CalibrationError: a missing or unknown field, a non-finite number, an unknown method.
        """
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n != "method" and n not in d]
        unknown = [k for k in d if k not in names]
        if missing or unknown:
            raise CalibrationError(
                f"{where}: missing field(s) {missing}, unknown field(s) {unknown}; expected {names}"
            )
        if d.get("method", METHOD) != METHOD:
            raise CalibrationError(
                f"{where}: field 'method' is {d['method']!r}; only {METHOD!r} is supported"
            )
        for name in ("slope", "offset", "p_bonafide"):
            v = d[name]
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CalibrationError(
                    f"{where}: field {name!r} must be a finite number, got {v!r}"
                )
        if not 0.0 < d["p_bonafide"] < 1.0:
            raise CalibrationError(
                f"{where}: field 'p_bonafide' must lie in (0, 1), got {d['p_bonafide']!r}"
            )
        return cls(
            float(d["slope"]),
            float(d["offset"]),
            float(d["p_bonafide"]),
            int(d["n_bonafide"]),
            int(d["n_spoof"]),
            d.get("method", METHOD),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, *, where: str = "calibration JSON") -> Calibration:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{where}: not valid JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise CalibrationError(f"{where}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, where=where)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON whole (temporary file + rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration file not found: {path}")
        return cls.from_json(path.read_text(encoding="utf-8"), where=str(path))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _objective(
    w: np.ndarray, z_tar: np.ndarray, z_non: np.ndarray, p: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Prior-weighted cross-entropy of log-odds ``z @ w`` (``z``: standardised scores, one column
    per input, and a last column of ones), its gradient and Hessian in ``w``."""
    lo_t, lo_n = z_tar @ w, z_non @ w
    loss = p * np.mean(np.logaddexp(0.0, -lo_t)) + (1 - p) * np.mean(np.logaddexp(0.0, lo_n))
    g_t = -p * expit(-lo_t) / len(z_tar)  # d loss / d lo, per trial
    g_n = (1 - p) * expit(lo_n) / len(z_non)
    h_t = p * expit(lo_t) * expit(-lo_t) / len(z_tar)  # d2 loss / d lo2, per trial
    h_n = (1 - p) * expit(lo_n) * expit(-lo_n) / len(z_non)
    grad = z_tar.T @ g_t + z_non.T @ g_n
    hess = (z_tar.T * h_t) @ z_tar + (z_non.T * h_n) @ z_non
    return float(loss), grad, hess


def newton(z_tar: np.ndarray, z_non: np.ndarray, p: float, max_iter: int = 100) -> np.ndarray:
    """Minimise the convex prior-weighted cross-entropy of ``z @ w`` by Newton steps with
    backtracking, from equal weights ``1/d`` on the ``d`` inputs and offset 0 (``z``: ``d`` columns
    of standardised scores and a last column of ones; the calibration is ``d = 1``, the fusion of
    :mod:`spoofdet.evaluation.fusion` any ``d``)."""
    d = z_tar.shape[1] - 1
    w = np.concatenate([np.full(d, 1.0 / d), [0.0]])
    loss, grad, hess = _objective(w, z_tar, z_non, p)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(hess + 1e-12 * np.eye(d + 1), grad)
        except np.linalg.LinAlgError:
            step = grad
        t = 1.0
        while t > 1e-10:
            new_loss, new_grad, new_hess = _objective(w - t * step, z_tar, z_non, p)
            if new_loss <= loss:
                break
            t *= 0.5
        else:
            break
        w = w - t * step
        done = loss - new_loss < 1e-15 or np.max(np.abs(t * step)) < 1e-12
        loss, grad, hess = new_loss, new_grad, new_hess
        if done:
            break
    return w


def fit_linear_llr(tar: np.ndarray, non: np.ndarray, p_bonafide: float) -> tuple[np.ndarray, float]:
    """``(weights, offset)`` with ``LLR = scores @ weights + offset`` fitted at ``p_bonafide`` on
    the ``(trials, inputs)`` score matrices of the two classes: each input standardised (mean and
    standard deviation over both classes, which must not be 0), :func:`newton`, the map expressed
    in raw scores and the prior's log-odds taken off. One input is the calibration, several the
    fusion of :mod:`spoofdet.evaluation.fusion`; the caller checks the result is finite."""
    both = np.concatenate([tar, non])
    mu, sigma = both.mean(axis=0), both.std(axis=0)
    ones_t, ones_n = np.ones((len(tar), 1)), np.ones((len(non), 1))
    w = newton(
        np.hstack([(tar - mu) / sigma, ones_t]), np.hstack([(non - mu) / sigma, ones_n]), p_bonafide
    )
    d = tar.shape[1]
    weights = w[:d] / sigma
    return weights, float(w[d] - np.sum(w[:d] * mu / sigma) - _logit(p_bonafide))


def fit_calibration(
    bonafide_scores: Any,
    spoof_scores: Any,
    *,
    p_bonafide: float = DEFAULT_P_BONAFIDE,
    allow_negative_slope: bool = False,
) -> Calibration:
    """Fit a prior-weighted logistic-regression calibration on development scores.

    Args:
        bonafide_scores, spoof_scores: raw scores of the two classes (higher = more bona fide).
        p_bonafide: the target prior of bona fide the cross-entropy is weighted at.
        allow_negative_slope: keep (with a warning) a fit whose slope is negative instead of
            raising. A negative slope means the raw scores are inverted.

    Raises:
        CalibrationError: empty or non-finite scores, a prior outside (0, 1), a failed
            optimisation, or a negative slope (unless allowed).
    """
    if not 0.0 < p_bonafide < 1.0:
        raise CalibrationError(f"p_bonafide must lie in (0, 1), got {p_bonafide!r}")
    tar = np.asarray(bonafide_scores, dtype=np.float64).ravel()
    non = np.asarray(spoof_scores, dtype=np.float64).ravel()
    for name, x in (("bona fide", tar), ("spoof", non)):
        if x.size == 0:
            raise CalibrationError(f"no {name} scores to fit the calibration on")
        if not np.all(np.isfinite(x)):
            raise CalibrationError(
                f"{int(np.sum(~np.isfinite(x)))} {name} score(s) are NaN or infinite"
            )
    if float(np.concatenate([tar, non]).std()) == 0.0:
        raise CalibrationError("every score is identical; there is nothing to calibrate")
    if tar.min() > non.max():
        warnings.warn(
            "the development scores separate the classes perfectly: the fitted slope is limited only "
            "by the optimiser and the LLRs will be over-confident; use a harder or larger dev set",
            stacklevel=2,
        )
    weights, offset = fit_linear_llr(tar[:, None], non[:, None], p_bonafide)
    if not (math.isfinite(weights[0]) and math.isfinite(offset)):
        raise CalibrationError("calibration fit diverged (non-finite slope or offset)")
    slope = float(weights[0])
    if slope < 0:
        msg = (
            f"the fitted calibration slope is negative ({slope:.4g}): higher raw scores are more "
            "spoof-like, the opposite of spoofdet's convention (higher = more bona fide). "
            + diagnose(tar, non)
        )
        if not allow_negative_slope:
            raise CalibrationError(msg + " (Or pass allow_negative_slope=True to keep this fit.)")
        warnings.warn(msg, stacklevel=2)
    return Calibration(slope, offset, float(p_bonafide), int(tar.size), int(non.size))


def assess(bonafide_scores: Any, spoof_scores: Any) -> dict[str, Any]:
    """What the dev scores say about the model, measured: ``eer`` and ``eer_negated`` (percent;
    None without both classes), ``n_bonafide``, ``n_spoof`` and ``verdict``:

    * ``too_few``: fewer than :data:`MIN_TRIALS_PER_CLASS` trials in a class;
    * ``chance``: the EER and the EER of the negated scores both at least :data:`CHANCE_EER`;
    * ``inverted``: the negated scores' EER below :data:`CHANCE_EER` and below the EER;
    * ``separates``: otherwise (the scores rank bona fide above spoof).

    Non-finite scores are not judged: they raise :class:`CalibrationError` (count named).
    """
    tar = np.asarray(bonafide_scores, dtype=np.float64).ravel()
    non = np.asarray(spoof_scores, dtype=np.float64).ravel()
    for name, x in (("bona fide", tar), ("spoof", non)):
        if not np.all(np.isfinite(x)):
            raise CalibrationError(
                f"{int(np.sum(~np.isfinite(x)))} {name} score(s) are NaN or infinite"
            )
    found: dict[str, Any] = {"n_bonafide": int(tar.size), "n_spoof": int(non.size)}
    if tar.size and non.size:
        found["eer"] = 100.0 * compute_eer(tar, non)[0]
        found["eer_negated"] = 100.0 * compute_eer(-tar, -non)[0]
    else:
        found["eer"] = found["eer_negated"] = None
    if min(tar.size, non.size) < MIN_TRIALS_PER_CLASS:
        found["verdict"] = "too_few"
    elif found["eer"] >= CHANCE_EER and found["eer_negated"] >= CHANCE_EER:
        found["verdict"] = "chance"
    elif found["eer_negated"] < CHANCE_EER and found["eer_negated"] < found["eer"]:
        found["verdict"] = "inverted"
    else:
        found["verdict"] = "separates"
    return found


def diagnose(bonafide_scores: Any, spoof_scores: Any) -> str:
    """One paragraph for a failed calibration: the measured dev EER, the EER of the negated
    scores, the class counts and what they mean (see :func:`assess` for the cases)."""
    a = assess(bonafide_scores, spoof_scores)
    counts = f"{a['n_bonafide']} bona fide and {a['n_spoof']} spoof dev trials"
    if a["eer"] is None:
        measured = f"Measured: {counts}, so no EER"
    else:
        measured = (
            f"Measured: dev EER {a['eer']:.2f} %, EER of the negated scores "
            f"{a['eer_negated']:.2f} %, over {counts}"
        )
    meaning = {
        "too_few": f"too few trials to fit or judge a calibration (fewer than "
        f"{MIN_TRIALS_PER_CLASS} of a class): use a larger labelled dev set",
        "chance": "the model is at chance: it has not learned to separate bona fide from spoof; "
        "calibrating would map every clip to the prior; train longer / check labels "
        "(1 = bona fide, 0 = spoof)",
        "inverted": "scores are inverted: the model's bona fide output index or the score "
        "polarity is wrong; fix that instead of calibrating it away",
        "separates": "the scores do rank bona fide above spoof, so the model is neither at "
        "chance nor inverted; look at the score distributions (outliers, a few extreme clips)",
    }[a["verdict"]]
    return f"{measured}: {meaning}."


def check_calibratable(bonafide_scores: Any, spoof_scores: Any) -> dict[str, Any]:
    """:func:`assess` the dev scores and refuse those a calibration must not be fitted on.

    Returns:
        The :func:`assess` dict of scores that separate the classes.

    Raises:
        CalibrationError: too few trials, a model at chance or inverted scores; the message is
            :func:`diagnose`'s.
    """
    found = assess(bonafide_scores, spoof_scores)
    if found["verdict"] != "separates":
        raise CalibrationError("refusing to calibrate: " + diagnose(bonafide_scores, spoof_scores))
    return found


def apply(calibration: Calibration, scores: Any) -> np.ndarray:
    """Raw scores -> LLRs with a fitted :class:`Calibration`."""
    return calibration.apply(scores)
