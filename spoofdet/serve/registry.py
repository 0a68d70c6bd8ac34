"""Which model to score with: resolve a reference, load the detector, read its metadata, tag versions.

A model reference (``--model``) is one of:

* ``models:/NAME@ALIAS`` (e.g. ``@champion``): resolved **once**, at the start, to the version the
  alias points at, so a job keeps scoring with that version even if the alias moves meanwhile;
* ``models:/NAME/VERSION``, ``models:/m-<id>`` (an MLflow 3 logged model), ``runs:/<run_id>/model``;
* a local folder: a training run's ``final/`` folder (``model.pt`` + ``model_config.json`` [+
  ``calibration.json``]) or a downloaded MLflow model folder (holding ``MLmodel``).

Registry references need a tracking store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else
the train job's default ``sqlite:///<$SPOOFDET_STORAGE or runs/train>/mlflow.db`` (which must exist).
A remote store is contacted with bounded timeouts (:func:`spoofdet.tracking.reach`).

Loading never runs code from the model's files. An MLflow model is recognised as a spoofdet model
from its ``MLmodel`` file alone (read with ``yaml.safe_load``: a ``python_function`` flavour
whose artifacts include ``model_config`` and ``weights``, inside the folder, and the metadata
``sample_rate`` = 16000 and ``score`` that :func:`spoofdet.serve.model.log_detector` writes);
then the installed spoofdet rebuilds the detector itself: ``build_model(**model_config.json)``,
the weights read with ``torch.load(weights_only=True)`` (or safetensors) and loaded strictly, and
``calibration.json`` read as JSON. ``mlflow.pyfunc.load_model`` is never called: it would import
the model's code file and its bundled ``code/`` folder. Non-local models are first copied with
``mlflow.artifacts.download_artifacts`` (which only copies files). Anything else is refused with
a message saying what it is and what is accepted (:data:`ACCEPTED`).

Imports MLflow and torch lazily, never Ray (``spoofdet predict`` uses this module).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
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
#: The sample rate every spoofdet model scores (its metadata says so).
SAMPLE_RATE = 16000
#: Metadata keys that every spoofdet MLflow model carries (log_detector has written them since
#: the first release; later ones add ``calibrated``, ``calibration``, ``label_convention``, ...).
MODEL_METADATA_KEYS = ("sample_rate", "score")
#: The artifacts of a spoofdet model's ``python_function`` flavour that loading needs.
MODEL_ARTIFACTS = ("model_config", "weights")
#: Weight files of a ``final/`` or imported folder, in the order looked for.
WEIGHT_FILES = ("model.pt", "model.safetensors")
#: What ``--model`` accepts, for error messages.
ACCEPTED = (
    "spoofdet accepts models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID or runs:/RUN_ID/model "
    "of a model logged by spoofdet train or spoofdet import --register-as; a train run's final/ "
    "folder or a spoofdet import folder (model.pt + model_config.json); or a downloaded folder of "
    "such an MLflow model (an MLmodel file whose python_function flavour lists the artifacts "
    "model_config and weights, with the metadata sample_rate and score)"
)


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
    """An MlflowClient for ``uri``: a SQLite store must exist; a server must answer
    (:func:`spoofdet.tracking.reach`, bounded waits)."""
    from mlflow.tracking import MlflowClient

    from spoofdet.tracking import reach

    reach(uri)
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
            resolved = _resolve_version(client, ref, uri, alias_match, version_match)
        else:
            resolved = ModelRef(ref, ref, "mlflow", uri)
        info = _model_info(resolved)
        _check_mlmodel(
            {"flavors": info.flavors, "metadata": info.metadata}, resolved.ref, resolved.uri
        )
        if resolved.kind == "registry":
            return resolved
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


def alias_target(name: str, alias: str, tracking_uri: str) -> ModelRef | None:
    """``models:/NAME@ALIAS`` resolved (and checked, as :func:`resolve_model` does), or None
    when the registered model has no such alias (e.g. no champion yet).

    Raises:
        ModelRefError: the store failed otherwise, or the version is not a spoofdet model.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise ModelRefError(
            f"models:/{name}@{alias}: {exc.message} (tracking store {tracking_uri})"
        ) from None
    return resolve_model(f"models:/{name}@{alias}", tracking_uri)


def _resolve_folder(ref: str, tracking_uri: str | None) -> ModelRef:
    """A local MLflow model folder (checked to be a spoofdet model), or a ``final/`` folder (with
    the run that trained it)."""
    folder = Path(ref).expanduser()
    if (folder / "MLmodel").is_file():
        mlmodel = _read_mlmodel(folder / "MLmodel", ref)
        _check_mlmodel(mlmodel, ref, str(folder), folder=folder)
        return ModelRef(ref, str(folder.resolve()), "mlflow")
    if _weights_file(folder) is not None and (folder / "model_config.json").is_file():
        # written by the train job: names the run that trained it
        summary = folder / "summary.json"
        info = _read_json(summary, ref) if summary.is_file() else {}
        info = info if isinstance(info, dict) else {}
        return ModelRef(
            ref,
            str(folder.resolve()),
            "final-dir",
            tracking_uri or info.get("tracking_uri"),
            run_id=info.get("mlflow_run_id"),
        )
    raise ModelRefError(f"--model {ref}: not a model reference: {_what_is(folder)}. {ACCEPTED}")


