"""Safe arithmetic: parse with :mod:`ast`, walk an allow-list of nodes, never ``eval``.

Limits keep a hostile expression from hanging or exhausting an interpreter: the text
length, the node count, the size of every integer produced (``9**9**9`` is refused
before it is computed) and non-finite floats.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from snakepool.errors import InvalidArguments

__all__ = ["MAX_EXPRESSION_CHARS", "MAX_INT_BITS", "MAX_NODES", "evaluate"]

#: Longest expression accepted.
MAX_EXPRESSION_CHARS = 2000
#: Most AST nodes accepted (bounds the work and the recursion depth).
MAX_NODES = 500
#: Largest integer any step may produce, in bits.
MAX_INT_BITS = 4096

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression.

    Supports ``+ - * / // % **``, unary ``+ -``, parentheses, int and float literals,
    ``pi``, ``e`` and ``abs round min max sqrt floor ceil``.

    Raises:
        InvalidArguments: syntax error, anything outside the allow-list, a limit
            exceeded, division by zero, or a non-finite result.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidArguments(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise InvalidArguments(f"not an arithmetic expression: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise InvalidArguments(f"expression has more than {MAX_NODES} parts")
    try:
        result = _eval(tree.body)
    except ZeroDivisionError:
        raise InvalidArguments("division by zero") from None
    except (OverflowError, ValueError) as exc:
        raise InvalidArguments(f"cannot compute: {exc}") from None
    return _checked(result)


def _checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArguments("expression must produce a number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise InvalidArguments(f"integer result larger than {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArguments("result is not a finite number")
    return value


def _power(base: Number, exponent: Number) -> Number:
    # Refuse before computing: the result of int ** int has about
    # exponent * bits(base) bits, and computing a huge one would hang the interpreter.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base) > 1 and exponent * max(abs(base).bit_length() - 1, 1) > MAX_INT_BITS:
            raise InvalidArguments(f"power too large (over {MAX_INT_BITS} bits)")
    elif isinstance(exponent, int | float) and abs(exponent) > 10_000 and abs(base) > 1:
        raise InvalidArguments("exponent too large")
    result: Number = base**exponent
    if isinstance(result, complex):
        raise InvalidArguments("result is not a real number")
    return result


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise InvalidArguments(f"unsupported literal {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        function = _FUNCTIONS.get(node.func.id)
        if function is None or node.keywords:
            raise InvalidArguments(f"unknown function {node.func.id!r}")
        if not node.args:
            raise InvalidArguments(f"{node.func.id}() needs arguments")
        try:
            return _checked(function(*(_eval(arg) for arg in node.args)))
        except TypeError as exc:
            raise InvalidArguments(f"{node.func.id}(): {exc}") from None
    raise InvalidArguments(f"unsupported syntax: {type(node).__name__}")
