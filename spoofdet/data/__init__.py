"""Data: the row schema, one parser per corpus, audio decoding, RawBoost, cached features and the
training input pipeline (Parquet shards -> Ray Data -> batches).

The input pipeline by stage: :mod:`~spoofdet.data.sampling` (which rows an epoch draws),
:mod:`~spoofdet.data.transforms` (row -> fixed-length example), :mod:`~spoofdet.data.collate`
(the batch contract) and :mod:`~spoofdet.data.pipeline` (sources and the Ray Data builders).

Importing this package is cheap (no torch, no Ray); :mod:`spoofdet.data.collate` and
:mod:`spoofdet.data.pipeline` import Ray.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from spoofdet.errors import SpoofdetError


class DataError(SpoofdetError):
    """A data source or pipeline setting is unusable; the message names it and says what to do."""


# ``spoofdet.data`` was one module until 0.2; its names are kept reachable from here for this
# release only, imported on first use. Names not listed live in (or are re-exported by) pipeline.
_HOMES = {
    "spoofdet.data.sampling": (
        "MIXES",
        "read_metadata",
        "mix_factors",
        "row_hash",
        "copies",
        "realised_mix",
        "batch_compositions",
        "iter_proportional",
    ),
    "spoofdet.data.transforms": (
        "NUM_SAMPLES",
        "CROPS",
        "crop_offset",
        "decode_window",
        "Recipe",
        "prepare_rows",
        "prepare_full_length",
    ),
    "spoofdet.data.collate": ("BatchCollate", "model_input"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def _is_submodule(name: str) -> bool:
    return "." not in name and importlib.util.find_spec(f"{__name__}.{name}") is not None


def __getattr__(name: str) -> Any:
    # a submodule not imported yet (``from spoofdet.data import schema``): the import system
    # handles it, without importing the pipeline (and Ray) first
    if name.startswith("__") or name == "keys" or _is_submodule(name):
        raise AttributeError(name)
    module = importlib.import_module(_HOME_OF.get(name, "spoofdet.data.pipeline"))
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'spoofdet.data' has no attribute {name!r}") from None
