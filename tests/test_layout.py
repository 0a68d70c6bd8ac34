"""The house rules that keep the project easy to see, checked."""

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_light_modules_import_nothing_heavy():
    code = (
        "import sys, spoofdet.data.schema, spoofdet.data.corpora, spoofdet.cli, spoofdet.testing.synthetic, spoofdet.data.rawboost, spoofdet.data.audio;"
        "heavy = [m for m in ('torch', 'ray', 'mlflow', 'transformers', 'deepspeed') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing the parsers pulled in {out}"


def test_every_direct_dependency_is_pinned():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = list(meta["dependencies"])
    for name, extra in meta["optional-dependencies"].items():
        deps += [d for d in extra if not d.startswith("spoofdet[")]
    unpinned = [d for d in deps if "==" not in d]
    assert not unpinned, unpinned
    assert "torch==2.13.0" in meta["dependencies"]
    assert {d.split("==")[0] for d in meta["optional-dependencies"]["gpu"]} == {
        "mamba-ssm",
        "causal-conv1d",
    }


def test_ci_runs_the_readme_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    head = readme[: readme.index("\n## ", readme.index("make test"))]
    assert "make demo" in head and "make test" in head


def test_design_card_layout_exists():
    for p in (
        "pyproject.toml",
        "ray_jobs",
        "spoofdet",
        "data_prep",
        "cluster",
        "tests",
        "README.md",
        "Makefile",
        "benchmarks",
        ".ci/run",
    ):
        assert (REPO / p).exists(), p
