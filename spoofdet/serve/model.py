"""The registered model: an MLflow pyfunc that takes raw 16 kHz waveforms (``float32[B, T]``) and
returns scores (higher = more bona fide; calibrated LLRs when the run stored a calibration).

Weights, the model config and the calibration are artifacts; the spoofdet source travels with the
model (``code_paths``), so ``mlflow models serve`` works without a spoofdet install. That code path
(``mlflow.pyfunc.load_model``, which imports the model's code) is for ``mlflow models serve``
only, a user's explicit choice; spoofdet itself never takes it: ``spoofdet score``/``predict``/
``promote`` rebuild the detector from the artifacts with the installed code
(:func:`spoofdet.serve.registry.load_detector`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from spoofdet.serve.registry import frontend_for_rebuild
from spoofdet.tracking import using_tracking_uri

__all__ = ["DetectorModel", "PACKAGE", "frontend_for_rebuild", "log_detector"]

#: The spoofdet package folder: shipped with every logged model (``code_paths``).
PACKAGE = Path(__file__).resolve().parents[1]


class DetectorModel(mlflow.pyfunc.PythonModel):
    """pyfunc body: ``predict(float32[B, T] waveforms at 16 kHz) -> float32[B]`` scores.

    ``load_context`` rebuilds the detector from ``model_config.json`` (the recipe's ``model``
    section with a random-init front-end of the same shape, so no hub download is needed) and
    loads ``model.pt`` strictly with ``torch.load(weights_only=True)`` (tensors only: no code from
    the file runs); ``calibration.json``, when present, maps raw scores to LLRs. It is the same
    rebuild as spoofdet's own (:func:`spoofdet.serve.registry.build_detector`).
    """

    def load_context(self, context: Any) -> None:
        from spoofdet.serve.registry import build_detector

        path = context.artifacts.get("calibration")
        self.model, self.calibration = build_detector(
            context.artifacts["model_config"],
            context.artifacts["weights"],
            path if path and Path(path).is_file() else None,
            where="MLflow model",
        )

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow reads type hints as a schema
        import numpy as np
        import torch

        wave = np.asarray(model_input, dtype=np.float32)
        if wave.ndim == 1:
            wave = wave[None, :]
        with torch.no_grad():
            scores = self.model.score(torch.from_numpy(wave)).numpy().astype(np.float64)
        if self.calibration is not None:
            scores = self.calibration.apply(scores)
        return scores.astype(np.float32)


def log_detector(
    *,
    run_id: str,
    uri: str,
    weights: str,
    model_config: dict[str, Any],
    input_example: Any,
    register_as: str | None,
    calibration: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Log the detector as a pyfunc model in ``run_id`` (and register it when ``register_as``).

    The model's metadata (``mlflow.models.get_model_info(uri).metadata``, shown in the MLflow UI)
    says what the model is without loading it: ``sample_rate``, ``input``, ``score`` (its
    definition), ``label_convention``, ``calibrated`` and ``calibration`` (slope, offset, prior),
    ``decision`` (LLR threshold and costs, when calibrated), ``dev_metrics`` (the run's
    ``final_dev_*`` metrics at logging time) and whatever the caller adds (``train_sources``,
    ``num_samples``). Evaluations after registration are model-version tags (``eval.*``, written
    by ``spoofdet score``/``promote``), since logged metadata cannot change.

    The signature takes ``float32[batch, samples]`` of any length (not the input example's).
    """
    import mlflow
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types.schema import Schema, TensorSpec

    work = Path(weights).parent
    cfg_path = work / "model_config.json"
    cfg_path.write_text(json.dumps(model_config, indent=2))
    artifacts = {"weights": weights, "model_config": str(cfg_path)}
    cal = None
    if calibration:
        artifacts["calibration"] = calibration
        cal = json.loads(Path(calibration).read_text())
    run_metrics = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    meta = _model_metadata(cal, run_metrics, metadata)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
    )
    package = str(PACKAGE)
    with using_tracking_uri(uri), mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts=artifacts,
            input_example=input_example,
            signature=signature,
            code_paths=[package],
            registered_model_name=register_as,
            pip_requirements=_requirements(),
            metadata=meta,
        )


def _model_metadata(
    cal: dict[str, Any] | None, run_metrics: dict[str, float], metadata: dict[str, Any] | None
) -> dict[str, Any]:
    """The logged model's metadata (see :func:`log_detector`)."""
    from spoofdet.evaluation.metrics import ASVSPOOF5_COSTS

    costs = ASVSPOOF5_COSTS
    return {
        "sample_rate": 16000,
        "input": "float32[batch, samples]: mono waveforms at 16 kHz, any length (scored as given; "
        "spoofdet score/predict cut the first 64,600 samples or average windows)",
        "score": (
            "calibrated log-likelihood ratio log p(x|bona fide)/p(x|spoof), higher = more bona fide"
            if cal
            else "raw detector score (bona fide minus spoof logit), higher = more bona fide; "
            "not calibrated"
        ),
        "label_convention": "1 = bona fide, 0 = spoof",
        "calibrated": cal is not None,
        "calibration": cal,
        "decision": (
            {
                "threshold_llr": costs.llr_threshold,
                "rule": "bona fide if LLR >= threshold_llr",
                "costs": {"p_spoof": costs.p_spoof, "c_miss": costs.c_miss, "c_fa": costs.c_fa},
            }
            if cal
            else None
        ),
        "dev_metrics": {k: v for k, v in sorted(run_metrics.items()) if k.startswith("final_dev")},
        **(metadata or {}),
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    pins = []
    for dist in ("torch", "transformers", "numpy", "scipy", "soundfile", "pyarrow"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except Exception:  # pragma: no cover - all are dependencies
            pins.append(dist)
    return pins
