"""What may cross the pipe, and how a value that may not is named.

Every request argument and every result crosses as msgpack. What crosses, exactly:
``None``, ``bool``, ``float`` (NaN and infinities included, bit for bit), ``str``,
``bytes``, lists, dicts, and ``int`` **of any size** — msgpack's own integers stop at
int64/uint64, so a larger one travels as the extension type :data:`BIG_INT` (its
two's-complement bytes, big-endian) and is decoded back to the same ``int`` on both
sides. A tuple crosses as a list. Dict keys may be ``str`` (what JSON allows), or an
``int``, ``float``, ``bool``, ``None`` or ``bytes``, which msgpack carries as is.

Refused, with the path of the value (``args['when']: date is not JSON-able``):
anything else — ``datetime``, ``date``, ``time``, ``Decimal``, ``UUID`` (what Celery's
JSON decodes into), sets, arbitrary objects —, a tuple as a dict key, a string with a
lone surrogate (not Unicode, so not UTF-8), and nesting deeper than
:data:`MAX_NESTING`.

The fast path is msgpack's C packer with :func:`pack_default` as its hook (called only
for the values it cannot pack itself); :func:`find_unencodable` is the slow walk, run
only after a pack failed, to say where and why.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = [
    "BIG_INT",
    "MAX_NESTING",
    "describe_decode_failure",
    "ext_hook",
    "find_unencodable",
    "pack_default",
]

#: msgpack extension type code of an integer outside int64/uint64.
BIG_INT = 1
#: Deepest nesting accepted: msgpack's C unpacker stops at 1024 levels, and the
#: request itself takes two.
MAX_NESTING = 1000

_KEY_TYPES = (str, int, float, bytes, type(None))  # bool is an int


def pack_default(value: Any) -> Any:
    """The packer's hook: a too-large ``int`` becomes :data:`BIG_INT`; the rest is refused.

    Raises:
        TypeError: the value cannot cross (the caller then runs :func:`find_unencodable`).
    """
    if isinstance(value, int):
        size = (value.bit_length() + 8) // 8  # one spare bit for the sign
        return msgpack.ExtType(BIG_INT, value.to_bytes(size, "big", signed=True))
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def ext_hook(code: int, data: bytes) -> Any:
    """The unpacker's hook: :data:`BIG_INT` back to ``int``.

    Raises:
        ValueError: an extension type snakepool never sends.
    """
    if code == BIG_INT:
        return int.from_bytes(data, "big", signed=True)
    raise ValueError(f"unknown msgpack extension type {code}")


def _step(path: str, key: Any) -> str:
    return f"{path}[{key!r}]"


def _bad_string(text: str, path: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"{path}: string is not valid Unicode (lone surrogate at index {exc.start})"
    return None


def find_unencodable(value: Any, path: str) -> str | None:
    """The first value under ``value`` that cannot cross, as ``"<path>: <why>"``.

    Iterative (a hostile value may be nested far deeper than Python's recursion limit).

    Args:
        value: What was to be packed.
        path: How to name ``value`` itself, e.g. ``"args"`` or ``"result"``.

    Returns:
        None when every value can cross.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"{where}: nested deeper than {MAX_NESTING} levels"
        if item is None or isinstance(item, bool | int | float | bytes | bytearray | memoryview):
            continue
        if isinstance(item, str):
            if problem := _bad_string(item, where):
                return problem
        elif isinstance(item, list | tuple):
            stack.extend(
                (element, _step(where, index), depth + 1)
                for index, element in reversed(list(enumerate(item)))
            )
        elif isinstance(item, dict):
            children = []
            for key, element in item.items():
                if not isinstance(key, _KEY_TYPES):
                    return f"{where}: key {key!r} is a {type(key).__name__}; keys must be strings"
                if isinstance(key, str) and (problem := _bad_string(key, f"{where} key")):
                    return problem
                children.append((element, _step(where, key), depth + 1))
            stack.extend(reversed(children))
        else:
            return f"{where}: {type(item).__name__} is not JSON-able"
    return None


def describe_decode_failure(exc: BaseException) -> str:
    """Why a well-framed message did not decode, in words a caller can act on.

    The C packer packs a few things the unpacker then refuses; they are named here.
    """
    if isinstance(exc, msgpack.StackError):
        return f"nested deeper than {MAX_NESTING} levels"
    if isinstance(exc, TypeError) and "unhashable" in str(exc):
        return "a dict key is a tuple or list; keys must be strings"
    return f"{type(exc).__name__}: {exc}"
