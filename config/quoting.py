"""Quoting a caller's value in an error message: short, and never an error of its own.

Turning a container into text costs its whole size (a megabyte list would be copied into
the error, the logs and the stored result) and, nested deeply enough, overflows the stack;
``repr`` of an int of more than 4300 digits raises ``ValueError`` (Python's int/str
conversion limit). So a message quotes strings and numbers briefly and names anything
else by its type.
"""

from __future__ import annotations

__all__ = ["DESCRIBE_CHARS", "describe"]

#: Characters of a caller's value an error message quotes.
DESCRIBE_CHARS = 40
#: Ints up to this many bits are quoted; larger ones are named by their size.
QUOTED_INT_BITS = 64


def describe(value: object, limit: int = DESCRIBE_CHARS) -> str:
    """A short, safe quote of ``value`` for an error message (at most ~``limit`` + 2 chars).

    A string is quoted cut to ``limit`` characters; ``None``, a bool or a float as
    ``repr``; an int as ``repr`` up to 64 bits, else as ``"an int of N bits"``; anything
    else as ``"a <type>"``. Never raises.
    """
    if isinstance(value, str):
        return repr(value[:limit])
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        return repr(value) if bits <= QUOTED_INT_BITS else f"an int of {bits} bits"
    return f"a {type(value).__name__}"
