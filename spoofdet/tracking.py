"""MLflow plumbing: where runs go, one MLflow run per training run (also across restarts), the model.

- :func:`tracking_uri`: the config's URI, else ``MLFLOW_TRACKING_URI``, else a SQLite file in the
  run storage (``<storage>/mlflow.db``, artifacts under ``<storage>/mlartifacts``) so a laptop
  demo needs no server.
- :func:`attach_run`: the MLflow run of a Ray run ``(storage, name)``. Its id is written to
  ``<storage>/<name>/mlflow_run_id`` the first time and read back on every later submission with
  the same name, and training checkpoints carry it too, so a resumed or restarted run logs into
  the same MLflow run instead of creating a second one.
- :class:`DetectorModel`: the registered model, an MLflow pyfunc that takes raw 16 kHz waveforms
  (``float32[B, T]``) and returns scores (higher = more bona fide; calibrated LLRs when the run
  stored a calibration). Weights, the model config and the calibration are artifacts; the
  spoofdet source travels with the model (``code_paths``), so ``mlflow models serve`` works.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc

RUN_ID_FILE = "mlflow_run_id"


def tracking_uri(configured: str | None, storage: str) -> str:
    """The tracking URI to use (see the module docstring)."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def _experiment_id(client: Any, name: str, storage: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:"):  # keep artifacts beside the database, not in ./mlruns of whatever cwd
        location = (Path(storage).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def attach_run(*, uri: str, experiment: str, storage: str, name: str, tags: dict[str, str] | None = None) -> str:
    """The MLflow run id for Ray run ``(storage, name)``: created once, reused on every resubmission."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    marker = Path(storage) / name / RUN_ID_FILE
    if marker.is_file():
        run_id = marker.read_text().strip()
        try:
            client.get_run(run_id)
            return run_id
        except Exception as exc:  # the tracking store was reset or moved
            raise RuntimeError(f"{marker} names MLflow run {run_id}, which {uri} does not know ({exc}). "
                               f"Point mlflow.tracking_uri/MLFLOW_TRACKING_URI at the original store, or "
                               f"start a new run with another name.") from None
    run = client.create_run(_experiment_id(client, experiment, storage, uri), run_name=name, tags=tags or {})
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(run.info.run_id)
    tmp.replace(marker)
    return run.info.run_id


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Log flat params; on a resumed run, keep the first value and record changes as tags.

    MLflow params are immutable, so a resubmission with e.g. ``train.epochs=3`` after 2 leaves
    the param at ``2`` and sets the tag ``changed.train.epochs = "2 -> 3"``. Returns the changes.
    """
    from mlflow.entities import Param, RunTag

    existing = client.get_run(run_id).data.params
    values = {k: str(v)[:6000] for k, v in params.items()}
    todo = [Param(k, v) for k, v in values.items() if k not in existing]
    changed = {k: (existing[k], v) for k, v in values.items() if k in existing and existing[k] != v}
    tags = [RunTag(f"changed.{k}", f"{old} -> {new}"[:5000]) for k, (old, new) in changed.items()]
    for i in range(0, max(len(todo), len(tags)), 100):
        client.log_batch(run_id, params=todo[i:i + 100], tags=tags[i:i + 100])
    return changed


# ----------------------------------------------------------------------------- the registered model

class DetectorModel(mlflow.pyfunc.PythonModel):
    """pyfunc body: ``predict(float32[B, T] waveforms at 16 kHz) -> float32[B]`` scores.

    ``load_context`` rebuilds the detector from ``model_config.json`` (the recipe's ``model``
    section with a random-init front-end of the same shape, so no hub download is needed) and
    loads ``model.pt`` strictly; ``calibration.json``, when present, maps raw scores to LLRs.
    """

    def load_context(self, context: Any) -> None:
        import torch

        from spoofdet.models import build_model
        from spoofdet.models.checkpoints import load_state_dict_strict

        cfg = json.loads(Path(context.artifacts["model_config"]).read_text())
        self.model = build_model(**cfg).eval()
        load_state_dict_strict(self.model, torch.load(context.artifacts["weights"], map_location="cpu"))
        self.calibration = None
        path = context.artifacts.get("calibration")
        if path and Path(path).is_file():
            from spoofdet.calibration import Calibration

            self.calibration = Calibration.from_dict(json.loads(Path(path).read_text()))

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


def frontend_for_rebuild(frontend: str) -> str:
    """The front-end name a registered model is rebuilt with: same shape, random init, no download."""
    return {"xlsr_300m": "xlsr_300m_random"}.get(frontend, frontend)


def log_detector(*, run_id: str, uri: str, weights: str, model_config: dict[str, Any], input_example: Any,
                 register_as: str | None, calibration: str | None = None,
                 metadata: dict[str, Any] | None = None) -> Any:
    """Log the detector as a pyfunc model in ``run_id`` (and register it when ``register_as``)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    work = Path(weights).parent
    cfg_path = work / "model_config.json"
    cfg_path.write_text(json.dumps(model_config, indent=2))
    artifacts = {"weights": weights, "model_config": str(cfg_path)}
    if calibration:
        artifacts["calibration"] = calibration
    package = str(Path(__file__).resolve().parent)
    with mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts=artifacts, input_example=input_example,
            code_paths=[package], registered_model_name=register_as,
            pip_requirements=_requirements(), metadata={"sample_rate": 16000,
                                                        "score": "higher = more bona fide" + (
                                                            "; calibrated LLR" if calibration else ""),
                                                        **(metadata or {})})


def _requirements() -> list[str]:
    from importlib.metadata import version

    pins = []
    for dist in ("torch", "transformers", "numpy", "scipy", "soundfile", "pyarrow"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except Exception:  # pragma: no cover - all are dependencies
            pins.append(dist)
    return pins
