"""cluster/: the launcher YAML, KubeRay manifests, runtime_env and Dockerfile parse and say what they must.

Unit tests: nothing here starts Ray, Docker or Kubernetes. What they pin down:
- every file parses; the launcher validates against the schema shipped with the installed Ray;
- a head without GPUs and an autoscaling GPU worker group, in the launcher and in KubeRay;
- the RayJob's entrypoint names a module of this repo and a recipe that validates, with its overrides;
- one image, one Ray version (pyproject's), one set of infrastructure env vars across the files;
- the Dockerfile pins its base by tag and builds the pinned DeepSpeed/Mamba stack and the gpu extra;
- the runtime_env keeps the virtualenv, run outputs and data out of the job upload.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from spoofdet.config import load_train_config

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "launcher-aws.yaml"
RAYCLUSTER = CLUSTER / "kuberay-raycluster.yaml"
RAYJOB = CLUSTER / "kuberay-rayjob.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
INFRA_ENV = ("SPOOFDET_STORAGE", "MLFLOW_TRACKING_URI")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(dist: str) -> str:
    """The version pyproject pins for ``dist`` (in any dependency list)."""
    meta = PYPROJECT["project"]
    for dep in meta["dependencies"] + [
        d for deps in meta["optional-dependencies"].values() for d in deps
    ]:
        name, _, version = dep.partition("==")
        if re.sub(r"\[.*\]", "", name) == dist:
            return version
    raise KeyError(dist)


def load(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    return docs


def kind(path: Path, name: str) -> dict[str, Any]:
    (doc,) = [d for d in load(path) if d.get("kind") == name]
    return doc


def gpu_limit(container: dict[str, Any]) -> float:
    return float(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_ray_cluster_spec(spec: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The head has no GPU, some worker group has GPU limits; returns every container."""
    assert spec["rayVersion"] == pinned("ray"), (
        f"{where}: rayVersion differs from pyproject's ray pin"
    )
    assert spec.get("authOptions", {}).get("mode") == "token", (
        f"{where}: token authentication not enabled"
    )
    head = spec["headGroupSpec"]
    (head_container,) = head["template"]["spec"]["containers"]
    assert gpu_limit(head_container) == 0 and str(head["rayStartParams"].get("num-gpus")) == "0"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [
        g for g in groups if any(gpu_limit(c) >= 1 for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups, f"{where}: no worker group asks for nvidia.com/gpu"
    for g in groups:
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], g["groupName"]
        for c in g["template"]["spec"]["containers"]:
            req, lim = c["resources"]["requests"], c["resources"]["limits"]
            assert str(req.get("nvidia.com/gpu", 0)) == str(lim.get("nvidia.com/gpu", 0)), (
                "GPU request != limit"
            )
    containers = [head_container] + [c for g in groups for c in g["template"]["spec"]["containers"]]
    for pod in [head["template"]] + [g["template"] for g in groups]:
        claims = [
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        ]
        assert "spoofdet-data" in claims, f"{where}: a pod without the shared volume"
    for c in containers:
        assert set(INFRA_ENV) <= set(env_of(c)), f"{where}: {c['name']} lacks {INFRA_ENV}"
        assert any(m["mountPath"] == "/mnt/spoofdet" for m in c["volumeMounts"])
        assert env_of(c)["SPOOFDET_STORAGE"].startswith("/mnt/spoofdet/")
    return containers


def test_every_cluster_file_parses():
    for path in (LAUNCHER, RAYCLUSTER, RAYJOB, RUNTIME_ENV):
        load(path)
    assert DOCKERFILE.read_text().lstrip().startswith("#")


def test_launcher_validates_against_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed (its cluster-config schema ships with it)")
    schema = json.loads(
        (Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json").read_text()
    )
    (config,) = load(LAUNCHER)
    jsonschema.validate(config, schema)  # raises, naming the offending key


def test_launcher_has_a_gpu_free_head_and_autoscaling_gpu_workers():
    (c,) = load(LAUNCHER)
    assert c["cluster_name"] and c["provider"]["type"]
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert not re.match(r"(p\d|g\d)", head["node_config"]["InstanceType"]), (
        "the head is a GPU instance"
    )
    workers = {name: t for name, t in types.items() if name != c["head_node_type"]}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert sum(t["min_workers"] for t in workers.values()) <= c["max_workers"]
    assert max(t["max_workers"] for t in gpu.values()) <= c["max_workers"]
    # shared storage on every host and in every container; infrastructure from the environment
    assert any("/mnt/spoofdet" in cmd and "mount" in cmd for cmd in c["initialization_commands"])
    options = " ".join(c["docker"]["run_options"])
    assert "/mnt/spoofdet:/mnt/spoofdet" in options
    assert all(f"--env {k}=" in options for k in INFRA_ENV) and "RAY_AUTH_MODE=token" in options
    assert any("[all,gpu]" in cmd and "pip install" in cmd for cmd in c["setup_commands"])
    assert any("--head" in cmd and "--num-gpus=0" in cmd for cmd in c["head_start_ray_commands"])


def test_raycluster_manifest():
    doc = kind(RAYCLUSTER, "RayCluster")
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    assert doc["spec"]["enableInTreeAutoscaling"] is True
    check_ray_cluster_spec(doc["spec"], "RayCluster")
    pvc = kind(RAYCLUSTER, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "spoofdet-data" and pvc["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


def test_rayjob_runs_a_module_of_this_repo_with_a_valid_recipe():
    doc = kind(RAYJOB, "RayJob")
    assert doc["apiVersion"] == "ray.io/v1"
    check_ray_cluster_spec(doc["spec"]["rayClusterSpec"], "RayJob")
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    assert module == "ray_jobs.train" and (REPO / (module.replace(".", "/") + ".py")).is_file()
    config = argv[argv.index("--config") + 1]
    assert config == "ray_jobs/configs/xlsr_aasist_19la.yaml" and (REPO / config).is_file()
    overrides = [a for a in argv[3:] if "=" in a and not a.startswith("-")]
    cfg = load_train_config(
        REPO / config, overrides, check_paths=False
    )  # raises ConfigError, listing problems
    assert cfg.scaling.use_gpu and all(
        s.shards.startswith("/mnt/spoofdet/") for s in cfg.data.train
    )
    workers = [
        g
        for g in doc["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        if any(gpu_limit(c) >= 1 for c in g["template"]["spec"]["containers"])
    ]
    gpus = sum(
        g["replicas"] * gpu_limit(c) for g in workers for c in g["template"]["spec"]["containers"]
    )
    assert gpus >= cfg.scaling.num_workers * cfg.scaling.gpus_per_worker, (
        "the job cluster has too few GPUs"
    )
    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/opt/spoofdet"  # where the Dockerfile keeps the source
    assert {".venv", "runs"} <= {p.strip("/") for p in runtime_env["excludes"]}


def test_one_image_across_launcher_and_manifests():
    (launcher,) = load(LAUNCHER)
    images = {launcher["docker"]["image"]}
    for path, name in ((RAYCLUSTER, "RayCluster"), (RAYJOB, "RayJob")):
        spec = kind(path, name)["spec"]
        spec = spec.get("rayClusterSpec", spec)
        pods = [spec["headGroupSpec"]["template"]] + [
            g["template"] for g in spec["workerGroupSpecs"]
        ]
        images |= {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert len(images) == 1, images
    (image,) = images
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest")


def test_dockerfile_pins_its_base_and_builds_the_gpu_stack():
    text = DOCKERFILE.read_text()
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    bases = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert bases, "no FROM line"
    for base in bases:
        name, _, tag = base.split("@")[0].rpartition(":")
        assert name and tag and tag != "latest" and "$" not in base, (
            f"base image not pinned by tag: {base}"
        )
    assert f"torch=={pinned('torch')}" in text or bases[0].split(":")[1].startswith(
        pinned("torch")
    ), "the base image's torch must be pyproject's torch"
    for dist in ("deepspeed", "mamba-ssm", "causal-conv1d"):
        assert f'"{dist}=={pinned(dist)}"' in text, f"{dist} is not built at pyproject's pin"
    assert re.search(r"DS_BUILD_(OPS=1|UTILS=1)", text), "DeepSpeed ops are not prebuilt"
    assert "MAMBA_FORCE_BUILD=TRUE" in text and "CAUSAL_CONV1D_FORCE_BUILD=TRUE" in text
    assert "TORCH_CUDA_ARCH_LIST" in text
    assert re.search(r'pip install "\.\[[^\]]*\bgpu\b[^\]]*\]"', text), (
        "the package is not installed with the gpu extra"
    )
    ignore = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignore)


def test_runtime_env_keeps_venv_runs_and_data_out_of_the_upload():
    env = yaml.safe_load(RUNTIME_ENV.read_text())
    excluded = {p.strip("/") for p in env["excludes"]}
    assert {".venv", "runs", "mlruns", "data", "*.parquet"} <= excluded
    # anchored at the repo root, so that no package is caught (spoofdet/data.py, a future spoofdet/data/)
    assert "/data/" in env["excludes"] and "data/" not in env["excludes"]
    assert "working_dir" not in env, "--working-dir on the command line says which checkout travels"
    assert "pip" not in env and "conda" not in env, (
        "dependencies come from the image, not a per-job install"
    )
    assert not set(INFRA_ENV) & set(env.get("env_vars") or {}), (
        "infrastructure comes from the nodes' env"
    )
