"""``snakepool deadletter list|show|retry|purge``: the poison requests set aside.

A request is dead-lettered when ``POISON_THRESHOLD`` of its deliveries each ended with
the death of the node running it; its caller got ``DeadLettered``
(:mod:`snakepool.tasks.worker.recovery.deadletters`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from snakepool.tasks.cli._common import (
    console,
    fails_cleanly,
    keyed_rows,
    reads_stored_data,
    settings_with,
)
from snakepool.tasks.cli._params import COUNT
from snakepool.tasks.cli._params import task_id as task_id_param

if TYPE_CHECKING:
    from snakepool.tasks.worker.recovery.deadletters import DeadLetterStore

__all__ = ["deadletter"]


@contextmanager
def _store() -> Iterator[DeadLetterStore]:
    from snakepool.config.keys import Keys
    from snakepool.errors import ConfigError
    from snakepool.tasks.worker.app import create_app
    from snakepool.tasks.worker.recovery.broker import BrokerRedis
    from snakepool.tasks.worker.recovery.deadletters import DeadLetterStore

    settings = settings_with()
    app = create_app(settings)
    try:
        try:
            broker = BrokerRedis(app)
        except ValueError:
            raise ConfigError(
                "dead letters live in a Redis broker; this BROKER_URL is not one",
                setting="BROKER_URL",
            ) from None
        try:
            yield DeadLetterStore(app, broker, Keys(settings.key_prefix))
        finally:
            broker.close()
    finally:
        app.close()


def _when(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@click.group()
def deadletter() -> None:
    """Poison requests: each killed POISON_THRESHOLD nodes running it."""


@deadletter.command("list")
@click.option(
    "-n", "limit", type=COUNT, default=100, show_default=True,
    help="At most this many.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="JSON, one object per dead letter.")
@fails_cleanly
@reads_stored_data
def deadletter_list(limit: int, as_json: bool) -> None:
    """The dead letters, newest first."""
    with _store() as store:
        letters = [letter.summary() for letter in store.list(limit)]
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return
    rows = [
        (str(letter["task_id"]), [str(letter["command"]), str(letter["queue"]),
         str(letter["deliveries"]), ", ".join(letter["nodes"]), _when(letter["at"])])
        for letter in letters
    ]  # fmt: skip
    # Task ids print whole at any width: they are what `show ID` and `retry ID` take.
    keyed_rows(f"dead letters ({len(letters)})", "task id",
               ("command", "queue", "deliveries", "nodes", "dead-lettered"), rows)  # fmt: skip


@deadletter.command("show")
@click.argument("task_id", callback=task_id_param)
@fails_cleanly
@reads_stored_data
def deadletter_show(task_id: str) -> None:
    """One dead letter: its request, its message and every delivery that killed a node."""
    with _store() as store:
        letter = store.get(task_id)
    if letter is None:
        console.print(f"no dead letter {task_id!r}")
        sys.exit(1)
    click.echo(json.dumps(letter.describe(), indent=2))


@deadletter.command("retry")
@click.argument("task_id", callback=task_id_param)
@fails_cleanly
def deadletter_retry(task_id: str) -> None:
    """Publish it again under its task id, with a fresh death count."""
    with _store() as store:
        done = store.retry(task_id)
    if not done:
        console.print(f"no dead letter {task_id!r}")
        sys.exit(1)
    console.print(f"re-published {task_id} (its DeadLettered result is forgotten)")


@deadletter.command("purge")
@fails_cleanly
def deadletter_purge() -> None:
    """Delete every dead letter (their callers already got DeadLettered)."""
    with _store() as store:
        count = store.purge()
    console.print(f"purged {count} dead letter{'s' if count != 1 else ''}")
