"""A user adapter as the README shows it: module-level functions marked @command."""

from typing import Any

from snakepool.pool.interpreter import InvalidArguments, command


@command(read_only=True)
def greet(args: dict[str, Any]) -> dict[str, str]:
    if "name" not in args:
        raise InvalidArguments("greet needs 'name'")
    return {"greeting": f"hello {args['name']}"}


@command(name="shout", idempotent=True)
def _shout(args: dict[str, Any]) -> str:
    return str(args.get("text", "")).upper()