def _what_is(path: Path) -> str:
    """What ``path`` is, for a refusal: missing, a file, an empty folder, a folder of what."""
    if not path.exists():
        return f"{path} does not exist"
    if path.is_file():
        hint = (
            " (a seed system's checkpoint? convert it with spoofdet import first)"
            if path.suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
            else ""
        )
        return f"{path} is a file{hint}"
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return f"{path} is an empty folder"
    shown = ", ".join(entries[:6]) + (f", ... ({len(entries)} entries)" if len(entries) > 6 else "")
    missing = (
        "model_config.json"
        if _weights_file(path) is not None
        else "model.pt"
        if (path / "model_config.json").is_file()
        else "an MLmodel file or model.pt + model_config.json"
    )
    return f"{path} is a folder without {missing} (it holds {shown})"


def _weights_file(folder: Path) -> Path | None:
    """The weights of a ``final/`` or imported folder (:data:`WEIGHT_FILES`), or None."""
    return next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)


def _read_json(path: Path, ref: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelRefError(f"--model {ref}: {path} is not readable JSON ({exc})") from None


def _read_mlmodel(path: Path, ref: str) -> dict[str, Any]:
    """The ``MLmodel`` file as a dict (``yaml.safe_load``: plain data, no object tags)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelRefError(
            f"--model {ref}: {path} is not a readable MLmodel file ({' '.join(str(exc).split())})"
        ) from None
    if not isinstance(data, dict):
        raise ModelRefError(
            f"--model {ref}: {path} holds {type(data).__name__}, not an MLmodel mapping. {ACCEPTED}"
        )
    return data


def _check_mlmodel(
    mlmodel: Mapping[str, Any], ref: str, where: str, *, folder: Path | None = None
) -> dict[str, Path]:
    """Check that ``mlmodel`` (a parsed MLmodel file) describes a spoofdet model: a
    ``python_function`` flavour with the artifacts :data:`MODEL_ARTIFACTS`, the metadata
    :data:`MODEL_METADATA_KEYS` and a 16 kHz sample rate. With ``folder``, the artifacts must be
    files inside it; returns their paths (``model_config``, ``weights``, maybe ``calibration``).

    Raises:
        ModelRefError: what the model is, what is missing and what spoofdet accepts.
    """
    flavors = mlmodel.get("flavors") if isinstance(mlmodel.get("flavors"), Mapping) else {}
    pyfunc = flavors.get("python_function")
    meta = mlmodel.get("metadata") if isinstance(mlmodel.get("metadata"), Mapping) else {}
    artifacts = pyfunc.get("artifacts") if isinstance(pyfunc, Mapping) else None
    artifacts = artifacts if isinstance(artifacts, Mapping) else {}
    problems = []
    if not isinstance(pyfunc, Mapping):
        problems.append("no python_function flavour")
    missing_art = [a for a in MODEL_ARTIFACTS if a not in artifacts]
    if missing_art:
        problems.append(f"no artifact {' or '.join(missing_art)}")
    missing_meta = [k for k in MODEL_METADATA_KEYS if k not in meta]
    if missing_meta:
        problems.append(f"no metadata {' or '.join(missing_meta)}")
    elif meta.get("sample_rate") != SAMPLE_RATE:
        problems.append(f"metadata sample_rate {meta.get('sample_rate')!r}, not {SAMPLE_RATE}")
    if problems:
        kinds = ", ".join(str(k) for k in flavors) or "none"
        loader = pyfunc.get("loader_module") if isinstance(pyfunc, Mapping) else None
        raise ModelRefError(
            f"--model {ref}: {where} is an MLflow model (flavours: {kinds}"
            + (f"; loader {loader}" if loader else "")
            + f"), not a spoofdet model: {'; '.join(problems)}. {ACCEPTED}"
        )
    if "calibrated" in meta and bool(meta["calibrated"]) != ("calibration" in artifacts):
        raise ModelRefError(
            f"--model {ref}: {where}: its metadata says calibrated={meta['calibrated']!r} but its "
            f"artifacts {'lack' if meta['calibrated'] else 'hold'} a calibration; the model "
            "files were changed after logging: use the model as logged"
        )
    if folder is None:
        return {}
    paths = {}
    for name, entry in artifacts.items():
        if name not in (*MODEL_ARTIFACTS, "calibration"):
            continue
        rel = entry.get("path") if isinstance(entry, Mapping) else None
        if not isinstance(rel, str) or not rel:
            raise ModelRefError(f"--model {ref}: {where}/MLmodel: artifact {name} has no path")
        path = (folder / rel).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ModelRefError(
                f"--model {ref}: {where}/MLmodel: artifact {name} points outside the model "
                f"folder ({rel}); a model folder must hold its own files"
            )
        if not path.is_file():
            raise ModelRefError(
                f"--model {ref}: {where}: artifact {name} ({rel}) is missing; download or copy "
                "the whole model folder again"
            )
        paths[name] = path
    return paths


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
    """Load the detector of ``ref`` onto ``device`` in eval mode, without running code from
    the model's files (see the module docstring).

    A ``final/`` folder is rebuilt from its ``model_config.json``, weights and
    ``calibration.json``; an MLflow model (a local folder, or downloaded first) from the
    artifacts its ``MLmodel`` file lists, after checking that it is a spoofdet model.

    Raises:
        ModelRefError: an unresolvable reference, an MLflow model that is not a spoofdet
            detector, or model files that do not hold what they should (weights that are more
            than tensors, a config that does not build, a mismatching state dict).
    """
    if isinstance(ref, str):
        ref = resolve_model(ref, tracking_uri)
    if ref.kind == "final-dir":
        folder = Path(ref.uri)
        weights = _weights_file(folder)
        if weights is None:
            raise ModelRefError(f"--model {ref.ref}: {_what_is(folder)}. {ACCEPTED}")
        cal_path = folder / "calibration.json"
        model, calibration = build_detector(
            folder / "model_config.json",
            weights,
            cal_path if cal_path.is_file() else None,
            where=f"--model {ref.ref}",
        )
        summary = folder / "summary.json"
        metadata: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "source": str(folder)}
        if summary.is_file():
            metadata["train_summary"] = _read_json(summary, ref.ref)
    elif _is_local(ref.uri):
        model, calibration, metadata = _load_mlflow_folder(Path(ref.uri), ref)
    else:
        with tempfile.TemporaryDirectory(prefix="spoofdet-model-") as tmp:
            model, calibration, metadata = _load_mlflow_folder(_download(ref, tmp), ref)
    return LoadedDetector(model.to(device).eval(), calibration, metadata, ref, device)


def _is_local(uri: str) -> bool:
    return "://" not in uri and not uri.startswith(("models:/", "runs:/"))


def _download(ref: ModelRef, dst: str) -> Path:
    """Copy the model folder of ``ref`` into ``dst`` (files only; nothing is imported)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from spoofdet.tracking import reach, using_tracking_uri

    uri = ref.tracking_uri or mlflow.get_tracking_uri()
    reach(uri)
    try:
        with using_tracking_uri(uri):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=dst))
    except MlflowException as exc:
        raise ModelRefError(
            f"--model {ref.ref}: cannot download {ref.uri} from {uri}: {exc.message}"
        ) from None


