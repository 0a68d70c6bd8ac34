"""The house rules that keep the project easy to see, checked."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_light_modules_import_nothing_heavy():
    code = (
        "import sys, spoofdet.data.schema, spoofdet.data.corpora, spoofdet.cli, "
        "spoofdet.testing.synthetic, spoofdet.data.rawboost, spoofdet.data.audio, "
        "spoofdet.evaluation.metrics;"
        "heavy = [m for m in ('torch', 'ray', 'mlflow', 'transformers', 'deepspeed') "
        "if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing the parsers pulled in {out}"


#: Each subpackage and the layer it sits in: a module imports only from lower layers (or from its
#: own subpackage), so imports run one way and no cycle can form between the rooms of the house.
LAYERS = {
    "spoofdet._moved": 0,
    "spoofdet.errors": 0,
    "spoofdet": 1,
    "spoofdet.data": 2,
    "spoofdet.models": 3,
    "spoofdet.evaluation": 3,
    "spoofdet.optim": 3,
    "spoofdet.config": 4,
    "spoofdet.tracking": 4,
    "spoofdet.serve": 5,
    "spoofdet.training": 6,
    "spoofdet.testing": 7,
    "spoofdet.cli": 8,
}


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in a file, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_imports_run_one_way_between_the_subpackages():
    bad = []
    for path in sorted((REPO / "spoofdet").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        room = _room(module)
        assert room in LAYERS, f"{path}: {room} has no layer in tests/test_layout.py LAYERS"
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in ("ray_jobs", "data_prep"):
                bad.append(f"{path.relative_to(REPO)}:{line} imports the entry point {name}")
            elif top == "spoofdet" and _room(name) in LAYERS and _room(name) != room:
                if LAYERS[_room(name)] >= LAYERS[room]:
                    bad.append(
                        f"{path.relative_to(REPO)}:{line} ({room}, layer {LAYERS[room]}) "
                        f"imports {name} (layer {LAYERS[_room(name)]})"
                    )
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_subpackages_show_the_architecture():
    for room in ("data", "models", "evaluation", "serve", "training", "testing", "config"):
        assert (REPO / "spoofdet" / room / "__init__.py").is_file(), room


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
