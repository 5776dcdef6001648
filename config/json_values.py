"""Values that take a JSON hop: Celery's messages and results, JSON kept in Redis.

What JSON carries, as Python's ``json`` writes it: ``None``, ``bool``, ``int``,
``float``, ``str``, lists (a tuple becomes one) and dicts whose keys are strings (an
``int``, ``float``, ``bool`` or ``None`` key is written as a string, as ``json`` does).
Celery's JSON (kombu) adds ``bytes``, ``datetime``, ``date``, ``time``, ``Decimal`` and
``UUID``, each as a tagged object.

**Integers are exact up to** :data:`MAX_INT_DIGITS` **(4300) decimal digits**: Python's
int/str conversion limit, which every JSON parser in the path (``json.loads`` in the
worker, the client, the CLI) enforces. It is a guard against quadratic-time conversion
of hostile input and is never lifted process-wide; a longer integer is refused where it
comes in (``InvalidArguments``), never sent to fail somewhere later. The interpreter
pipe applies the same limit (:data:`snakepool.pool.interpreter.values.MAX_INT_DIGITS`),
so a value is exact on every path or refused on every path.

:func:`json_problem` names the first value that cannot take the hop, with its path
(``args['v']: set is not JSON-able``). It walks iteratively, each container once (a
value nested far past the recursion limit, or sharing one list a million times, costs
no more than its size).
"""

from __future__ import annotations

import json
from typing import Any

from snakepool.errors import InvalidArguments

__all__ = [
    "MAX_INT_DIGITS",
    "MAX_JSON_NESTING",
    "check_json",
    "json_problem",
    "parse_json",
    "too_many_digits",
]

#: Most decimal digits of an integer (sign not counted): Python's default int/str
#: conversion limit (``sys.int_info.default_max_str_digits``). Written out, not read
#: from ``sys``: every process on the path must agree, whatever it set for itself.
MAX_INT_DIGITS = 4300
#: Deepest nesting of lists and dicts accepted: deep enough for any real document, far
#: enough from the recursion limit (1000) of the code that encodes and parses it.
MAX_JSON_NESTING = 256

_INT_BOUND = 10**MAX_INT_DIGITS
_KEY_TYPES = (str, int, float, type(None))  # bool is an int


def too_many_digits(number: int) -> bool:
    """Whether ``number`` has more than :data:`MAX_INT_DIGITS` decimal digits."""
    return not -_INT_BOUND < number < _INT_BOUND


def _int_problem(path: str) -> str:
    return (
        f"{path}: integer of more than {MAX_INT_DIGITS} digits (integers are exact up to "
        f"{MAX_INT_DIGITS} digits, Python's int/str conversion limit, which JSON enforces)"
    )


def json_problem(value: Any, path: str, *, also: tuple[type, ...] = ()) -> str | None:
    """The first value under ``value`` that cannot take the JSON hop, as ``"<path>: <why>"``.

    Args:
        value: What is to be encoded.
        path: How to name ``value`` itself (``"args"``, ``"metadata"``).
        also: More types the encoder at hand carries (kombu's: ``bytes``, ``Decimal`` …).

    Returns:
        None when every value can take the hop (a circular reference is not looked for:
        ``json`` itself refuses it).
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    seen: set[int] = set()
    while stack:
        item, where, depth = stack.pop()
        if not isinstance(item, list | tuple | dict):
            if problem := _scalar_problem(item, where, also):
                return problem
            continue
        if depth >= MAX_JSON_NESTING:
            shown = where if len(where) <= 80 else where[:77] + "..."
            return f"{shown}: nested deeper than {MAX_JSON_NESTING} levels"
        if id(item) in seen:
            continue  # shared (or circular): checked once
        seen.add(id(item))
        if isinstance(item, dict):
            children = []
            for key, child in item.items():
                if not isinstance(key, _KEY_TYPES):
                    shown = _short_repr(key)
                    return f"{where}: key {shown} is a {type(key).__name__}; keys must be strings"
                if isinstance(key, int) and too_many_digits(key):
                    return _int_problem(f"{where} key")
                children.append((child, f"{where}[{key!r}]", depth + 1))
            stack.extend(reversed(children))
        else:
            stack.extend(
                (child, f"{where}[{index}]", depth + 1)
                for index, child in reversed(list(enumerate(item)))
            )
    return None


def _scalar_problem(item: Any, where: str, also: tuple[type, ...]) -> str | None:
    """Why a value that is not a list, tuple or dict cannot take the hop, or None."""
    if item is None or isinstance(item, bool | float | str):
        return None
    if isinstance(item, int):
        return _int_problem(where) if too_many_digits(item) else None
    if also and isinstance(item, also):
        return None
    return f"{where}: {type(item).__name__} is not JSON-able"


def check_json(value: Any, path: str) -> None:
    """Refuse ``value`` unless plain JSON carries it (see the module docstring).

    Raises:
        InvalidArguments: names the first value that cannot, and why.
    """
    if (problem := json_problem(value, path)) is not None:
        raise InvalidArguments(problem)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # holds an integer too long to print
        return f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json(text: str, what: str) -> Any:
    """``json.loads(text)``, with the limits of what it parses as typed errors.

    For text a person typed (``snakepool call ARGS``, ``--metadata``): a syntax error is
    theirs to fix and stays a ``json.JSONDecodeError``; an integer of more than
    :data:`MAX_INT_DIGITS` digits (a ``ValueError`` from Python's int/str limit) or
    nesting past the recursion limit (a ``RecursionError``) becomes ``InvalidArguments``.

    Args:
        text: The JSON text.
        what: How to name it in the error (``"ARGS"``, ``"--metadata"``).

    Raises:
        json.JSONDecodeError: not JSON.
        InvalidArguments: an integer too long, or nesting too deep, to parse.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        raise InvalidArguments(_int_problem(what)) from None
    except RecursionError:
        raise InvalidArguments(f"{what}: nested too deeply to parse") from None
