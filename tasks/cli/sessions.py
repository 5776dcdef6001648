"""``snakepool sessions create|list|show|delete``: create, inspect and delete sessions."""

from __future__ import annotations

import json
import sys

import click

from snakepool.tasks.cli._common import (
    console,
    fails_cleanly,
    keyed_rows,
    make_client,
    reads_stored_data,
    settings_with,
)
from snakepool.tasks.cli._params import COUNT, session_id, setting_range, stored_text_object

__all__ = ["sessions"]


@click.group()
def sessions() -> None:
    """Create, inspect and delete sessions."""


@sessions.command("create")
@click.option(
    "--ttl", type=setting_range("session_ttl"), default=None,
    help="Seconds it lives after its last use (1 to 30 days) [SESSION_TTL].",
)  # fmt: skip
@click.option("--metadata", "metadata_json", default=None, help="A JSON object kept with it.")
@fails_cleanly
def sessions_create(ttl: int | None, metadata_json: str | None) -> None:
    """Create a session and print its id, alone: `SID=$(snakepool sessions create)`."""
    metadata = None
    if metadata_json is not None:
        metadata = stored_text_object(metadata_json, param_hint="--metadata")
    click.echo(make_client(settings_with()).create_session(ttl=ttl, metadata=metadata))


@sessions.command("list")
@click.option("-n", "limit", type=COUNT, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@fails_cleanly
@reads_stored_data
def sessions_list(limit: int, as_json: bool) -> None:
    """The newest sessions."""
    found = make_client(settings_with()).store.list(limit=limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [
        (str(session["id"]), [str(session["programs"]), str(session["ttl_left"]),
         session["v2_node"] or "-"])
        for session in found
    ]  # fmt: skip
    # Ids print whole at any width: they are what `sessions show ID` / `delete ID` take.
    keyed_rows("sessions", "id", ("programs", "ttl left", "v2 node"), rows)


@sessions.command("show")
@click.argument("session_id", callback=session_id)
@fails_cleanly
@reads_stored_data
def sessions_show(session_id: str) -> None:
    """One session with its programs."""
    client = make_client(settings_with())
    session = client.get_session(session_id)
    if session is None:
        console.print(f"no session {session_id!r}")
        sys.exit(1)
    session["programs"] = client.store.programs(session_id)
    console.print_json(json.dumps(session))


@sessions.command("delete")
@click.argument("session_id", callback=session_id)
@fails_cleanly
def sessions_delete(session_id: str) -> None:
    """Delete a session and its programs."""
    deleted = make_client(settings_with()).delete_session(session_id)
    console.print("deleted" if deleted else f"no session {session_id!r}")
    sys.exit(0 if deleted else 1)
