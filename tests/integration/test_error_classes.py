"""One error tree on both sides of the pipe: what a command raises in its interpreter
arrives in the parent as the same class of :mod:`snakepool.errors`, with its fields.

An adapter's own subclass arrives as the tree's class it derives from (a client error
stays a client error, never counted against a lane), its name in ``remote_type``.
"""

from __future__ import annotations

import pytest

from snakepool import errors
from tests.integration.conftest import PoolFactory

pytestmark = [pytest.mark.integration]

#: The classes an interpreter may report (anything else is CommandFailed).
REPORTED = ("UnknownCommand", "InvalidArguments", "CommandFailed", "PayloadTooLarge",
            "ProgramNotFound", "SessionNotFound", "ConfigError")  # fmt: skip


@pytest.mark.timeout(60)
def test_an_error_raised_in_the_interpreter_arrives_as_the_same_class(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=1, adapter="tests.adapters.own_errors")
    for name in REPORTED:
        with pytest.raises(errors.SnakepoolError) as raised:
            pool.execute("raise_error", {"kind": name})
        assert type(raised.value) is getattr(errors, name)
        assert raised.value.message == f"raised {name}"
        assert (raised.value.program_id, raised.value.nested) == ("qa", {"n": [1, 2]})

    with pytest.raises(errors.SnakepoolError) as raised:
        pool.execute("raise_error", {"kind": "subclass"})
    assert type(raised.value) is errors.InvalidArguments
    assert raised.value.is_client_error
    assert (raised.value.field, raised.value.remote_type) == ("question", "BadQuestion")

    for name, remote_type in (("QueueFull", "QueueFull"), ("plain", "ValueError")):
        with pytest.raises(errors.SnakepoolError) as raised:
            pool.execute("raise_error", {"kind": name})
        assert type(raised.value) is errors.CommandFailed
        assert raised.value.remote_type == remote_type
