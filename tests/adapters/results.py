"""An adapter whose results are hostile to the wire: what a command returns that
cannot cross must come back as ``CommandFailed``, never as a hang or a crash."""

import datetime
from typing import Any

from snakepool.pool.interpreter import InvalidArguments, command
from snakepool.pool.interpreter.standard import echo

__all__ = ["echo", "give"]


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


_RESULTS = {
    "date": lambda: {"when": datetime.date(2024, 1, 2)},
    "set": lambda: {"tags": {"a", "b"}},
    "object": lambda: [1, object()],
    "tuple_key": lambda: {(1, 2): "x"},
    "surrogate": lambda: {"text": "ok \ud800"},
    "too_deep": lambda: _nested(5000),
    "deep_for_json": lambda: _nested(900),  # crosses the pipe; too deep for a lane's JSON
    "deepest_for_json": lambda: _nested(255),  # 256 levels: the most a lane result has
    "unpacker_limit": lambda: _nested(1023),  # packs, but msgpack cannot unpack it
    "big_int": lambda: {"n": 3**500, "m": -(2**64)},
    "most_digits": lambda: {"n": 10**4300 - 1, "m": -(10**4300 - 1)},  # 4300 digits: exact
    "too_many_digits": lambda: {"n": 10**5000},  # past Python's int/str limit
    "too_many_digits_key": lambda: {"k": {-(10**4300): 1}},
}


@command(read_only=True)
def give(args: dict[str, Any]) -> Any:
    """Return the result named ``kind``."""
    if args.get("kind") == "error_with_date":  # an error whose data cannot cross
        raise InvalidArguments("refused", when=datetime.date(2024, 1, 2))
    if args.get("kind") == "digits":  # an integer of exactly `digits` digits, made here
        number = 10 ** (int(args["digits"]) - 1) + int(args.get("tail", 0))
        return {"n": -number if args.get("negative") else number}
    make = _RESULTS.get(args.get("kind", ""))
    if make is None:
        raise InvalidArguments(f"kind must be one of {sorted(_RESULTS)}")
    return make()
