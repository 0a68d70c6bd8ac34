"""Model files never run code: a spoofdet model is recognised from its MLmodel file and rebuilt by
the installed spoofdet (build_model + torch.load(weights_only=True)), never through
mlflow.pyfunc.load_model, which imports the model's code file and its bundled code/ folder.

Each planted payload creates a marker file when it runs; the marker must never exist. The
integration test at the end shows that the plants are live: MLflow's own loader runs them.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import yaml

from spoofdet.cli import main as cli_main
from spoofdet.serve.registry import ModelRefError, load_detector, resolve_model
from spoofdet.testing import register_detector, tone_or_noise, write_detector_dir

mlflow = pytest.importorskip("mlflow")


class _Payload:
    """Unpickling it calls ``open(marker, "w")``: creates the marker file (stands for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _code_payload(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()  # planted: runs on import\n"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A detector logged and registered by log_detector (SQLite store) and a downloaded copy of
    its MLflow model folder."""
    from spoofdet.tracking import using_tracking_uri

    root = tmp_path_factory.mktemp("safety")
    final = write_detector_dir(root / "final", seed=1, slope=2.0, offset=-0.5)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    version = register_detector(final, tracking_uri=uri, name="safety")
    with using_tracking_uri(uri):
        folder = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/safety/{version}", dst_path=str(root / "download")
            )
        )
    wav = root / "speech.wav"
    sf.write(wav, tone_or_noise("noise", 1.0, 16_000, np.random.default_rng(0)), 16_000)
    reference = load_detector(str(final))
    return {
        "root": root,
        "uri": uri,
        "version": version,
        "final": final,
        "folder": folder,
        "wav": wav,
        "state": {k: v.clone() for k, v in reference.model.state_dict().items()},
    }


def _copy(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst)
    return dst


def _plant_pickle_and_code(folder: Path, marker: Path) -> None:
    """(a) a python_model.pkl that MLmodel names as the model, (b) a code file and a code/
    module that run on import."""
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    flavor.pop("model_code_path", None)
    flavor.update(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl")
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    entry = folder / "pyfunc_entry.py"
    entry.write_text(_code_payload(marker) + entry.read_text())
    for module in ("code/spoofdet/__init__.py", "code/spoofdet/serve/model.py"):
        path = folder / module
        path.write_text(_code_payload(marker) + path.read_text())


def _assert_same_weights(detector, logged):
    state = detector.model.state_dict()
    assert set(state) == set(logged["state"])
    assert all(bool((state[k] == logged["state"][k]).all()) for k in state)


def _modules_from(folder: Path) -> list[str]:
    root = str(folder.resolve())
    return [
        name
        for name, mod in list(sys.modules.items())
        if str(getattr(mod, "__file__", "") or "").startswith(root)
    ]


def test_planted_pickle_and_code_are_never_touched(logged, tmp_path, capsys):
    marker = tmp_path / "pwned"
    folder = _copy(logged["folder"], tmp_path / "model")
    _plant_pickle_and_code(folder, marker)

    detector = load_detector(str(folder))
    _assert_same_weights(detector, logged)
    assert detector.calibration.slope == 2.0 and detector.metadata["sample_rate"] == 16000
    assert cli_main(["predict", str(logged["wav"]), "--model", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_scored"] == 1 and summary["predictions"][0]["llr"] is not None
    assert not marker.exists() and _modules_from(folder) == []


def test_weights_pickling_a_callable_are_refused(logged, tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"
    folder = _copy(logged["folder"], tmp_path / "model")
    torch.save({"w": _Payload(marker)}, folder / "artifacts" / "model.pt")
    with pytest.raises(ModelRefError, match="holds more than tensors") as exc:
        load_detector(str(folder))
    assert "model.pt" in str(exc.value) and "weights_only=True" in str(exc.value)

    assert cli_main(["predict", str(logged["wav"]), "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("spoofdet predict: error: --model") and "Traceback" not in "".join(
        err
    )
    assert "holds more than tensors" in err[-1]

    final = _copy(logged["final"], tmp_path / "final")  # a train run's final/ folder too
    torch.save(_Payload(marker), final / "model.pt")
    with pytest.raises(ModelRefError, match="holds more than tensors"):
        load_detector(str(final))
    assert not marker.exists()


def test_detector_model_load_context_reads_tensors_only(logged, tmp_path):
    """The pyfunc body used by `mlflow models serve` refuses pickled code in its weights too."""
    import torch

    from spoofdet.serve.model import DetectorModel

    marker = tmp_path / "pwned"
    art = logged["folder"] / "artifacts"
    model = DetectorModel()
    model.load_context(
        SimpleNamespace(
            artifacts={
                "model_config": str(art / "model_config.json"),
                "weights": str(art / "model.pt"),
                "calibration": str(art / "calibration.json"),
            }
        )
    )
    assert model.calibration.slope == 2.0
    assert model.predict(None, np.zeros((1, 16_000), np.float32)).shape == (1,)
    torch.save({"w": _Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(ModelRefError, match="holds more than tensors"):
        DetectorModel().load_context(
            SimpleNamespace(
                artifacts={
                    "model_config": str(art / "model_config.json"),
                    "weights": str(tmp_path / "model.pt"),
                }
            )
        )
    assert not marker.exists()


def test_registry_and_run_references_never_run_the_model_code(logged, tmp_path):
    """models:/NAME/VERSION and runs:/ are downloaded (files only) and rebuilt, even when the
    stored model holds planted code."""
    from mlflow.tracking import MlflowClient

    marker = tmp_path / "pwned"
    client = MlflowClient(tracking_uri=logged["uri"])
    mv = client.get_model_version("safety", logged["version"])
    stored = client.get_logged_model(mv.source.split("/", 1)[1]).artifact_location
    stored = Path(stored.removeprefix("file://"))
    _plant_pickle_and_code(stored, marker)
    for ref in (f"models:/safety/{logged['version']}", f"runs:/{mv.run_id}/model"):
        detector = load_detector(ref, tracking_uri=logged["uri"])
        _assert_same_weights(detector, logged)
    assert not marker.exists() and _modules_from(stored) == []


def test_a_yaml_object_tag_in_mlmodel_is_refused(logged, tmp_path):
    marker = tmp_path / "pwned"
    folder = _copy(logged["folder"], tmp_path / "model")
    text = (folder / "MLmodel").read_text()
    (folder / "MLmodel").write_text(
        f"evil: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n" + text
    )
    with pytest.raises(ModelRefError, match="not a readable MLmodel file"):
        resolve_model(str(folder))
    assert not marker.exists()


def test_other_mlflow_models_and_folders_are_refused_saying_what_they_are(logged, tmp_path):
    sklearn = tmp_path / "sklearn"
    sklearn.mkdir()
    (sklearn / "MLmodel").write_text(
        yaml.safe_dump(
            {
                "flavors": {
                    "python_function": {"loader_module": "mlflow.sklearn", "model_path": "m.pkl"},
                    "sklearn": {"pickled_model": "m.pkl"},
                }
            }
        )
    )
    with pytest.raises(ModelRefError) as exc:
        load_detector(str(sklearn))
    message = str(exc.value)
    assert (
        "is an MLflow model (flavours: python_function, sklearn; loader mlflow.sklearn)" in message
    )
    assert "not a spoofdet model: no artifact model_config or weights; no metadata" in message
    assert "spoofdet accepts models:/NAME@ALIAS" in message

    escaping = _copy(logged["folder"], tmp_path / "escaping")
    mlmodel = yaml.safe_load((escaping / "MLmodel").read_text())
    mlmodel["flavors"]["python_function"]["artifacts"]["weights"]["path"] = "../final/model.pt"
    (escaping / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    _copy(logged["final"], tmp_path / "final")
    with pytest.raises(ModelRefError, match="points outside the model folder"):
        load_detector(str(escaping))

    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("x")
    with pytest.raises(ModelRefError, match=r"is a folder without an MLmodel file .*notes\.txt"):
        resolve_model(str(stray))
    (tmp_path / "seed.pth").write_bytes(b"x")
    with pytest.raises(ModelRefError, match="convert it with spoofdet import"):
        resolve_model(str(tmp_path / "seed.pth"))


@pytest.mark.integration
def test_mlflow_own_loader_would_run_the_plants(logged, tmp_path):
    """Control: the plants above are live. mlflow.pyfunc.load_model (in a child process) runs
    the pickle (a) and the code file (b); spoofdet's loader, above, runs neither."""
    folder = _copy(logged["folder"], tmp_path / "model")
    marker = tmp_path / "pwned"
    _plant_pickle_and_code(folder, marker)
    code = (
        "import mlflow.pyfunc, sys\n"
        "try:\n"
        f"    mlflow.pyfunc.load_model({str(folder)!r})\n"
        "except Exception as exc:\n"
        "    print('load failed after the payload ran:', type(exc).__name__)\n"
    )
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert marker.exists()

    code_plant = _copy(logged["folder"], tmp_path / "model_code")
    marker.unlink()
    entry = code_plant / "pyfunc_entry.py"
    entry.write_text(_code_payload(marker) + entry.read_text())
    subprocess.run(
        [sys.executable, "-c", code.replace(str(folder), str(code_plant))],
        capture_output=True,
        timeout=300,
    )
    assert marker.exists()
