import pytest

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter.calc import MAX_EXPRESSION_CHARS, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", 14),
        ("(2 + 3) * 4", 20),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2 ** 10", 1024),
        ("-3 + +2", -1),
        ("10 / 4", 2.5),
        ("sqrt(16) + abs(-2)", 6.0),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("round(pi, 2)", 3.14),
        ("2 ** -1", 0.5),
        ("2 ** 4095", 2**4095),
    ],
)
def test_arithmetic(expression: str, expected: float) -> None:
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("9**9**9", "too large"),
        ("2 ** 5000", "too large"),
        ("(2 ** 4000) * (2 ** 4000)", "larger than"),
        ("1 / 0", "division by zero"),
        ("__import__('os').system('true')", "unsupported syntax"),
        ("__import__('os')", "unknown function"),
        ("().__class__", "unsupported syntax"),
        ("'a' * 3", "unsupported literal"),
        ("True + 1", "unsupported literal"),
        ("x + 1", "unsupported syntax"),
        ("1 +", "not an arithmetic expression"),
        ("10.0 ** 400", "cannot compute"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 << 100", "unsupported syntax"),
        ("sqrt(-1)", "cannot compute"),
        ("abs(1, x=2)", "unknown function"),
    ],
)
def test_rejects(expression: str, fragment: str) -> None:
    with pytest.raises(InvalidArguments, match=fragment.replace("(", r"\(")):
        evaluate(expression)


def test_length_and_node_limits() -> None:
    with pytest.raises(InvalidArguments, match="longer than"):
        evaluate("1+" * MAX_EXPRESSION_CHARS + "1")
    with pytest.raises(InvalidArguments, match="more than"):
        evaluate("+".join(["1"] * 400))
