"""Build the config dataclasses from YAML mappings, checking every key and value against the field types.

One reader serves the model geometry, the gates, the pruning block and the SSL options, so that every
bad value gets the same kind of message: the full key path (``encoder_conf.pruning.warmup_updates``), what
the field takes and what was given. YAML 1.1 reads ``1e-2`` (no dot) as a string; a float field accepts
such a string when it is a number, as the user meant. Nothing here imports ESPnet or torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Mapping, Optional, Type, TypeVar, Union

T = TypeVar("T")


def check_known_keys(cls: type, data: Mapping[str, Any], source: str) -> None:
    """Raise ValueError naming ``source`` and every key of ``data`` that is not a field of dataclass ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)}")


def join_key(source: str, key: str) -> str:
    """``source.key`` for a config path, ``source: key`` when ``source`` is a file."""
    is_file = "/" in source or source.endswith((".yaml", ".yml", ".json"))
    return f"{source}: {key}" if is_file else f"{source}.{key}"


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " (or null)"
    if origin is dict:
        return "a mapping"
    if origin in (list, tuple):
        args = typing.get_args(kind)
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"a list of {inner}" if origin is list or Ellipsis in args else f"a list ({inner})"
    if dataclasses.is_dataclass(kind):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, str(kind))


def coerce(kind: Any, value: Any, key: str) -> Any:
    """``value`` as the field type ``kind`` (an annotation), or ValueError naming ``key``."""
    origin = typing.get_origin(kind)
    if origin is Union:
        args = typing.get_args(kind)
        if value is None and type(None) in args:
            return None
        structured = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, Mapping) and len(structured) == 1:
            return coerce(structured[0], value, key)  # its own errors (a key, a check) are the real ones
        for alternative in (a for a in args if a is not type(None)):
            try:
                return coerce(alternative, value, key)
            except ValueError:
                continue
    elif kind is Any:
        return value
    elif dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if isinstance(value, Mapping):
            return from_mapping(kind, value, key)
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (inner,) = typing.get_args(kind)
            return [coerce(inner, item, f"{key}[{i}]") for i, item in enumerate(value)]
    elif origin is dict:
        if isinstance(value, Mapping):
            key_type, value_type = typing.get_args(kind)
            return {
                coerce(key_type, k, key): coerce(value_type, v, join_key(key, str(k)))
                for k, v in value.items()
            }
    elif origin is tuple:
        args = typing.get_args(kind)
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
            if len(value) == len(args):
                return tuple(coerce(a, item, f"{key}[{i}]") for i, (a, item) in enumerate(zip(args, value)))
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{key}: the config reader does not know the field type {kind!r}")
    raise ValueError(f"{key}: expected {_type_name(kind)}, got {value!r}")


def from_mapping(cls: Type[T], data: Optional[Mapping[str, Any]], source: str) -> T:
    """An instance of dataclass ``cls`` from ``data``: unknown keys and mistyped values are one ValueError
    naming ``source.key``; the dataclass's own checks (``__post_init__``) run afterwards."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of config keys, got {type(data).__name__} {data!r}")
    check_known_keys(cls, data, source)
    hints = typing.get_type_hints(cls)
    values: Dict[str, Any] = {
        name: coerce(hints[name], value, join_key(source, name)) for name, value in data.items()
    }
    try:
        return cls(**values)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith(source) else join_key(source, message)) from None
