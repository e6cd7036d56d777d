"""Schema errors as one ``ConfigError`` that names the key, what it must be, and what was found.

Pydantic reports a location such as ``('victims', 'RandomIndices', 'cont')``; the parts that are
not keys of the file (union branches) are dropped, so the message names the key as written.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from fl_privacy.config import ConfigError
from fl_privacy.experiments.spec.names import close


def validate(model: type[BaseModel], data: Any, where: str) -> Any:
    """``model`` validated from ``data`` (found at ``where`` in the file), or a ``ConfigError`` naming the fix."""
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe(err, model, data, where)) from None


def describe(err: ValidationError, model: type[BaseModel], data: Any, where: str) -> str:
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "unknown_key"), errors[0])
    parts, value = _written(first["loc"], data)
    path = _path(where, parts)
    if first["type"] == "unknown_key":
        key, allowed = first["ctx"]["key"], first["ctx"]["allowed"]
        hint = close(key, allowed)
        hint = hint.replace("'", f"'{path}.", 1) if hint else ""
        return f"unknown key '{path}.{key}'{hint} (allowed in {path}: {', '.join(allowed)})"
    if first["type"] == "value_error":
        message = first["msg"].removeprefix("Value error, ")
        return f"{path} {message}" if message.startswith("must ") else f"{path}: {message}"
    field = _field_at(model, parts)
    if first["type"] in ("model_type", "dict_type") and not isinstance(value, Mapping):
        return f"{path} must be a mapping, not {type(value).__name__} ({value!r})"
    if field is not None and field.description:
        field_parts = parts[: _field_depth(model, parts)]
        shown = _value_at(data, field_parts)
        return f"{_path(where, field_parts)} must be {field.description}, not {shown!r}"
    return f"{path}: {first['msg']} (got {value!r})"


def _written(loc: tuple[Any, ...], data: Any) -> tuple[list[Any], Any]:
    """The parts of ``loc`` that are keys (or list indices) of the file, and the value found there."""
    parts, node = [], data
    for part in loc:
        if isinstance(node, Mapping) and part in node or isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue
        parts.append(part)
    return parts, node


def _path(where: str, parts: list[Any]) -> str:
    text = where
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _models_in(annotation: Any) -> list[Any]:
    """The models, dicts and lists an annotation may hold (through ``X | None``, ``Annotated``)."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if origin in (dict, list):
        return [annotation]
    return []


def _walk(model: type[BaseModel], parts: list[Any]) -> tuple[FieldInfo | None, int]:
    """The field that the last field name among ``parts`` names, and how many parts lead to it."""
    nodes: list[Any] = [model]
    field, depth = None, 0
    for i, part in enumerate(parts):
        step: list[Any] = []
        for node in nodes:
            if typing.get_origin(node) is list and not isinstance(part, int):
                node = next(iter(_models_in(typing.get_args(node)[-1])), None)  # one item written without a list
            if isinstance(node, type) and issubclass(node, BaseModel):
                if part in node.model_fields:
                    field, depth = node.model_fields[part], i + 1
                    step += _models_in(field.annotation)
            elif typing.get_origin(node) in (dict, list):
                step += _models_in(typing.get_args(node)[-1])
        nodes = step
    return field, depth


def _field_at(model: type[BaseModel], parts: list[Any]) -> FieldInfo | None:
    field, depth = _walk(model, parts)
    return field if depth == len(parts) or (field is not None and _only_items(parts[depth:])) else None


def _only_items(rest: list[Any]) -> bool:
    return all(isinstance(p, int) for p in rest)


def _field_depth(model: type[BaseModel], parts: list[Any]) -> int:
    return _walk(model, parts)[1]


def _value_at(data: Any, parts: list[Any]) -> Any:
    for part in parts:
        data = data[part]
    return data
