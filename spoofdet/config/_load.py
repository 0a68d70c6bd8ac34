"""YAML + ``key=value`` overrides -> dataclasses, every problem collected, none raised alone.

:func:`load_yaml` reads a mapping (errors name the file and line), :func:`parse_overrides` and
:func:`set_path` apply dotted overrides, :func:`build` fills a dataclass tree, converting each
value to its field's type and recording unknown keys (with the closest valid name), wrong types,
non-finite numbers (NaN, infinities) and values outside a ``Literal`` field's set in
``problems``. The caller raises one :class:`ConfigError` listing them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from spoofdet.errors import Problems, SpoofdetError


class ConfigError(SpoofdetError):
    """Every problem found in a config, one per line."""

    def __init__(self, problems: Iterable[str], source: str = "config") -> None:
        problems = list(problems)
        super().__init__(
            f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems),
            problems,
        )


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-5", "data.train.0.weight=2"]`` -> nested dict (values parsed as YAML
    scalars)."""
    out: dict[str, Any] = {}
    problems = Problems()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not key=value (e.g. optim.lr=1e-5)")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problems.append(
                f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})"
            )
            continue
        out[key.strip()] = value
    if problems:
        raise ConfigError(problems, "command line")
    return out


def set_path(tree: dict[str, Any], dotted: str, value: Any, problems: list[str]) -> None:
    """Set ``tree[a][b][0]...`` for ``dotted`` ``a.b.0...``; a path that does not exist is a
    problem (list items are never appended)."""
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and not (part.isdigit() and int(part) < len(node)):
            problems.append(
                f"override {dotted}: no list item {part} in {'.'.join(parts[:i]) or 'the config'} "
                f"(it has {len(node)})"
            )
            return
        if isinstance(node, list):
            nxt = node[int(part)]
        else:
            nxt = node.setdefault(part, {}) if isinstance(node, dict) else None
        if nxt is None or not isinstance(nxt, (dict, list)):
            problems.append(f"override {dotted}: {'.'.join(parts[: i + 1])} is not a section")
            return
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            problems.append(f"override {dotted}: no list item {last}")
            return
        node[int(last)] = value
    else:
        node[last] = value


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            # built at run time from the field's annotation, hence typing.Union
            return True, args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return False, tp


def _convert(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """``value`` as type ``tp`` (a dataclass, union, literal, list, dict or scalar); on a mismatch, a
    problem naming ``where`` and a placeholder so that checking can go on."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        problems.append(f"{where}: must be set (got null)")
        return None
    tp = inner
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a section (mapping), got {type(value).__name__}")
            return tp()
        return build(tp, value, where, problems)
    if origin is typing.Literal:
        return _convert_literal(value, typing.get_args(tp), where, problems)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            trial: list[str] = []
            got = _convert(value, option, where, trial)
            if not trial:
                return got
        names = " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(tp))
        problems.append(f"{where}: expected {names}, got {value!r}")
        return None
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return []
        return [_convert(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return {}
        value_tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        if value_tp is Any:  # free-form (head_kwargs): only its numbers are checked, as numbers
            _check_finite_tree(value, where, problems)
            return dict(value)
        out = {}
        for k, v in value.items():
            got = _convert(v, value_tp, f"{where}.{k}", problems)
            out[k] = got if isinstance(v, str) else v  # checked; an int stays an int (n_f: 5)
        return out
    return _convert_scalar(value, tp, where, problems)


def _convert_literal(value: Any, options: tuple[Any, ...], where: str, problems: list[str]) -> Any:
    """``value`` if it is one of ``options`` (a ``Literal`` field's values; True is not 1)."""
    if not any(value == o and type(value) is type(o) for o in options):
        problems.append(f"{where}: {value!r} is not one of {', '.join(map(str, options))}")
    return value


def _convert_scalar(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected true/false, got {value!r}")
        return bool(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {value!r}")
            return 0
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return _finite(float(value), where, problems)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {value!r}")
            return 0.0
        return _finite(float(value), where, problems)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {value!r}")
            return str(value)
        return value
    return value


def _finite(value: float, where: str, problems: list[str]) -> float:
    """``value`` if finite; NaN and infinities (YAML ``.nan``, ``.inf``, an override ``=nan``) are a
    problem: no recipe number means anything as NaN or infinity, and training would only find out
    after Ray started."""
    if not math.isfinite(value):
        problems.append(f"{where}: must be a finite number, got {value!r}")
    return value


def _check_finite_tree(value: Any, where: str, problems: list[str]) -> None:
    """Every float inside a free-form mapping or list (``model.head_kwargs``) is finite."""
    if isinstance(value, float):
        _finite(value, where, problems)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_finite_tree(v, f"{where}.{k}", problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite_tree(v, f"{where}[{i}]", problems)


def build(cls: type, values: dict[str, Any], where: str, problems: list[str]) -> Any:
    """Dataclass ``cls`` from ``values`` (defaults for the keys not given); unknown keys and wrong
    types go to ``problems``, each named by its dotted path below ``where``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = where + "." if where else ""
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(names)})"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs = {
        name: _convert(values[name], hints[name], f"{prefix}{name}", problems)
        for name in names
        if name in values
    }
    return cls(**kwargs)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"no such file: {path}"], str(path))
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark, start = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        if start is not None and mark is not None and start.line != mark.line:
            line += f" (in the block starting at line {start.line + 1})"
        raise ConfigError(
            [f"not valid YAML at{line}: {getattr(exc, 'problem', exc)}"], str(path)
        ) from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(["the top level must be a mapping of sections"], str(path))
    return tree


def resolve_path(path: str) -> Path:
    """A local config path; relative paths are relative to the working directory (the repo root
    with ``ray job submit --working-dir .``)."""
    return Path(os.path.expanduser(path)).resolve()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain data (for MLflow params and checkpoints)."""
    return dataclasses.asdict(cfg)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists of sections are indexed:
    ``data.train.0.shards``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = value
    return out
