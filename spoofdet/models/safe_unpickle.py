"""Read the tensors of a pickled ``nn.Module`` (``torch.save(model)``) without running its code.

Some seeds publish ``torch.save(model)`` files (Codecfake's ``anti-spoofing_feat_model.pt``): a
pickle of the module object itself. ``torch.load(weights_only=False)`` would import the seed's
``model.py`` and run whatever the pickle names, and ``weights_only=True`` refuses such files.
:func:`read_pickled_module` reads them with a restricted unpickler instead:

* ``find_class`` never imports anything. A short allowlist (:data:`ALLOWED`) maps the globals a
  module pickle needs onto local, side-effect-free functions: tensor and parameter rebuilding,
  ``collections.OrderedDict``, ``set`` / ``frozenset``, ``torch.device`` (recorded as a string)
  and the torch storage types (a dtype marker). Every other global (the file's module classes,
  ``nn.Conv2d``, ...) becomes an inert placeholder class that only records what the pickle stores
  in it (``NEWOBJ`` + ``BUILD``). *Calling* a placeholder, which is what ``REDUCE`` does with
  ``os.system``, ``builtins.eval`` or any ``__reduce__`` callable, raises :class:`PickleRefused`
  naming the global before anything runs.
* Tensor data comes from the zip's ``<top>/data/<key>`` records through ``persistent_load``; the
  top folder is read off the zip (``archive/`` for newer files, the saved file's stem, e.g.
  ``anti-spoofing_feat_model/``, for older ones).
* The module tree is then walked like ``nn.Module.state_dict``: ``_parameters``, persistent
  ``_buffers`` (names in ``_non_persistent_buffers_set`` skipped), then ``_modules`` depth first,
  in registration order, with dotted keys. A pickled ``nn.DataParallel`` yields ``module.``-prefixed
  keys, exactly as its ``state_dict()`` would.

Only the zip format of ``torch.save`` (PyTorch >= 1.6) is read; the legacy tar/pickle format is
refused with a message.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spoofdet.errors import SpoofdetError

__all__ = ["PickleRefused", "read_pickled_module", "ALLOWED"]


class PickleRefused(SpoofdetError):
    """The pickle asks for something outside the allowlist; nothing of it was executed."""


# ---- what a module pickle may contain --------------------------------------------------------


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. in a pickle: only its dtype is used."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


class _Storage:
    """One storage record of the zip as a flat tensor (``persistent_load`` result)."""

    def __init__(self, flat: Tensor) -> None:
        self.flat = flat


_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Tensor:
    """Our stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view of a storage record."""
    if not isinstance(storage, _Storage):
        raise PickleRefused(
            f"_rebuild_tensor_v2 got a {type(storage).__name__}, not a storage record of the file"
        )
    if backward_hooks:  # hooks are callables: a plain checkpoint never carries any
        raise PickleRefused("a tensor in the file carries backward hooks; refusing to rebuild it")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
        raise PickleRefused(
            f"a tensor in the file has an invalid layout (size {size}, "
            f"stride {stride}, offset {offset})"
        )
    if not all(size):  # no elements
        return torch.empty(size, dtype=storage.flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.flat.numel():
        raise PickleRefused(
            f"a tensor in the file reaches past its storage ({last + 1} > "
            f"{storage.flat.numel()} elements); the file is corrupt"
        )
    return storage.flat.as_strided(size, stride, offset)


def _rebuild_parameter(
    data: Tensor, requires_grad: bool = True, backward_hooks: Any = None
) -> Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter``: the parameter's data (a plain tensor)."""
    if not isinstance(data, Tensor):
        raise PickleRefused(f"_rebuild_parameter got a {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(
    data: Tensor, requires_grad: bool = True, backward_hooks: Any = None, state: Any = None
) -> Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter_with_state`` (the extra state is dropped)."""
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _device(kind: Any, index: Any = None) -> str:
    """Stand-in for ``torch.device(...)`` (``nn.DataParallel`` pickles one): its name, as text."""
    return f"{kind}" if index is None else f"{kind}:{index}"


#: ``(module, name)`` globals the unpickler resolves, and to what. ``__builtin__`` is how
#: Python 2 / protocol-2 pickles spell ``builtins``.
ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("torch", "device"): _device,
}


class _InertMeta(type):
    """Metaclass of the placeholders: calling one (pickle ``REDUCE`` / ``INST``) is refused."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise PickleRefused(
            f"the file calls {cls.pickled_global}{_show_args(args)}, which is not "
            "on the allowlist of a module checkpoint; it was not executed. Only "
            "load files you trust with torch.load(weights_only=False)"
        )


class _Inert(metaclass=_InertMeta):
    """An object of a class the file names but that is never imported: it only keeps its state."""

    pickled_global = "?"

    def __new__(cls, *args: Any) -> _Inert:  # pickle NEWOBJ: cls.__new__(cls, *args)
        obj = object.__new__(cls)
        obj.__dict__["pickled_args"] = args
        obj.__dict__["pickled_state"] = None
        return obj

    def __setstate__(self, state: Any) -> None:  # pickle BUILD
        self.__dict__["pickled_state"] = state

    def __repr__(self) -> str:
        return f"<{self.pickled_global} (not imported)>"


