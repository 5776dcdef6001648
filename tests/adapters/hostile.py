"""The default adapter's commands plus ``give`` (results hostile to the wire), for the
tests that send hostile requests through a real node."""

from snakepool.pool.interpreter.builtin import (
    calculate,
    create_program,
    delete_program,
    echo,
    execute_program,
    get_program_info,
    list_programs,
    sleep,
)
from tests.adapters.results import give

__all__ = [
    "calculate", "create_program", "delete_program", "echo", "execute_program",
    "get_program_info", "give", "list_programs", "sleep",
]  # fmt: skip
