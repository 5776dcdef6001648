"""What may cross the pipe, and how a value that may not is named.

Every request argument and every result crosses as msgpack. What crosses, exactly:
``None``, ``bool``, ``float`` (NaN and infinities included, bit for bit), ``str``,
``bytes``, lists, dicts, and ``int`` **of up to** :data:`MAX_INT_DIGITS` **(4300)
decimal digits**, exactly — msgpack's own integers stop at int64/uint64, so a larger one
travels as the extension type :data:`BIG_INT` (its two's-complement bytes, big-endian)
and is decoded back to the same ``int`` on both sides. A tuple crosses as a list. Dict
keys may be ``str`` (what JSON allows), or an ``int``, ``float``, ``bool``, ``None`` or
``bytes``, which msgpack carries as is.

The integer limit is Python's int/str conversion limit
(``sys.int_info.default_max_str_digits``): every other hop a value takes — Celery's
JSON messages and results, the CLI's JSON arguments — parses integers from decimal
text and refuses longer ones (a guard against quadratic-time conversion, never to be
lifted process-wide). So the pipe refuses them too, in both directions and on both
sides, and an integer is exact on every path or refused on every path: a request
argument of more digits is ``InvalidArguments``, a result ``CommandFailed``.

Refused, with the path of the value (``args['when']: date is not JSON-able``):
anything else — ``datetime``, ``date``, ``time``, ``Decimal``, ``UUID`` (what Celery's
JSON decodes into), sets, arbitrary objects —, an ``int`` of more than
:data:`MAX_INT_DIGITS` digits, a tuple as a dict key, a string with a
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
    "MAX_INT_DIGITS",
    "MAX_NESTING",
    "describe_decode_failure",
    "ext_hook",
    "find_unencodable",
    "pack_default",
    "too_many_digits",
]

#: msgpack extension type code of an integer outside int64/uint64.
BIG_INT = 1
#: Deepest nesting accepted: msgpack's C unpacker stops at 1024 levels, and the
#: request itself takes two.
MAX_NESTING = 1000
#: Most decimal digits of an integer that may cross (sign not counted): Python's default
#: int/str conversion limit (``sys.int_info.default_max_str_digits``), which JSON parsing
#: enforces on every other hop. Written out: both ends must agree whatever their Python.
MAX_INT_DIGITS = 4300

#: The smallest magnitude refused: ``10 ** MAX_INT_DIGITS`` has one digit too many.
_INT_BOUND = 10**MAX_INT_DIGITS
#: Bytes of :data:`BIG_INT` data that hold every allowed integer (two's complement).
_INT_BYTES = ((_INT_BOUND - 1).bit_length() + 8) // 8

_KEY_TYPES = (str, int, float, bytes, type(None))  # bool is an int


def too_many_digits(number: int) -> bool:
    """Whether ``number`` has more than :data:`MAX_INT_DIGITS` decimal digits."""
    return not -_INT_BOUND < number < _INT_BOUND


def _int_refusal(path: str | None) -> str:
    where = f"{path}: " if path else ""
    return (
        f"{where}integer of more than {MAX_INT_DIGITS} digits (integers are exact up to "
        f"{MAX_INT_DIGITS} digits, Python's int/str conversion limit, which JSON enforces)"
    )


def pack_default(value: Any) -> Any:
    """The packer's hook: an ``int`` beyond int64/uint64 becomes :data:`BIG_INT`; the rest
    (and an ``int`` of more than :data:`MAX_INT_DIGITS` digits) is refused.

    Raises:
        TypeError: the value cannot cross (the caller then runs :func:`find_unencodable`).
        ValueError: an integer of more than :data:`MAX_INT_DIGITS` digits.
    """
    if isinstance(value, int):
        if too_many_digits(value):
            raise ValueError(_int_refusal(None))
        size = (value.bit_length() + 8) // 8  # one spare bit for the sign
        return msgpack.ExtType(BIG_INT, value.to_bytes(size, "big", signed=True))
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def ext_hook(code: int, data: bytes) -> Any:
    """The unpacker's hook: :data:`BIG_INT` back to ``int``.

    A sender that does not use :func:`pack_default` could send a longer integer: it is
    refused here, before it is even built when its bytes alone say it is too long.

    Raises:
        ValueError: an extension type snakepool never sends, or an integer of more than
            :data:`MAX_INT_DIGITS` digits.
    """
    if code == BIG_INT:
        if len(data) <= _INT_BYTES:
            number = int.from_bytes(data, "big", signed=True)
            if not too_many_digits(number):
                return number
        raise ValueError(_int_refusal(None))
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
        if not isinstance(item, list | tuple | dict):
            if problem := _scalar_problem(item, where):
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
                if isinstance(key, int) and too_many_digits(key):
                    return _int_refusal(f"{where} key")
                if isinstance(key, str) and (problem := _bad_string(key, f"{where} key")):
                    return problem
                children.append((element, _step(where, key), depth + 1))
            stack.extend(reversed(children))
    return None


def _scalar_problem(item: Any, where: str) -> str | None:
    """Why a value that is not a list, tuple or dict cannot cross, or None if it can."""
    if isinstance(item, int) and too_many_digits(item):
        return _int_refusal(where)
    if item is None or isinstance(item, bool | int | float | bytes | bytearray | memoryview):
        return None
    if isinstance(item, str):
        return _bad_string(item, where)
    return f"{where}: {type(item).__name__} is not JSON-able"


def describe_decode_failure(exc: BaseException) -> str:
    """Why a well-framed message did not decode, in words a caller can act on.

    The C packer packs a few things the unpacker then refuses; they are named here.
    """
    if isinstance(exc, msgpack.StackError):
        return f"nested deeper than {MAX_NESTING} levels"
    if isinstance(exc, TypeError) and "unhashable" in str(exc):
        return "a dict key is a tuple or list; keys must be strings"
    if isinstance(exc, ValueError) and str(exc) == _int_refusal(None):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
