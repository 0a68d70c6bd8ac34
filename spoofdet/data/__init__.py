"""Data: the row schema, one parser per corpus, audio decoding, RawBoost, cached features and the
training input pipeline (Parquet shards -> Ray Data -> batches).

Importing this package is cheap (no torch, no Ray); :mod:`spoofdet.data.pipeline` imports Ray.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # ``spoofdet.data`` was one module until 0.2: its names now live in spoofdet.data.pipeline
    # (kept reachable from here for this release only, imported on first use)
    if name.startswith("__") or name in ("pipeline", "keys"):
        raise AttributeError(name)  # a submodule not imported yet: the import system handles it
    import importlib

    pipeline = importlib.import_module("spoofdet.data.pipeline")

    try:
        return getattr(pipeline, name)
    except AttributeError:
        raise AttributeError(f"module 'spoofdet.data' has no attribute {name!r}") from None
