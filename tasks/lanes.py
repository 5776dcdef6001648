"""The lane tasks: ``snakepool.v3.execute`` and ``snakepool.v2compat.execute``.

Both take ``(command, args=None, session_id=None, **options)`` and return the command's
result, or raise the typed error. For the same inputs they return the same results;
they differ in where session state lives:

- **V3** is stateless. ``create_program`` writes the definition to the SessionStore and
  ``execute_program`` reads it back and sends it inline, so any interpreter on any node
  can serve any request (interpreters cache compiled programs by content hash).
- **V2-compat** keeps V2 semantics: a session is bound to one node (the router sends its
  requests to that node's worker-direct queue) and to one interpreter there (pool
  affinity), which holds its programs in memory. Every program is also written to the
  SessionStore; an interpreter that does not know a program (the session moved, its
  node or interpreter died) gets it rebuilt from there.

Options: ``timeout`` (seconds the command may run).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task

from snakepool.config.keys import validate_session_id
from snakepool.errors import InvalidArguments, ProgramNotFound, SessionNotFound, SnakepoolError
from snakepool.pool.interpreter.programs import ProgramDefinition
from snakepool.tasks.app import LANE_TASKS
from snakepool.tasks.node import Node, current_node
from snakepool.tasks.resilience import classify_v2, retry_delay, should_retry
from snakepool.tasks.shadow import outcome_of

__all__ = ["report_lane", "run_lane", "v2compat_execute", "v3_execute"]

log = logging.getLogger("snakepool.lanes")

#: Commands whose ``program_id`` refers to a session's program.
_PROGRAM_COMMANDS = ("execute_program", "get_program_info", "delete_program")


def _timeout(options: dict[str, Any]) -> float | None:
    timeout = options.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidArguments("option 'timeout' must be a positive number of seconds")
    return float(timeout)


def _check(command: Any, args: Any) -> dict[str, Any]:
    if not isinstance(command, str) or not command:
        raise InvalidArguments("command must be a non-empty string")
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise InvalidArguments(f"args must be an object, not {type(args).__name__}")
    return args


def _program_id(args: dict[str, Any]) -> str:
    program_id = args.get("program_id")
    if not isinstance(program_id, str):
        raise InvalidArguments(f"'program_id' is required, got {program_id!r}")
    return program_id


def _open_session(node: Node, session_id: str) -> None:
    if not node.store.touch(session_id):
        raise SessionNotFound(f"no session {session_id!r} (expired or never created)")


def _list_programs(node: Node, session_id: str) -> dict[str, Any]:
    programs = node.store.programs(session_id)
    return {
        "programs": [
            {
                "program_id": program_id,
                "signature": definition["signature"],
                "module": definition["module"],
                "hash": ProgramDefinition.from_args(definition).content_hash,
            }
            for program_id, definition in sorted(programs.items())
        ]
    }


def _create(node: Node, session_id: str, args: dict[str, Any], **call: Any) -> Any:
    assert node.pool is not None
    result = node.pool.execute("create_program", args, **call)  # validates and compiles
    definition = ProgramDefinition.from_args(args).to_dict()
    node.store.put_program(session_id, result["program_id"], definition)
    return result


def _stored(node: Node, session_id: str, program_id: str) -> dict[str, Any]:
    definition = node.store.get_program(session_id, program_id)
    if definition is None:
        raise ProgramNotFound(f"no program {program_id!r} in session {session_id!r}")
    return definition


def execute_v3(  # noqa: PLR0911 - one return per command family reads best
    node: Node,
    command: str,
    args: dict[str, Any],
    session_id: str | None,
    timeout: float | None,
    *,
    shadow: bool = False,
) -> Any:
    """Run one request the V3 way (stateless; programs from the SessionStore).

    Every request is transient: an interpreter keeps nothing for V3 but its cache.
    """
    pool = node.pool
    assert pool is not None
    if session_id is None:
        return pool.execute(command, args, timeout=timeout, transient=True)
    _open_session(node, session_id)
    if command == "create_program":
        return _create(node, session_id, args, timeout=timeout, transient=True)
    if command == "list_programs":
        return _list_programs(node, session_id)
    if command in _PROGRAM_COMMANDS and args.get("program") is None:
        program_id = _program_id(args)
        definition = _stored(node, session_id, program_id)
        if command == "execute_program":
            inline = {"program": definition, "inputs": args.get("inputs")}
            return pool.execute("execute_program", inline, timeout=timeout, transient=True)
        if command == "delete_program":
            node.store.delete_program(session_id, program_id)
            return {"deleted": program_id}
        # get_program_info: described from the inline definition (compiled, cached by hash).
        info = {"program_id": program_id, "program": definition}
        return pool.execute("get_program_info", info, timeout=timeout, transient=True)
    return pool.execute(command, args, timeout=timeout, transient=True)


def execute_v2compat(
    node: Node,
    command: str,
    args: dict[str, Any],
    session_id: str | None,
    timeout: float | None,
    *,
    shadow: bool = False,
) -> Any:
    """Run one request the V2 way (session bound to this node and one interpreter).

    The interpreter keys the session's programs by ``session``. A shadow copy never
    rebinds the session and is ``transient``: it changes no interpreter state, so
    shadowing must not alter the primary.
    """
    pool = node.pool
    assert pool is not None
    if session_id is None:
        return pool.execute(command, args, timeout=timeout, transient=shadow)
    _open_session(node, session_id)
    if not shadow and node.store.binding(session_id) != node.name:
        node.store.bind(session_id, node.name)  # first use, or its node is gone
    call: dict[str, Any] = {
        "timeout": timeout, "affinity": session_id, "session": session_id, "transient": shadow
    }  # fmt: skip
    if command == "create_program":
        return _create(node, session_id, args, **call)
    if command == "list_programs":
        return _list_programs(node, session_id)
    if command in _PROGRAM_COMMANDS and args.get("program") is None:
        program_id = _program_id(args)
        try:
            result = pool.execute(command, args, **call)
        except ProgramNotFound:
            # This interpreter never saw it (new binding): rebuild it from the store; a
            # shadow copy rebuilds nothing, it runs the stored definition inline.
            definition = _stored(node, session_id, program_id)
            if shadow:
                return pool.execute(command, {**args, "program": definition}, **call)
            pool.execute("create_program", {**definition, "id": program_id}, **call)
            result = pool.execute(command, args, **call)
        if command == "delete_program":
            node.store.delete_program(session_id, program_id)
        return result
    return pool.execute(command, args, **call)


_LANES: dict[str, Callable[..., Any]] = {"v3": execute_v3, "v2compat": execute_v2compat}


def report_lane(request: Any, lane: str) -> None:
    """Make ``AsyncResult.queue`` name the lane even for a node-direct (``.dq2``) delivery.

    With ``result_extended`` Celery stores the delivery's routing key as the result's
    queue; a V2-compat session's request arrives on its node's worker-direct queue, but
    the contract is that the caller sees the lane.
    """
    info = getattr(request, "delivery_info", None)
    if isinstance(info, dict) and info.get("routing_key") != lane:
        info["routing_key"] = lane


def run_lane(lane: str, command: Any, args: Any, session_id: Any, options: dict[str, Any]) -> Any:
    """Validate, run on this node's pool, record the lane's metrics (and shadow outcome).

    A shadow copy's own result goes nowhere: its outcome is only compared.
    """
    node = current_node()
    started = time.perf_counter()
    role = options.get("shadow_role")
    result: Any = None
    error: BaseException | None = None
    try:
        checked = _check(command, args)
        if session_id is not None:
            validate_session_id(session_id)
        if node.pool is None:
            raise InvalidArguments(f"node {node.name} does not serve the {lane} lane")
        result = _with_retries(
            node, command, lambda: _LANES[lane](
                node, command, checked, session_id, _timeout(options), shadow=role == "shadow"
            ),
        )  # fmt: skip
        return result
    except SnakepoolError as exc:
        error = exc
        if role == "shadow":
            return None
        if lane == "v2compat":
            classify_v2(exc)  # V2 callers branch on category / severity / retry strategy
        raise
    finally:
        node.metrics.record(lane, time.perf_counter() - started, error)
        if role in ("primary", "shadow"):
            _record_shadow(node, options, lane, str(command), outcome_of(result, error))


def _with_retries(node: Node, command: str, run: Callable[[], Any]) -> Any:
    """Run; retry with back-off only retryable errors of idempotent commands."""
    assert node.pool is not None
    idempotent = bool(node.pool.commands().get(command, {}).get("idempotent"))
    for attempt in itertools.count():
        try:
            return run()
        except SnakepoolError as exc:
            if not should_retry(exc, idempotent=idempotent, attempt=attempt):
                raise
            log.warning("retrying idempotent %r after %s", command, type(exc).__name__)
            time.sleep(retry_delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _record_shadow(
    node: Node, options: dict[str, Any], lane: str, command: str, outcome: dict[str, Any]
) -> None:
    try:
        node.shadows.record(
            str(options["shadow_id"]), options["shadow_role"], lane, command, outcome
        )
    except Exception:  # shadowing must never break the primary
        log.exception("recording a shadow outcome failed")


@shared_task(name=LANE_TASKS["v3"], bind=True)
def v3_execute(
    self: Any, command: str, args: dict[str, Any] | None = None,
    session_id: str | None = None, **options: Any,
) -> Any:  # fmt: skip
    """Run ``command`` on the V3 lane."""
    report_lane(self.request, "v3")
    return run_lane("v3", command, args, session_id, options)


@shared_task(name=LANE_TASKS["v2compat"], bind=True)
def v2compat_execute(
    self: Any, command: str, args: dict[str, Any] | None = None,
    session_id: str | None = None, **options: Any,
) -> Any:  # fmt: skip
    """Run ``command`` on the V2-compat lane."""
    report_lane(self.request, "v2compat")
    return run_lane("v2compat", command, args, session_id, options)
