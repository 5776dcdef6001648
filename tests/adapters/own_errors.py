"""An adapter raising errors of the tree, its own subclass of one, and a plain exception."""

from typing import Any

from snakepool import errors
from snakepool.pool.interpreter import command


class BadQuestion(errors.InvalidArguments):
    """An adapter's own client error: unknown to the parent, a client error all the same."""


@command(read_only=True)
def raise_error(args: dict[str, Any]) -> None:
    kind = args["kind"]
    if kind == "subclass":
        raise BadQuestion("no question mark", field="question")
    if kind == "plain":
        raise ValueError("plain bug")
    if kind.startswith("fields:"):  # fields named like the reply's own keys
        raise errors.InvalidArguments(
            "named alike",
            type="str",
            message="field",
            traceback="none",
            command="own",
            data={"d": 1},
            remote_type="own",
        )
    raise getattr(errors, kind)(f"raised {kind}", program_id="qa", nested={"n": [1, 2]})
