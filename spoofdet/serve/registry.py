"""Which model to score with: resolve a reference, load the detector, read its metadata, tag versions.

A model reference (``--model``) is one of:

* ``models:/NAME@ALIAS`` (e.g. ``@champion``): resolved **once**, at the start, to the version the
  alias points at, so a job keeps scoring with that version even if the alias moves meanwhile;
* ``models:/NAME/VERSION``, ``models:/m-<id>`` (an MLflow 3 logged model), ``runs:/<run_id>/model``;
* a local folder: a training run's ``final/`` folder (``model.pt`` + ``model_config.json`` [+
  ``calibration.json``]) or a downloaded MLflow model folder (holding ``MLmodel``).

Registry references need a tracking store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else
the train job's default ``sqlite:///<$SPOOFDET_STORAGE or runs/train>/mlflow.db`` (which must exist).

Imports MLflow and torch lazily, never Ray (``spoofdet predict`` uses this module).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spoofdet.errors import SpoofdetError
from spoofdet.evaluation.metrics import ASVSPOOF5_COSTS

#: The alias ``spoofdet promote`` moves (MLflow aliases; stages are deprecated since MLflow 2.9).
CHAMPION = "champion"
#: LLR decision threshold: the Bayes threshold ``-ln(beta)`` of the ASVspoof 5 costs (about -0.642).
DECISION_THRESHOLD = ASVSPOOF5_COSTS.llr_threshold
_ALIAS = re.compile(r"^models:/([^/@]+)@([^/]+)$")
_VERSION = re.compile(r"^models:/([^/@]+)/(\d+)$")


class ModelRefError(SpoofdetError):
    """A model reference cannot be resolved; the message names it and says what to do."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference (see the module docstring).

    Attributes:
        ref: what the user gave.
        uri: what is loaded: ``models:/NAME/VERSION`` for registry references, else ``ref``.
        kind: ``registry``, ``mlflow`` (other MLflow URIs and MLflow model folders) or ``final-dir``.
        tracking_uri: the tracking store (None for local folders).
        name, version, alias: the registered model, its version and the alias it was reached by.
        run_id, model_id: the MLflow run that logged the model and the logged model's id.
    """

    ref: str
    uri: str
    kind: str
    tracking_uri: str | None = None
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    model_id: str | None = None

    @property
    def label(self) -> str:
        """Short human name: ``NAME v3`` or the folder/URI."""
        if self.name and self.version:
            return f"{self.name} v{self.version}"
        return self.ref

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class LoadedDetector:
    """A detector ready to score: the torch module, its calibration (or None) and the model metadata."""

    model: Any
    calibration: Any
    metadata: dict[str, Any]
    ref: ModelRef
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What a report says about the model: reference, calibration, threshold, metadata."""
        cal = self.calibration.to_dict() if self.calibration is not None else None
        return {
            **self.ref.to_dict(),
            "calibrated": cal is not None,
            "calibration": cal,
            "score": "calibrated LLR (bona fide vs spoof), higher = more bona fide"
            if cal
            else "raw detector score, higher = more bona fide (no calibration stored: no LLR, no decision)",
            "decision_threshold_llr": DECISION_THRESHOLD if cal else None,
            "metadata": self.metadata,
        }


def default_tracking_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the train job's local SQLite store."""
    from spoofdet.tracking import tracking_uri as resolve

    storage = os.environ.get("SPOOFDET_STORAGE") or "runs/train"
    return resolve(tracking_uri, storage)


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_file():
            raise ModelRefError(
                f"tracking store {uri} does not exist; pass --tracking-uri (or set "
                "MLFLOW_TRACKING_URI) to the store the model was registered in, e.g. "
                "sqlite:///runs/demo/train/mlflow.db after `make demo`"
            )
    return MlflowClient(tracking_uri=uri)


def resolve_model(ref: str, tracking_uri: str | None = None) -> ModelRef:
    """Resolve ``ref`` (see the module docstring) without loading weights.

    Raises:
        ModelRefError: a folder that is not a model, an unknown registered model, version or alias.
    """
    ref = str(ref)
    if not ref.startswith(("models:/", "runs:/")) and "://" not in ref:
        return _resolve_folder(ref, tracking_uri)
    from mlflow.exceptions import MlflowException

    uri = default_tracking_uri(tracking_uri)
    client = _client(uri)
    alias_match, version_match = _ALIAS.match(ref), _VERSION.match(ref)
    try:
        if alias_match or version_match:
            return _resolve_version(client, ref, uri, alias_match, version_match)
        import mlflow

        from spoofdet.tracking import using_tracking_uri

        with using_tracking_uri(uri):  # restores MLFLOW_TRACKING_URI: nothing leaks into later jobs
            info = mlflow.models.get_model_info(ref)
        return ModelRef(
            ref, ref, "mlflow", uri, run_id=info.run_id, model_id=getattr(info, "model_id", None)
        )
    except MlflowException as exc:
        versions = (
            _known_versions(client, (alias_match or version_match).group(1))
            if (alias_match or version_match)
            else ""
        )
        raise ModelRefError(
            f"--model {ref}: {exc.message} (tracking store {uri}).{versions}"
        ) from None


