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

#: Every class of the tree: each arrives as itself, whatever it means in the parent.
EVERY_CLASS = sorted(name for name in errors.__all__ if name[0].isupper())


@pytest.mark.timeout(60)
def test_an_error_raised_in_the_interpreter_arrives_as_the_same_class(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=1, adapter="tests.adapters.own_errors")
    assert len(EVERY_CLASS) == 16
    for name in EVERY_CLASS:
        with pytest.raises(getattr(errors, name)) as raised:
            pool.execute("raise_error", {"kind": name})
        assert type(raised.value) is getattr(errors, name)
        assert raised.value.message == f"raised {name}"
        assert (raised.value.program_id, raised.value.nested) == ("qa", {"n": [1, 2]})
        assert raised.value.command == "raise_error"
        assert raised.value.category == getattr(errors, name).category
        assert "remote_type" not in raised.value.data

    # Fields named like the reply's own keys (type, message, ...) are the adapter's.
    with pytest.raises(errors.InvalidArguments) as raised:
        pool.execute("raise_error", {"kind": "fields:"})
    assert raised.value.message == "named alike"
    assert raised.value.data == {
        "type": "str", "message": "field", "traceback": "none", "command": "own",
        "data": {"d": 1}, "remote_type": "own",
    }  # fmt: skip

    with pytest.raises(errors.SnakepoolError) as raised:
        pool.execute("raise_error", {"kind": "subclass"})
    assert type(raised.value) is errors.InvalidArguments
    assert raised.value.is_client_error
    assert (raised.value.field, raised.value.remote_type) == ("question", "BadQuestion")

    with pytest.raises(errors.SnakepoolError) as raised:
        pool.execute("raise_error", {"kind": "plain"})
    assert type(raised.value) is errors.CommandFailed
    assert raised.value.remote_type == "ValueError"
    # After every one of them the interpreter is still there and serves.
    assert pool.execute("ping")["pong"] is True
    assert pool.stats()["idle"] == 1
