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

import contextlib
import json
import os
from collections.abc import Iterator
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


def experiment_for(client: Any, name: str, uri: str) -> str:
    """Id of experiment ``name`` (created if missing; with a SQLite store, artifacts go beside the database)."""
    storage = str(Path(uri[len("sqlite:///"):]).parent) if uri.startswith("sqlite:///") else "."
    return _experiment_id(client, name, storage, uri)


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


def log_evaluation(ref: Any, results: list[dict[str, Any]], out: str | os.PathLike, *, length: str,
                   experiment: str | None = None) -> dict[str, str]:
    """Log one evaluation job (``ray_jobs/evaluate.py``) to MLflow.

    A new run "eval <model> <length>" (tags ``spoofdet.kind=evaluation``, ``spoofdet.model``,
    ``spoofdet.protocol``) in ``experiment``, else in the experiment of the run that trained the
    model (nested under it), else in ``spoofdet-eval``. Metrics ``<set>.<length>.<metric>``, linked
    to the logged model when its id is known; every file under ``out`` as artifacts under
    ``eval/<length>``. A registered version also gets one tag per set, ``eval.<set>.<length>``: a
    JSON object with the metrics, the rows evaluated (``selection``), ``score_type``, the window
    and hop, the set's ``fingerprint`` (``spoofdet.eval_sets.fingerprint``) and the evaluation run
    id; ``spoofdet promote`` reuses it instead of scoring the same version on the same set again.

    Args:
        ref: the resolved model (:class:`spoofdet.registry.ModelRef`) with a ``tracking_uri``.
        results: per-set results of the evaluate job (``eval_set``, ``selection``, ``metrics``, ``protocol``).
        out: the folder of the job's files for this protocol.
        length: the protocol (``4s`` or ``full``).
        experiment: experiment name to log into instead of the model's.

    Returns:
        ``tracking_uri``, ``experiment_id``, ``run_id`` of the evaluation run.
    """
    import time

    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ref.tracking_uri)
    parent = None
    if ref.run_id:
        try:
            parent = client.get_run(ref.run_id)
        except Exception:  # noqa: BLE001 - the training run lives in another store: no nesting then
            parent = None
    if experiment or parent is None:
        exp_id = experiment_for(client, experiment or "spoofdet-eval", ref.tracking_uri)
    else:
        exp_id = parent.info.experiment_id
    tags = {"spoofdet.kind": "evaluation", "spoofdet.model": ref.label, "spoofdet.model_uri": ref.uri,
            "spoofdet.protocol": length}
    if parent is not None and parent.info.experiment_id == exp_id:
        tags["mlflow.parentRunId"] = ref.run_id
    run_id = client.create_run(exp_id, run_name=f"eval {ref.label} {length}", tags=tags).info.run_id
    now = int(time.time() * 1000)
    keys = ("eer", "min_dcf", "act_dcf", "cllr", "n_bonafide", "n_spoof")
    metrics = [Metric(f"{r['eval_set']}.{length}.{k}", float(r["metrics"][k]), now, 0, model_id=ref.model_id)
               for r in results if r["metrics"] for k in keys if r["metrics"].get(k) is not None]
    protocol = results[0]["protocol"] if results else {}
    params = [Param("model", ref.uri), Param("length", length), Param("window", str(protocol.get("window"))),
              Param("hop", str(protocol.get("hop"))), Param("eval_sets", ",".join(r["eval_set"] for r in results)[:6000])]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.log_artifacts(run_id, str(out), f"eval/{length}")
    client.set_terminated(run_id)
    if ref.kind == "registry":
        for r in results:
            if r["metrics"]:
                record = {k: r["metrics"].get(k) for k in keys} | {
                    "selection": r["selection"], "score_type": r["score_type"], "window": r["protocol"]["window"],
                    "hop": r["protocol"]["hop"], "fingerprint": r.get("fingerprint"), "run_id": run_id}
                client.set_model_version_tag(ref.name, ref.version, f"eval.{r['eval_set']}.{length}", json.dumps(record))
    return {"tracking_uri": ref.tracking_uri, "experiment_id": exp_id, "run_id": run_id}


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


def frontend_for_rebuild(frontend: Any) -> Any:
    """The front-end name a registered model is rebuilt with: same shape, random init, no download
    (a config dict, as ``spoofdet import`` writes, is already that)."""
    if not isinstance(frontend, str):
        return frontend
    return {"xlsr_300m": "xlsr_300m_random"}.get(frontend, frontend)


def log_detector(*, run_id: str, uri: str, weights: str, model_config: dict[str, Any], input_example: Any,
                 register_as: str | None, calibration: str | None = None,
                 metadata: dict[str, Any] | None = None) -> Any:
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

    from spoofdet.metrics import ASVSPOOF5_COSTS

    work = Path(weights).parent
    cfg_path = work / "model_config.json"
    cfg_path.write_text(json.dumps(model_config, indent=2))
    artifacts = {"weights": weights, "model_config": str(cfg_path)}
    cal = None
    if calibration:
        artifacts["calibration"] = calibration
        cal = json.loads(Path(calibration).read_text())
    costs = ASVSPOOF5_COSTS
    run_metrics = MlflowClient(tracking_uri=uri).get_run(run_id).data.metrics
    meta = {
        "sample_rate": 16000,
        "input": "float32[batch, samples]: mono waveforms at 16 kHz, any length (scored as given; spoofdet "
                 "score/predict cut the first 64,600 samples or average windows)",
        "score": ("calibrated log-likelihood ratio log p(x|bona fide)/p(x|spoof), higher = more bona fide" if cal else
                  "raw detector score (bona fide minus spoof logit), higher = more bona fide; not calibrated"),
        "label_convention": "1 = bona fide, 0 = spoof",
        "calibrated": cal is not None,
        "calibration": cal,
        "decision": ({"threshold_llr": costs.llr_threshold, "rule": "bona fide if LLR >= threshold_llr",
                      "costs": {"p_spoof": costs.p_spoof, "c_miss": costs.c_miss, "c_fa": costs.c_fa}}
                     if cal else None),
        "dev_metrics": {k: v for k, v in sorted(run_metrics.items()) if k.startswith("final_dev")},
        **(metadata or {}),
    }
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]))
    package = str(Path(__file__).resolve().parent)
    with using_tracking_uri(uri), mlflow.start_run(run_id=run_id):
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("pyfunc_entry.py")), artifacts=artifacts,
            input_example=input_example, signature=signature, code_paths=[package], registered_model_name=register_as,
            pip_requirements=_requirements(), metadata=meta)


def _requirements() -> list[str]:
    from importlib.metadata import version

    pins = []
    for dist in ("torch", "transformers", "numpy", "scipy", "soundfile", "pyarrow"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except Exception:  # pragma: no cover - all are dependencies
            pins.append(dist)
    return pins


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore what was there.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into ``os.environ`` (so child
    processes inherit it); without the restore, a second run in the same process, or any job
    started from it, would silently log into the first run's store.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
