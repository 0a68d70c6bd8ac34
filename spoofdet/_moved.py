"""Old import paths of modules that moved into subpackages (0.2): kept for this release only.

``import spoofdet.schema`` still works and gives the very module object of ``spoofdet.data.schema``
(no second copy, so classes and ``isinstance`` agree), with a DeprecationWarning naming the new
path. README "Changelog" lists these paths; they go in the next release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module path -> new module path (a package maps its submodules too).
MOVED: dict[str, str] = {
    "spoofdet.schema": "spoofdet.data.schema",
    "spoofdet.audio": "spoofdet.data.audio",
    "spoofdet.rawboost": "spoofdet.data.rawboost",
    "spoofdet.corpora": "spoofdet.data.corpora",
    "spoofdet.feature_cache": "spoofdet.data.features",
    "spoofdet.metrics": "spoofdet.evaluation.metrics",
    "spoofdet.scorefile": "spoofdet.evaluation.scorefile",
    "spoofdet.scoring": "spoofdet.evaluation.protocols",
    "spoofdet.eval_sets": "spoofdet.evaluation.sets",
    "spoofdet.calibration": "spoofdet.evaluation.calibration",
    "spoofdet.plots": "spoofdet.evaluation.plots",
    "spoofdet.registry": "spoofdet.serve.registry",
    "spoofdet.inference": "spoofdet.serve.batch",
    "spoofdet.predict": "spoofdet.serve.predict",
    "spoofdet.pyfunc_entry": "spoofdet.serve.pyfunc_entry",
    "spoofdet.seed_import": "spoofdet.serve.importer",
    "spoofdet.synthetic": "spoofdet.testing.synthetic",
    "spoofdet.sam": "spoofdet.optim",
}


def new_name(old: str) -> str | None:
    """The new path of ``old`` (a moved module or a submodule of a moved package), else None."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old path to the already imported new module object."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if new_name(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        target = new_name(spec.name)
        warnings.warn(
            f"{spec.name} moved to {target}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module is already executed


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
