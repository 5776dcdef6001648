"""Which programs live only in V2-compat interpreters (and so not in the store).

V2-compat keeps V2's semantics: a session's programs live in the memory of the
interpreter it is bound to, and are written to the SessionStore too. Before the
migration is finalized (V3 only, stateless: programs come from the store), every
program a V2-compat interpreter holds must be in the store for a session bound to it —
else that session loses it. Only the node can look inside its interpreters, so:

- on the node, the remote-control command ``snakepool_programs`` (registered by
  importing this module in the worker) runs ``list_programs`` in each given session's
  scope on the interpreter it is bound to (interpreters keep programs per session);
- here, :func:`unstored_programs` asks each live V2-compat node about the sessions
  bound to it and compares, session by session, with the store.

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
    """On a node: the programs each of ``sessions`` holds in its interpreter's memory.

    Returns:
        ``{"sessions": {session id: [program ids]}}`` for the sessions whose interpreter
        is alive, or ``{"error": "..."}`` when an interpreter could not be asked.
    """
    pool = node.pool
    if pool is None or "v2compat" not in node.lanes:
        return {"sessions": {}}
    held: dict[str, list[str]] = {}
    for session_id in sessions:
        if not is_valid(SESSION_ID, session_id) or pool.affinity_of(session_id) is None:
            continue
        try:
            listed = pool.execute(
                "list_programs", {}, affinity=session_id, session=session_id,
                transient=True, timeout=LIST_TIMEOUT,
            )  # fmt: skip
            held[session_id] = sorted(str(p["program_id"]) for p in listed.get("programs", []))
        except (UnknownCommand, ConfigError):
            held[session_id] = []  # an adapter without programs (or DSPy) holds none
        except SnakepoolError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
    return {"sessions": held}


@inspect_command(args=[("sessions", list)], signature="<session ids>")  # type: ignore[untyped-decorator]
def snakepool_programs(state: Any, sessions: list[str] | None = None, **_: Any) -> dict[str, Any]:
    """Remote control: :func:`held_programs` on this worker's node."""
    try:
        return held_programs(current_node(), sessions or [])
    except SnakepoolError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def missing_programs(
    held: Mapping[str, Any], stored: Mapping[str, set[str]]
) -> dict[str, list[str]]:
    """Session → the programs its interpreter holds that the store lacks for it.

    Args:
        held: A node's reply (``{session id: [program ids]}``).
        stored: Session id → the program ids the store has for it.
    """
    missing: dict[str, list[str]] = {}
    for session_id, programs in held.items():
        lost = sorted(set(programs) - stored.get(session_id, set()))
        if lost:
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
            if not isinstance(reply, dict) or "sessions" not in reply:
                log.warning("node %s gave no program inventory: %r", node, reply)
                silent.append(node)
                break
            stored = {s: set(store.programs(s)) for s in chunk}
            missing.update(missing_programs(reply["sessions"], stored))
    return missing, silent
