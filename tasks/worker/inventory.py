"""Which programs live only in V2-compat interpreters (and so not in the store).

V2-compat keeps V2's semantics: a session's programs live in the memory of the
interpreter it is bound to, and are written to the SessionStore too. Before the
migration is finalized (V3 only, stateless: programs come from the store), every
program a V2-compat interpreter holds must be in the store for a session bound to it —
else that session loses it. Only the node can look inside its interpreters, so:

- on the node, the remote-control command ``snakepool_programs`` (registered by
  importing this module in the worker) groups the given sessions by the interpreter
  each is bound to and runs ``list_programs`` once on each of those interpreters;
- here, :func:`unstored_programs` asks each live V2-compat node about the sessions
  bound to it and compares: a program held by an interpreter that no session bound to
  that interpreter has in the store is reported against each of those sessions.

Sessions whose interpreter is gone (node or interpreter dead) hold nothing in memory
any more: their programs are exactly what the store has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from snakepool.config.ids import SESSION_ID, is_valid
from snakepool.errors import ConfigError, SnakepoolError, UnknownCommand
from snakepool.sessions import SessionStore
from snakepool.tasks.worker.node import Node, current_node

__all__ = ["INVENTORY_COMMAND", "held_programs", "missing_programs", "unstored_programs"]

log = logging.getLogger("snakepool.inventory")

#: The remote-control command's name.
INVENTORY_COMMAND = "snakepool_programs"
#: Sessions asked about in one remote-control message.
SESSIONS_PER_MESSAGE = 2000
#: Seconds one ``list_programs`` may run inside an interpreter.
LIST_TIMEOUT = 30.0


def held_programs(node: Node, sessions: Iterable[str]) -> dict[str, Any]:
    """On a node: the programs held by the interpreters ``sessions`` are bound to.

    Returns:
        ``{"interpreters": {pid: {"sessions": [...], "programs": [...]}}}``, or
        ``{"error": "..."}`` when an interpreter could not be asked.
    """
    pool = node.pool
    if pool is None or "v2compat" not in node.lanes:
        return {"interpreters": {}}
    groups: dict[int, list[str]] = {}
    for session_id in sessions:
        if not is_valid(SESSION_ID, session_id):
            continue
        pid = pool.affinity_of(session_id)
        if pid is not None:
            groups.setdefault(pid, []).append(session_id)
    interpreters: dict[str, Any] = {}
    for pid, bound in groups.items():
        try:
            listed = pool.execute("list_programs", {}, affinity=bound[0], timeout=LIST_TIMEOUT)
            held = sorted(str(p["program_id"]) for p in listed.get("programs", []))
        except (UnknownCommand, ConfigError):
            held = []  # an adapter without programs (or without DSPy) holds none
        except SnakepoolError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        interpreters[str(pid)] = {"sessions": bound, "programs": held}
    return {"interpreters": interpreters}


@inspect_command(args=[("sessions", list)], signature="<session ids>")  # type: ignore[untyped-decorator]
def snakepool_programs(state: Any, sessions: list[str] | None = None, **_: Any) -> dict[str, Any]:
    """Remote control: :func:`held_programs` on this worker's node."""
    try:
        return held_programs(current_node(), sessions or [])
    except SnakepoolError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def missing_programs(
    interpreters: Mapping[str, Any], stored: Mapping[str, set[str]]
) -> dict[str, list[str]]:
    """Session → programs its interpreter holds that no session bound there has stored.

    Args:
        interpreters: A node's reply (``{pid: {"sessions", "programs"}}``).
        stored: Session id → the program ids the store has for it.
    """
    missing: dict[str, list[str]] = {}
    for held in interpreters.values():
        bound = list(held.get("sessions", []))
        in_store = set().union(*(stored.get(s, set()) for s in bound))
        lost = sorted(set(held.get("programs", [])) - in_store)
        for session_id in bound if lost else ():
            missing[session_id] = lost
    return missing


def unstored_programs(
    app: Celery, store: SessionStore, bindings: Mapping[str, list[str]], *, timeout: float
) -> tuple[dict[str, list[str]], list[str]]:
    """Ask each node in ``bindings`` (node → sessions bound to it) and compare.

    Returns:
        (session → programs held only in memory, nodes that did not answer or failed).
    """
    missing: dict[str, list[str]] = {}
    silent: list[str] = []
    for node, sessions in sorted(bindings.items()):
        for start in range(0, len(sessions), SESSIONS_PER_MESSAGE):
            chunk = sessions[start : start + SESSIONS_PER_MESSAGE]
            replies = app.control.broadcast(
                INVENTORY_COMMAND, arguments={"sessions": chunk}, destination=[node],
                reply=True, timeout=timeout, limit=1,
            )  # fmt: skip
            reply = next((r[node] for r in replies or [] if node in r), None)
            if not isinstance(reply, dict) or "interpreters" not in reply:
                log.warning("node %s gave no program inventory: %r", node, reply)
                silent.append(node)
                break
            stored = {s: set(store.programs(s)) for s in chunk}
            missing.update(missing_programs(reply["interpreters"], stored))
    return missing, silent