def _load_mlflow_folder(folder: Path, ref: ModelRef) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, calibration, metadata)`` of the spoofdet MLflow model in ``folder``."""
    where = f"--model {ref.ref}"
    if not (folder / "MLmodel").is_file():
        raise ModelRefError(f"{where}: {_what_is(folder)}. {ACCEPTED}")
    mlmodel = _read_mlmodel(folder / "MLmodel", ref.ref)
    paths = _check_mlmodel(
        mlmodel, ref.ref, str(folder) if _is_local(ref.uri) else ref.uri, folder=folder
    )
    model, calibration = build_detector(
        paths["model_config"], paths["weights"], paths.get("calibration"), where=where
    )
    return model, calibration, dict(mlmodel.get("metadata") or {})


def build_detector(
    config: str | os.PathLike,
    weights: str | os.PathLike,
    calibration: str | os.PathLike | None,
    *,
    where: str,
) -> tuple[Any, Any]:
    """``(detector in eval mode, Calibration or None)`` rebuilt by the installed spoofdet:
    ``build_model(**config)`` (a hub front-end replaced by its random-init twin of the same shape,
    :func:`frontend_for_rebuild`: the weights fill it), the weights loaded strictly
    (:func:`read_weights`), the calibration read as JSON. ``where`` starts every error message.

    Raises:
        ModelRefError: a config that is not a build_model mapping or does not build, weights
            that are not a matching state dict, an unreadable calibration.
    """
    from spoofdet.evaluation.calibration import Calibration, CalibrationError
    from spoofdet.models import build_model
    from spoofdet.models.checkpoints import load_state_dict_strict

    config = Path(config)
    cfg = _read_json(config, where.removeprefix("--model "))
    if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
        raise ModelRefError(
            f"{where}: {config} holds {type(cfg).__name__}, not the build_model arguments "
            '(a JSON object such as {"frontend": ..., "head": ...})'
        )
    if "frontend" in cfg:
        cfg = {**cfg, "frontend": frontend_for_rebuild(cfg["frontend"])}
    try:
        model = build_model(**cfg).eval()
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelRefError(f"{where}: {config} does not build a detector: {exc}") from None
    state = read_weights(weights, where=where)
    try:
        load_state_dict_strict(model, state)
    except ValueError as exc:
        raise ModelRefError(
            f"{where}: the weights {weights} do not fit the model of {config.name}: {exc}"
        ) from None
    cal = None
    if calibration is not None:
        try:
            cal = Calibration.load(calibration)
        except CalibrationError as exc:
            raise ModelRefError(f"{where}: {exc}") from None
    return model, cal


def read_weights(path: str | os.PathLike, *, where: str) -> dict[str, Any]:
    """A state dict (name -> tensor) from ``path``: ``.safetensors`` with safetensors, anything
    else with ``torch.load(weights_only=True)``, which unpickles tensors and plain containers only
    and refuses any other object (no code from the file runs).

    Raises:
        ModelRefError: the file holds more than tensors, is unreadable, or is not a state dict.
    """
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise ModelRefError(
                    f"{where}: {path} is a .safetensors file; reading it needs the safetensors "
                    "package (pip install -e '.[ssl]')"
                ) from None
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ModelRefError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read weights is reported, not raised raw
        first = " ".join(str(exc).split())[:300]
        refused = "weights only load failed" in str(exc).lower()
        raise ModelRefError(
            f"{where}: {path} "
            + (
                "holds more than tensors (torch.load(weights_only=True) refused it: "
                f"{first}); spoofdet never runs code from a model file: save the state dict "
                "alone, torch.save(model.state_dict(), path)"
                if refused
                else f"is not a readable weights file ({type(exc).__name__}: {first})"
            )
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelRefError(
            f"{where}: {path} is not a state dict (a mapping of parameter names to tensors) but "
            f"{type(state).__name__}; save torch.save(model.state_dict(), path)"
        )
    return dict(state)


def frontend_for_rebuild(frontend: Any) -> Any:
    """The front-end name a model is rebuilt with: same shape, random init, no download (a config
    dict, as ``spoofdet import`` writes, is already that; the weights fill it)."""
    if not isinstance(frontend, str):
        return frontend
    return {"xlsr_300m": "xlsr_300m_random"}.get(frontend, frontend)


def _model_info(ref: ModelRef) -> Any:
    """``mlflow.models.get_model_info`` of a URI (reads the MLmodel file only)."""
    import mlflow

    from spoofdet.tracking import reach, using_tracking_uri

    uri = ref.tracking_uri or mlflow.get_tracking_uri()
    reach(uri)
    with using_tracking_uri(uri):  # restores MLFLOW_TRACKING_URI: nothing leaks into later jobs
        return mlflow.models.get_model_info(ref.uri)


def model_files(ref: ModelRef, dst: str | os.PathLike) -> tuple[dict[str, Path], dict[str, Any]]:
    """The files of a spoofdet MLflow model (a registered version, ``runs:/``, ``models:/m-``
    or a downloaded folder) and its metadata: ``({"model_config", "weights"[, "calibration"]:
    path}, metadata)``. A non-local model is first copied into ``dst`` (files only; nothing is
    imported or built).

    Raises:
        ModelRefError: a train run's ``final/`` folder (it has no MLmodel), or a model that is not
            a spoofdet model.
    """
    if ref.kind == "final-dir":
        raise ModelRefError(
            f"--model {ref.ref} is a model folder, not an MLflow model; register it first "
            "(spoofdet import --register-as, or train with mlflow.register_as)"
        )
    folder = Path(ref.uri) if _is_local(ref.uri) else _download(ref, str(dst))
    mlmodel = _read_mlmodel(folder / "MLmodel", ref.ref)
    where = str(folder) if _is_local(ref.uri) else ref.uri
    paths = _check_mlmodel(mlmodel, ref.ref, where, folder=folder)
    return paths, dict(mlmodel.get("metadata") or {})


def read_calibration(ref: ModelRef) -> Any:
    """The model's calibration (or None) without loading its weights where the metadata holds it.

    Models logged by this version of :func:`spoofdet.tracking.log_detector` carry ``calibrated``
    and ``calibration`` in their metadata; older ones are loaded to find out.
    """
    from spoofdet.evaluation.calibration import Calibration

    if ref.kind == "final-dir":
        path = Path(ref.uri) / "calibration.json"
        return Calibration.load(path) if path.is_file() else None
    if _is_local(ref.uri):
        meta = _read_mlmodel(Path(ref.uri) / "MLmodel", ref.ref).get("metadata") or {}
    else:
        meta = _model_info(ref).metadata or {}
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
