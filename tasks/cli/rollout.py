"""``snakepool rollout …``: move traffic between V2-compat and V3 (every change audited)."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from typing import Any

import click
from rich.table import Table

from snakepool.tasks.cli._common import (
    console,
    fails_cleanly,
    make_client,
    reads_stored_data,
    settings_with,
    styled,
)
from snakepool.tasks.cli._params import COUNT, REASON
from snakepool.tasks.cli._params import session_id as session_id_param
from snakepool.tasks.cli.finalize import rollout_finalize, rollout_unfinalize
from snakepool.tasks.cli.rollout_scope import rollout_exclude, rollout_include, rollout_only

__all__ = ["rollout"]

#: What to run to let the controller promote again (printed whenever it is paused).
_RESUME_HINT = "`snakepool rollout resume --reason …` lets the controller promote again"


@click.group()
def rollout() -> None:
    """Move traffic between V2-compat and V3."""


@rollout.command("set")
@click.argument("percent", type=click.IntRange(0, 100))
@REASON
@fails_cleanly
def rollout_set(percent: int, reason: str) -> None:
    """Send PERCENT % of sessions to V3 (a paused rollout stays paused: it says so)."""
    flags = make_client(settings_with()).set_rollout(percent, reason)
    console.print(f"rollout {flags['percent']}% to V3 (version {flags['version']})")
    _say_if_paused(flags["paused"])


@rollout.command("rollback")
@REASON
@fails_cleanly
def rollout_rollback(reason: str) -> None:
    """Send all traffic back to V2-compat now (and pause promotion)."""
    flags = make_client(settings_with()).rollback(reason)
    console.print(
        f"rolled back: {flags['percent']}% to V3 (version {flags['version']}), and paused "
        f"the rollout: the controller will not promote it; {_RESUME_HINT}"
    )


def _say_if_paused(paused: bool) -> None:
    if paused:
        console.print(styled("the rollout is still paused:", "yellow"), _RESUME_HINT)


@rollout.command("history")
@click.option("-n", "count", type=COUNT, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@fails_cleanly
@reads_stored_data
def rollout_history(count: int, as_json: bool) -> None:
    """The audit trail: who changed what, when and why."""
    history = make_client(settings_with()).flags.history(count)
    if as_json:
        click.echo(json.dumps(history, indent=2))
        return
    table = Table(title="rollout history")
    for column in ("version", "when", "who", "why", "change"):
        table.add_column(column, overflow="fold")
    for entry in history:
        when = datetime.datetime.fromtimestamp(entry["at"]).isoformat(timespec="seconds")
        table.add_row(str(entry["version"]), when, entry["who"], entry["why"], _change(entry))
    console.print(table)


def _change(entry: dict[str, Any]) -> str:
    """What an audit entry changed: the percentage, else each field that differs."""
    old, new = entry["old"], entry["new"]
    if old.get("percent") != new.get("percent"):
        return f"percent {old.get('percent')} → {new.get('percent')}"
    changed = [
        f"{name} {old.get(name)} → {new.get(name)}"
        for name in sorted(new)
        if old.get(name) != new.get(name) and name != "previous_percent"
    ]
    return "; ".join(changed) or f"percent {new.get('percent')} (no change)"


@rollout.command("force")
@click.argument("lane", type=click.Choice(["v3", "v2compat", "off"]))
@REASON
@fails_cleanly
def rollout_force(lane: str, reason: str) -> None:
    """Kill switch: send every request to LANE regardless of percentages (off: undo)."""
    from snakepool.tasks.operator import operator_name

    forced = None if lane == "off" else lane
    flags = make_client(settings_with()).flags.update(
        lambda f: replace(f, forced_lane=forced), who=operator_name(), why=reason
    )
    console.print(f"forced lane: {flags.forced_lane or 'none'} (version {flags.version})")


@rollout.command("override")
@click.argument("session_id", callback=session_id_param)
@click.argument("lane", type=click.Choice(["v3", "v2compat", "clear"]))
@REASON
@fails_cleanly
def rollout_override(session_id: str, lane: str, reason: str) -> None:
    """Pin one session to LANE whatever its bucket says (clear: back to its bucket)."""
    from snakepool.tasks.operator import operator_name
    from snakepool.tasks.worker.options import checked_session_id

    checked_session_id(session_id)

    def change(flags: Any) -> Any:
        overrides = {k: v for k, v in flags.overrides.items() if k != session_id}
        if lane != "clear":
            overrides[session_id] = lane
        return replace(flags, overrides=overrides)

    flags = make_client(settings_with()).flags.update(change, who=operator_name(), why=reason)
    console.print(f"{len(flags.overrides)} session override(s) (version {flags.version})")


@rollout.command("step")
@REASON
@fails_cleanly
def rollout_step(reason: str) -> None:
    """Promote to the next step of the schedule (1, 5, 10, 25, 50, 100 by default)."""
    from snakepool.tasks.operator import operator_name

    flags = make_client(settings_with()).flags.step(who=operator_name(), why=reason)
    console.print(f"rollout {flags.percent}% to V3 (version {flags.version})")
    _say_if_paused(flags.paused)


@rollout.command("pause")
@REASON
@fails_cleanly
def rollout_pause(reason: str) -> None:
    """Stop automatic promotion (the controller still rolls back)."""
    _set_paused(True, reason)


@rollout.command("resume")
@REASON
@fails_cleanly
def rollout_resume(reason: str) -> None:
    """Let the controller promote again."""
    _set_paused(False, reason)


def _set_paused(paused: bool, reason: str) -> None:
    from snakepool.tasks.operator import operator_name

    flags = make_client(settings_with()).flags.set_paused(paused, who=operator_name(), why=reason)
    state = "paused" if paused else "resumed"
    console.print(f"{state} at {flags.percent}% (version {flags.version})")


for _command in (
    rollout_exclude, rollout_include, rollout_only, rollout_finalize, rollout_unfinalize,
):  # fmt: skip
    rollout.add_command(_command)
