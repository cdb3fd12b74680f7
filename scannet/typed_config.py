"""Strict construction of typed dataclass configs from YAML / JSON / command-line values.

Every value is checked against the field's annotation before the dataclass is built, so a mistake such as
``train: {epochs: "ten"}`` is refused at once with its full key (``train.epochs``) rather than failing later
inside a Ray worker. Supported annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``,
``Literal[...]``, ``X | None``, ``tuple[T, ...]`` (lists accepted), ``dict[str, Any]`` and nested dataclasses
(given as mappings, merged over the current value).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

C = TypeVar("C")


class ConfigError(ValueError):
    """A config value that does not fit its field: names the key, the expected type and the value."""


def _check(value: Any, annotation: Any, key: str, current: Any = None) -> Any:
    """``value`` converted to ``annotation`` (list -> tuple, int -> float, mapping -> dataclass) or ConfigError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, key, current)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {annotation}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_check(v, item, f"{key}[{k}]") for k, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping of {annotation.__name__} keys, got {value!r}")
        base = current if isinstance(current, annotation) else None
        return build(annotation, value, key, base)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint = ""
            if isinstance(value, str):
                try:
                    float(value)
                    hint = " (YAML reads 1e-4 as text: write 1.0e-4)"
                except ValueError:
                    pass
            raise ConfigError(f"{key}: must be a number, got {value!r}{hint}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported annotation {annotation!r}")


def build(cls: type[C], data: Mapping[str, Any], where: str = "", base: C | None = None) -> C:
    """``cls`` from ``data`` (over ``base`` or the defaults), every key and value checked; ``where`` prefixes keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        current = getattr(base, name) if base is not None else None
        values[name] = _check(value, hints[name], key, current)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_plain(config: Any) -> Any:
    """A dataclass (or nested values) as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_plain(v) for v in config]
    if isinstance(config, Mapping):
        return {k: to_plain(v) for k, v in config.items()}
    return config


def read_yaml_mapping(path: str | Path, flag: str) -> dict[str, Any]:
    """The mapping of keys in a YAML file (empty file: ``{}``); ConfigError naming ``flag`` or the file otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data
