"""Configuration is data: YAML files loaded into dataclasses by one validating loader.

Unknown keys, missing required keys and wrongly typed values are reported by name, with
the file they came from, in one sentence.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or mapping is wrong; the message says which key and what to do."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass the path of a YAML file (see models/).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML ({_yaml_problem(exc)}); fix the syntax.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values at top level.")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message quotes the offending text over several lines; the line, column and problem suffice."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())[:200]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _key(where: str, name: str) -> str:
    """``file.yaml:key`` right after a file name, ``section.key`` below it."""
    plain_file = ":" not in where and where.endswith((".yaml", ".yml", ".pt", ".pth"))
    return f"{where}{':' if plain_file else '.'}{name}"


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} = {value!r} is not a {annotation}; fix the value.")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be empty (null), got {value!r}.")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} = {value!r} is not one of {list(args)}; pick one of those.")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping for {annotation.__name__}, got {value!r}.")
        return from_dict(annotation, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        inner = args[0] if args else Any
        items = [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}.")
        return dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{where} = {value!r} must be of type {annotation.__name__}; fix the value.")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, naming any unknown/missing/mistyped key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    upgrade = getattr(cls, "upgrade_legacy_keys", None)
    if upgrade is not None:       # a class may map keys it used to have (old configs and checkpoints)
        data = upgrade(data)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}' for {cls.__name__}; valid keys are {sorted(fields)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _check_type(data[name], hints[name], _key(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: required key '{name}' is missing for {cls.__name__}; add it.")
    return cls(**kwargs)


def load(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load YAML file ``path`` (optionally one top-level ``section`` of it) into ``cls``."""
    data = read_yaml(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"config file '{path}' has no '{section}' section; add it.")
        data = data[section]
    return from_dict(cls, data, where=str(path) + (f":{section}" if section else ""))


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
