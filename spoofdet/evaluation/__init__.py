"""Evaluation: the official metrics (numpy only) and their reports with breakdowns, score files
(CM and ASV), corpus keys, the 4s/full scoring protocols, eval sets, calibration and plots."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # ``spoofdet.evaluation`` was the keys module until 0.2 (now spoofdet.evaluation.keys): its
    # names stay reachable from here for this release only
    if name.startswith("__") or name in ("pipeline", "keys"):
        raise AttributeError(name)  # a submodule not imported yet: the import system handles it
    import importlib

    keys = importlib.import_module("spoofdet.evaluation.keys")

    try:
        return getattr(keys, name)
    except AttributeError:
        raise AttributeError(f"module 'spoofdet.evaluation' has no attribute {name!r}") from None