def _resolve_folder(ref: str, tracking_uri: str | None) -> ModelRef:
    """A local MLflow model folder, or a ``final/`` folder (with the run that trained it)."""
    folder = Path(ref).expanduser()
    if (folder / "MLmodel").is_file():
        return ModelRef(ref, str(folder.resolve()), "mlflow")
    if (folder / "model.pt").is_file() and (folder / "model_config.json").is_file():
        # written by the train job: names the run that trained it
        summary = folder / "summary.json"
        info = json.loads(summary.read_text()) if summary.is_file() else {}
        return ModelRef(
            ref,
            str(folder.resolve()),
            "final-dir",
            tracking_uri or info.get("tracking_uri"),
            run_id=info.get("mlflow_run_id"),
        )
    raise ModelRefError(
        f"--model {ref}: not a model reference. Give models:/NAME@champion, models:/NAME/VERSION, "
        "runs:/RUN_ID/model, or a folder with model.pt + model_config.json (a train run's final/) "
        "or an MLflow model folder (with an MLmodel file)"
    )


def _resolve_version(
    client: Any, ref: str, uri: str, alias_match: Any, version_match: Any
) -> ModelRef:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> the registered version, once."""
    name = (alias_match or version_match).group(1)
    if alias_match:
        mv = client.get_model_version_by_alias(name, alias_match.group(2))
    else:
        mv = client.get_model_version(name, version_match.group(2))
    model_id = mv.source.split("/", 1)[1] if str(mv.source).startswith("models:/m-") else None
    return ModelRef(
        ref,
        f"models:/{name}/{mv.version}",
        "registry",
        uri,
        name,
        str(mv.version),
        alias_match.group(2) if alias_match else None,
        mv.run_id,
        model_id,
    )


def _known_versions(client: Any, name: str) -> str:
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001 - only decorates an error message
        return ""
    if not found:
        return f" No registered model {name!r} there; train with mlflow.register_as={name} first."
    listed = ", ".join(
        f"v{m.version}" + (f" (@{', @'.join(m.aliases)})" if m.aliases else "") for m in found
    )
    return f" Registered versions of {name}: {listed}."


def load_detector(
    ref: ModelRef | str, *, device: str = "cpu", tracking_uri: str | None = None
) -> LoadedDetector:
    """Load the detector of ``ref`` onto ``device`` in eval mode.

    Registered and logged models are loaded through ``mlflow.pyfunc.load_model`` (the same code
    path as serving) and unwrapped to the torch module, so batches of any length can be scored on
    any device; a ``final/`` folder is rebuilt from its ``model_config.json``.

    Raises:
        ModelRefError: an unresolvable reference, or an MLflow model that is not a spoofdet detector.
    """
    import torch

    from spoofdet.evaluation.calibration import Calibration

    if isinstance(ref, str):
        ref = resolve_model(ref, tracking_uri)
    if ref.kind == "final-dir":
        from spoofdet.models import build_model
        from spoofdet.models.checkpoints import load_state_dict_strict

        folder = Path(ref.uri)
        model = build_model(**json.loads((folder / "model_config.json").read_text())).eval()
        load_state_dict_strict(model, torch.load(folder / "model.pt", map_location="cpu"))
        cal_path = folder / "calibration.json"
        calibration = Calibration.load(cal_path) if cal_path.is_file() else None
        summary = folder / "summary.json"
        metadata = {"sample_rate": 16000, "source": str(folder)}
        if summary.is_file():
            metadata["train_summary"] = json.loads(summary.read_text())
    else:
        import mlflow

        from spoofdet.serve.model import DetectorModel
        from spoofdet.tracking import using_tracking_uri

        with (
            using_tracking_uri(ref.tracking_uri or mlflow.get_tracking_uri()),
            warnings.catch_warnings(),
        ):
            # MLflow's advice to add type hints concerns logging, not loading
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
            pyfunc = mlflow.pyfunc.load_model(ref.uri)
        inner = pyfunc.unwrap_python_model()
        if not isinstance(inner, DetectorModel):
            raise ModelRefError(
                f"--model {ref.ref}: an MLflow model of type {type(inner).__name__}, not a spoofdet "
                "detector (spoofdet.tracking.DetectorModel); log detectors with spoofdet train"
            )
        model, calibration = inner.model, inner.calibration
        metadata = dict(pyfunc.metadata.metadata or {})
    return LoadedDetector(model.to(device).eval(), calibration, metadata, ref, device)


def read_calibration(ref: ModelRef) -> Any:
    """The model's calibration (or None) without loading its weights where the metadata holds it.

    Models logged by this version of :func:`spoofdet.tracking.log_detector` carry ``calibrated``
    and ``calibration`` in their metadata; older ones are loaded to find out.
    """
    from spoofdet.evaluation.calibration import Calibration

    if ref.kind == "final-dir":
        path = Path(ref.uri) / "calibration.json"
        return Calibration.load(path) if path.is_file() else None
    import mlflow

    from spoofdet.tracking import using_tracking_uri

    with using_tracking_uri(ref.tracking_uri or mlflow.get_tracking_uri()):
        meta = mlflow.models.get_model_info(ref.uri).metadata or {}
    if "calibrated" in meta:
        return (
            Calibration.from_dict(meta["calibration"], where=f"{ref.ref} metadata")
            if meta["calibrated"]
            else None
        )
    return load_detector(ref).calibration


def version_tags(name: str, version: str, tracking_uri: str) -> dict[str, str]:
    """The tags of a registered model version."""
    return dict(_client(tracking_uri).get_model_version(name, version).tags)


def set_version_tags(name: str, version: str, tags: dict[str, Any], tracking_uri: str) -> None:
    """Set string tags on a registered model version (values truncated to MLflow's 5,000 characters)."""
    client = _client(tracking_uri)
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v)[:5000])