def _show_args(args: tuple[Any, ...]) -> str:
    text = repr(args)
    return f"{text[:120]}...)" if len(text) > 120 else text


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` by allowlist and placeholders; ``persistent_load`` from the zip's records."""

    def __init__(self, data: bytes, records: Callable[[str], bytes], little_endian: bool) -> None:
        super().__init__(io.BytesIO(data))
        self._records = records
        self._little = little_endian
        self._storages: dict[str, _Storage] = {}
        self._placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        key = (module, name)
        if key not in self._placeholders:  # one class per global: identity checks still hold
            shown = "builtins" if module == "__builtin__" else module  # protocol 2's spelling
            self._placeholders[key] = _InertMeta(
                name, (_Inert,), {"pickled_global": f"{shown}.{name}"}
            )
        return self._placeholders[key]

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise PickleRefused(f"unknown persistent id {pid!r:.80}; not a torch.save storage")
        _, storage_type, key, _location, numel = pid  # the location (e.g. cuda:0) is ignored
        if not isinstance(storage_type, _StorageType):
            raise PickleRefused(f"storage {key!r} has type {storage_type!r}, not a torch storage")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(self._flat(key, storage_type.dtype, int(numel)))
        return self._storages[key]

    def _flat(self, key: str, dtype: torch.dtype, numel: int) -> Tensor:
        raw = self._records(key)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) != numel * itemsize:
            raise PickleRefused(
                f"storage record {key!r} holds {len(raw)} bytes, the pickle "
                f"expects {numel} x {itemsize}; the file is corrupt"
            )
        if not raw:
            return torch.empty(0, dtype=dtype)
        if self._little or itemsize == 1:
            return torch.frombuffer(bytearray(raw), dtype=dtype)
        # a big-endian file: byte-swap through numpy (which has no bfloat16)
        if dtype == torch.bfloat16:
            raise PickleRefused("big-endian bfloat16 storages are not supported")
        native = torch.empty(0, dtype=dtype).numpy().dtype
        return torch.from_numpy(np.frombuffer(raw, dtype=native.newbyteorder(">")).astype(native))


# ---- the zip and the module tree ---------------------------------------------------------------


def _zip_parts(zf: zipfile.ZipFile, path: Path) -> tuple[bytes, Callable[[str], bytes], bool]:
    """``(data.pkl bytes, key -> record bytes, little endian?)`` of a ``torch.save`` zip file."""
    names = set(zf.namelist())
    pickles = sorted(n for n in names if n.endswith("/data.pkl") and n.count("/") == 1)
    if len(pickles) != 1:
        raise PickleRefused(
            f"{path}: expected one <top>/data.pkl in the zip, found {pickles or 'none'}"
        )
    top = pickles[0][: -len("data.pkl")]  # e.g. "archive/" or "anti-spoofing_feat_model/"

    def record(key: str) -> bytes:
        name = f"{top}data/{key}"
        if name not in names:
            raise PickleRefused(
                f"{path}: the pickle references storage {key!r}, but the zip has no {name}"
            )
        return zf.read(name)

    order = "little"  # files without a byteorder record were written little-endian
    if f"{top}byteorder" in names:
        order = zf.read(f"{top}byteorder").decode().strip()
    if order not in ("little", "big"):
        raise PickleRefused(f"{path}: unknown byteorder record {order!r}")
    return zf.read(pickles[0]), record, order == "little"


def _walk(obj: Any, prefix: str, out: OrderedDict[str, Tensor], depth: int = 0) -> None:
    """Add ``obj``'s parameters, persistent buffers and sub-modules' tensors to ``out``."""
    state = obj.pickled_state if isinstance(obj, _Inert) else None
    where = prefix.rstrip(".") or "the root object"
    groups = ("_parameters", "_buffers", "_modules")
    if not isinstance(state, Mapping) or not all(isinstance(state.get(g), Mapping) for g in groups):
        raise PickleRefused(
            f"{where} ({obj!r:.80}) is not a pickled nn.Module "
            "(no _parameters, _buffers and _modules)"
        )
    if depth > 100:
        raise PickleRefused(f"{where}: module tree deeper than 100 levels (a cycle?)")
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in state[group].items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, Tensor):
                raise PickleRefused(
                    f"{prefix}{name}: the {group.strip('_')[:-1]} is a "
                    f"{type(value).__name__}, not a tensor"
                )
            out[prefix + name] = value
    for name, child in state["_modules"].items():
        if child is not None:
            _walk(child, f"{prefix}{name}.", out, depth + 1)


def read_pickled_module(path: str | Path) -> OrderedDict[str, Tensor]:
    """The state dict of a ``torch.save(model)`` file, read without executing anything from it.

    Args:
        path: The ``.pt`` / ``.pth`` file (zip format).

    Returns:
        Key -> tensor in ``nn.Module.state_dict()`` order and naming (``module.`` prefix kept for
        a pickled ``nn.DataParallel``). A file whose pickle is a plain mapping of tensors is
        returned as is.

    Raises:
        PickleRefused: The pickle calls a global outside :data:`ALLOWED` (named in the message),
            is not a module checkpoint, or is corrupt. Nothing from the file has run.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise PickleRefused(
            f"{path}: not a torch.save zip file (the legacy pre-1.6 format is not "
            "read); re-save it with a current PyTorch"
        )
    with zipfile.ZipFile(path) as zf:
        data, record, little = _zip_parts(zf, path)
        root = _RestrictedUnpickler(data, record, little).load()
    if isinstance(root, Mapping) and root and all(isinstance(v, Tensor) for v in root.values()):
        return OrderedDict((str(k), v) for k, v in root.items())
    out: OrderedDict[str, Tensor] = OrderedDict()
    _walk(root, "", out)
    if not out:
        raise PickleRefused(f"{path}: the pickled module holds no parameters or buffers")
    return out
