"""Setting values of the wrong type where a lenient parse would hide it (review 8).

The environment is text and is parsed leniently (``SNAKEPOOL_POOL_SIZE=4``). A TOML file
and Python keywords are typed, and there a value of another type than its setting's is
a mistake that the lenient parse would turn into a value nobody wrote: ``pool_size =
true`` in a file was a pool of 1, ``request_timeout = "30"`` 30 s, ``Pool(size=True)``
a pool of 1, ``allow_admin_commands=1`` an admin switch turned on.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from snakepool.config.secrets import redact_text
from snakepool.config.sources import ENV_PREFIX, Layers
from snakepool.errors import ConfigError

__all__ = ["check_file_types", "check_keyword_types"]


def _kinds(annotation: Any) -> set[type] | None:
    """The scalar types a field takes (``float | None`` → float, NoneType), None if not
    only scalars."""
    if annotation in (int, float, str, bool, type(None)):
        return {annotation}
    origin = get_origin(annotation)
    if origin is Literal:
        return {type(arg) for arg in get_args(annotation)}
    if origin in (Union, types.UnionType):
        kinds: set[type] = set()
        for arg in get_args(annotation):
            more = _kinds(arg)
            if more is None:
                return None
            kinds |= more
        return kinds
    return None


#: TOML's name for each type a value parsed from the file can have.
_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}


def check_file_types(layers: Layers, annotations: Mapping[str, Any]) -> None:
    """Refuse a TOML value of another type than its setting's.

    The environment is text, parsed leniently (``SNAKEPOOL_POOL_SIZE=4``); a TOML file
    is typed, and a value of the wrong type is a mistake the lenient parse would hide:
    ``pool_size = true`` would be 1, ``allow_admin_commands = "no"`` false,
    ``request_timeout = "30"`` 30. An integer is a float, nothing else is another type.

    Raises:
        ConfigError: naming the file, line and key, the type written and the one wanted.
    """
    for name, value in layers.values.items():
        origin = layers.origins.get(name, "")
        if origin.startswith(ENV_PREFIX) or name not in annotations:
            continue  # the environment or a keyword, not the file
        kinds = _kinds(annotations[name])
        if kinds is None or type(value) not in _TOML_TYPES:
            continue  # a table, an array or a date: the field's own check names it
        allowed = kinds | ({int} if float in kinds else set())
        if type(value) in allowed:
            continue
        names = {_TOML_TYPES[k] for k in kinds if k in _TOML_TYPES}
        if "a float" in names:
            names = (names - {"a float", "an integer"}) | {"a number"}
        wanted = " or ".join(sorted(names))
        raise ConfigError(
            f"{origin}: expected {wanted or 'another type'}, not "
            f"{_TOML_TYPES[type(value)]} ({_as_toml(value)})",
            setting=name.upper(),
        )


def _as_toml(value: bool | int | float | str) -> str:
    """A value as the TOML file wrote it (no URL password)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(redact_text(value)[:60])
    return str(value)


def check_keyword_types(values: Mapping[str, Any], annotations: Mapping[str, Any]) -> None:
    """Refuse a keyword that is a ``bool`` for a setting that is not one, or a number for
    one that is (``Pool(size=True)`` was a pool of 1, ``request_timeout=True`` 1 s).

    Text is parsed as the environment's is; only these mix-ups are refused.

    Raises:
        ConfigError: naming the keyword.
    """
    for name, value in values.items():
        kinds = _kinds(annotations[name]) if name in annotations else None
        if kinds is None or value is None:
            continue
        flag = bool in kinds
        if isinstance(value, bool) != flag and (flag or isinstance(value, bool)):
            if flag and isinstance(value, str):
                continue  # "true" / "0": as in the environment
            wanted = "True or False" if flag else "a number, not a bool"
            raise ConfigError(
                f"{name}: must be {wanted}, got {value!r}"[:200], setting=name.upper()
            )
