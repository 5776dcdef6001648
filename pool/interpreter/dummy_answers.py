"""Deterministic answers for DSPy's ``DummyLM``: offline runs and tests.

An answer per output field: from a configured mapping (a substring of an input →
``{field: value}``) where one matches, else a value derived from the inputs' hash that
fits the field's type annotation — ``int``, ``bool``, ``Literal[...]``, ``list[int]``,
``dict[str, float]``, ``Optional[...]``, dates, enums, pydantic models (``dspy.History``)
— so DSPy can parse it back whatever the signature declares.
"""

from __future__ import annotations

import collections.abc
import datetime
import decimal
import enum
import hashlib
import json
import types
import typing
import uuid
from typing import Any

__all__ = ["dummy_answers", "example_value", "input_examples"]

#: Deepest nesting of a derived value (a recursive model must still end).
MAX_DEPTH = 4

_SEQUENCES = (
    list,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_TEMPORAL: dict[type, str] = {
    datetime.datetime: "2000-01-01T12:00:00",
    datetime.date: "2000-01-01",
    datetime.time: "12:00:00",
    datetime.timedelta: "PT1M",
}


def _model_fields(annotation: Any) -> dict[str, Any] | None:
    fields = getattr(annotation, "model_fields", None)  # a pydantic model class
    return fields if isinstance(annotation, type) and isinstance(fields, dict) else None


def example_value(annotation: Any, name: str, digest: str, depth: int = 0) -> Any:  # noqa: PLR0911, PLR0912
    """A JSON-able value for a field of type ``annotation``, derived from ``digest``.

    Unknown annotations (``str``, ``Any``, a class this does not know) get a string.
    """
    number, text = int(digest[:8], 16), f"{name}-{digest[:8]}"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if depth > MAX_DEPTH:
        return text
    if annotation is bool:
        return number % 2 == 0
    if annotation is int:
        return number % 1000
    if annotation is float:
        return (number % 100_000) / 100
    if origin is typing.Literal:
        return args[0]
    if origin is typing.Annotated:
        return example_value(args[0], name, digest, depth + 1)
    if origin in (typing.Union, types.UnionType):
        choices = [a for a in args if a is not type(None)]
        return example_value(choices[0], name, digest, depth + 1) if choices else None
    if origin is tuple or annotation is tuple:
        if args and args[-1] is not Ellipsis:
            return [example_value(a, name, digest, depth + 1) for a in args]
        return [example_value(args[0], name, digest, depth + 1) if args else text]
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        return [example_value(args[0], name, digest, depth + 1) if args else text]
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        key = example_value(args[0], "key", digest, depth + 1) if args else "key"
        value = example_value(args[1], name, digest, depth + 1) if len(args) > 1 else text
        return {str(key): value}
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return next(iter(annotation)).value
        for kind, value in _TEMPORAL.items():
            if issubclass(annotation, kind):
                return value
        if issubclass(annotation, decimal.Decimal):
            return str(number % 1000)
        if issubclass(annotation, uuid.UUID):
            return str(uuid.UUID(int=number))
        if (fields := _model_fields(annotation)) is not None:
            return {
                field: example_value(info.annotation, field, digest, depth + 1)
                for field, info in fields.items()
                if info.is_required()
            }
    return text


def _digest(seed: str, name: str) -> str:
    return hashlib.sha256(f"{seed}|{name}".encode("utf-8", "surrogatepass")).hexdigest()


def _seed(inputs: dict[str, Any]) -> str:
    try:
        return json.dumps(inputs, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # keys of mixed types cannot be sorted
        return repr(sorted(inputs.items(), key=lambda item: repr(item[0])))


def dummy_answers(
    inputs: dict[str, Any], outputs: dict[str, Any], answers: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One answer per output field for ``inputs``.

    Args:
        inputs: Input field → value.
        outputs: Output field → its DSPy field info (``.annotation``).
        answers: Configured answers: a substring of an input → ``{field: value}``.
    """
    chosen: dict[str, Any] = {}
    for substring, mapped in answers.items():
        if any(substring in str(value) for value in inputs.values()):
            chosen = mapped
            break
    seed = _seed(inputs)
    return {
        name: chosen[name]
        if name in chosen
        else example_value(spec.annotation, name, _digest(seed, name))
        for name, spec in outputs.items()
    }


def input_examples(fields: dict[str, Any]) -> dict[str, Any]:
    """Inputs to try a program with: what a JSON caller could send for each field.

    A JSON caller cannot send a pydantic model, only its fields, so a model-typed input
    gets a string here, as it would from a caller.
    """
    return {
        name: (
            f"{name}-example"
            if _model_fields(spec.annotation) is not None
            else example_value(spec.annotation, name, _digest("example", name))
        )
        for name, spec in fields.items()
    }
