"""pydantic models as config, and pydantic's errors as the project's one-line messages.

Every model is frozen, strict (``"5"`` is no integer, ``true`` no number) and forbids
unknown keys. A ValidationError becomes a :class:`ConfigError` naming the file, the
dotted key and what the key expects, derived from the field's type and bounds.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from xray_hpo.errors import UserError

SEED_MAX = 2**32 - 1  # numpy and Optuna's samplers take 32-bit seeds


class ConfigError(UserError):
    """A bad ``params.yaml`` (or stored study spec): one line naming the key and the fix."""


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class AtKey(ValueError):
    """Raised by a validator about a key below the one it validates (``key`` is relative)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def parse(kind: Any, raw: Any, source: str, prefix: Sequence[str] = ()) -> Any:
    """``raw`` validated as ``kind`` (a model class or an annotated type), else ConfigError.

    ``prefix``: where ``raw`` sits in the file, for the key in the message.
    """
    try:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate(raw)
        return TypeAdapter(kind).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(explain(exc, kind, source, prefix)) from None


def explain(exc: ValidationError, kind: Any, source: str, prefix: Sequence[str] = ()) -> str:
    """pydantic's first error as one line: ``source: dotted.key: what is expected, got X``."""
    error = exc.errors()[0]
    parts, field, parent = _walk(kind, error["loc"])
    key = ".".join([*prefix, *parts])
    where = f"{source}: {key}" if key else source
    kind_of_error = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, AtKey):
        sub = ".".join(p for p in (key, cause.key) if p)
        return f"{source}: {sub}: {cause}" if sub else f"{source}: {cause}"
    if kind_of_error == "extra_forbidden":
        names = sorted(parent.model_fields) if parent is not None else []
        return f"{where}: unknown key; expected one of {names}"
    if kind_of_error == "missing":
        return f"{where}: missing; expected {describe(field)}"
    if kind_of_error in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where}: expected a mapping, got {show(error['input'], with_type=True)}"
    if kind_of_error == "too_short" and error["input"] in ([], ()):
        return f"{where}: expected a non-empty list, got {show(error['input'])}"
    if kind_of_error == "value_error":
        return f"{where}: {error['msg'].removeprefix('Value error, ')}"
    with_type = kind_of_error.endswith(("_type", "_parsing"))
    return f"{where}: expected {describe(field)}, got {show(error['input'], with_type)}"


def _walk(kind: Any, loc: Sequence[int | str]) -> tuple[list[str], FieldInfo | None, Any]:
    """Follow ``loc`` through the models: the dotted parts up to the first list index, the
    deepest field reached, and the model holding it."""
    parts: list[str] = []
    field: FieldInfo | None = None
    parent: Any = None
    current = _unwrap(kind)
    for step in loc:
        if isinstance(step, int):
            break  # an item of a list: the message describes the list
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent = current
            parts.append(str(step))
            field = current.model_fields.get(str(step))
            if field is None:
                break
            current = _unwrap(field.annotation)
        elif typing.get_origin(current) is dict:
            parts.append(str(step))
            current = _unwrap(typing.get_args(current)[1])
            field = None
        else:
            break
    return parts, field, parent


def _unwrap(hint: Any) -> Any:
    """The type under Annotated[...] and Optional[...]."""
    while True:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            hint = typing.get_args(hint)[0]
        elif origin in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(inner) != 1:
                return hint
            hint = inner[0]
        else:
            return hint


def describe(field: FieldInfo | None) -> str:
    """What a field accepts, in words: its description, else its type and bounds."""
    if field is None:
        return "a mapping"
    if field.description:
        return field.description
    hint = _unwrap(field.annotation)
    if typing.get_origin(hint) is Literal:
        return f"one of {list(typing.get_args(hint))}"
    if hint is int or hint is float:
        return _bounded("an integer" if hint is int else "a number", field.metadata, hint)
    if typing.get_origin(hint) in (tuple, list):
        return "a list"
    return {str: "a string", bool: "true or false"}.get(hint, "a mapping")


def _bounded(noun: str, metadata: Sequence[Any], hint: type) -> str:
    bounds: dict[str, Any] = {}
    for item in metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(item, name, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                bounds[name] = value
    low = ("ge", bounds["ge"]) if "ge" in bounds else ("gt", bounds.get("gt"))
    high = ("le", bounds["le"]) if "le" in bounds else ("lt", bounds.get("lt"))
    if low[1] is not None and high[1] is not None:
        if hint is int and low[0] == "ge" and high[0] == "le":
            return f"{noun} in {low[1]}..{high[1]}"
        left = "[" if low[0] == "ge" else "("
        right = "]" if high[0] == "le" else ")"
        return f"{noun} in {left}{low[1]}, {high[1]}{right}"
    symbol = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for name, value in (low, high):
        if value is not None:
            return f"{noun} {symbol[name]} {value}"
    return noun


def show(value: Any, with_type: bool = False) -> str:
    text = repr(value)
    if len(text) > 60:
        return f"{text[:60]}..."
    return f"{text} ({type(value).__name__})" if with_type else text
