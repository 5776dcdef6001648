"""The lane tasks: ``snakepool.v3.execute`` and ``snakepool.v2compat.execute``.

Both take ``(command, args=None, session_id=None, **options)`` and return the command's
result, or raise the typed error. For the same inputs they return the same results;
they differ in where session state lives:

- **V3** is stateless. ``create_program`` writes the definition to the SessionStore and
  ``execute_program`` reads it back and sends it inline, so any interpreter on any node
  can serve any request (interpreters cache compiled programs by content hash).
- **V2-compat** keeps V2 semantics: a session is bound to one node (the router sends its
  requests to that node's worker-direct queue) and to one interpreter there (pool
  affinity), which holds its programs in memory. Every program is written to the
  SessionStore first (a definition the store refuses is never held), and the store stays
  the truth: each program command sends the stored definition's content hash, so an
  interpreter whose copy is older (the session replaced or deleted it on V3, then was
  rolled back here) or missing (the session moved, its node or interpreter died) gets it
  rebuilt from the store — or ``ProgramNotFound`` when the store has none.

Requests without a session keep nothing in an interpreter on either lane (transient):
anonymous callers share interpreters, and one must never see, replace or delete what
another created.

Around the run, every request goes through the lane pipeline
(:mod:`snakepool.tasks.worker.pipeline`): validate → run → retries → metrics → shadow →
V2 classification. The only caller option is ``timeout`` (seconds the command may run);
the shadow tag comes from a message header only our dispatch code sets.

A request that cannot start because its node is stopping (a warm shutdown began, or the
pool was stopped under it) is requeued with ``Reject(requeue=True)`` — never failed, never
acknowledged: another node runs it (see :class:`~snakepool.tasks.worker.node.NodeStopping`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import Reject

from snakepool.config.quoting import describe
from snakepool.errors import (
    CommandFailed,
    InvalidArguments,
    PoolUnavailable,
    ProgramNotFound,
    SessionNotFound,
    SnakepoolError,
)
from snakepool.pool.interpreter.programs import ProgramDefinition
from snakepool.pool.request import MAX_NESTING, nested_too_deep
from snakepool.tasks.worker.app import LANE_TASKS
from snakepool.tasks.worker.logs import CLIENT_ERRORS
from snakepool.tasks.worker.node import Node, NodeStopping, current_node
from snakepool.tasks.worker.options import ShadowTag
from snakepool.tasks.worker.pipeline import LaneCall, Pipeline, lane_steps
from snakepool.tasks.worker.recovery.once import DeliveredOnce

__all__ = [
    "LANE_PIPELINE",
    "LaneTask",
    "execute_v2compat",
    "execute_v3",
    "report_lane",
    "run_lane",
    "v2compat_execute",
    "v3_execute",
]

log = logging.getLogger("snakepool.lanes")

#: Commands whose ``program_id`` refers to a session's program.
_PROGRAM_COMMANDS = ("execute_program", "get_program_info", "delete_program")


def _inline(command: str, args: dict[str, Any]) -> bool:
    """Whether the request names its program inline (``execute_program`` and
    ``get_program_info`` may); ``delete_program`` always means the session's program —
    with an inline ``program`` beside the id it once deleted only the interpreter's
    copy on V2-compat (the store kept it: it came back) and nothing on V3."""
    return command != "delete_program" and args.get("program") is not None


def _program_id(args: dict[str, Any]) -> str:
    program_id = args.get("program_id")
    if not isinstance(program_id, str):
        raise InvalidArguments(f"'program_id' is required, got {describe(program_id)}")
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
    """Validate and compile (keeping nothing), store, then — V2 — hold it in the interpreter.

    The store comes before the interpreter: a definition the store refuses (too large,
    too many programs) or cannot take (Redis away) must not be left held in the
    interpreter, where ``execute_program`` would run a program the caller was told was
    not created and ``list_programs`` does not show.
    """
    pool = node.pool
    assert pool is not None
    hold = not call.get("transient", False)
    result = pool.execute("create_program", args, **{**call, "transient": True})
    definition = ProgramDefinition.from_args(args).to_dict()
    node.store.put_program(session_id, result["program_id"], definition)
    if hold:
        # Compiled already (cached by content hash): this only records it for the session.
        try:
            pool.execute("create_program", {**definition, "id": result["program_id"]}, **call)
        except SnakepoolError as exc:
            # Stored: the next request rebuilds it from the store (ProgramNotFound), once
            # no older copy of it is left held here.
            log.warning("program %r stored but not held: %s", result["program_id"], exc)
            _forget_held(pool, result["program_id"], call)
    return result


def _forget_held(pool: Any, program_id: str, call: dict[str, Any]) -> None:
    """Drop the interpreter's copy of a program (best effort: it may hold none)."""
    with contextlib.suppress(SnakepoolError):
        pool.execute("delete_program", {"program_id": program_id}, **call)


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
    if command in _PROGRAM_COMMANDS and not _inline(command, args):
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
        # Outside a session nothing is kept: anonymous callers share interpreters, and
        # one must never see, replace or delete what another created.
        return pool.execute(command, args, timeout=timeout, transient=True)
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
    if command in _PROGRAM_COMMANDS and not _inline(command, args):
        program_id = _program_id(args)
        # The store is the truth: the session may have replaced or deleted the program
        # on V3 since this interpreter took it (a rollback brings it back here).
        definition = node.store.get_program(session_id, program_id)
        if definition is None:
            if not shadow:
                _forget_held(pool, program_id, call)
            raise ProgramNotFound(f"no program {program_id!r} in session {session_id!r}")
        current = ProgramDefinition.from_args(definition).content_hash
        checked = {**args, "program_hash": current}
        try:
            result = pool.execute(command, checked, **call)
        except ProgramNotFound:
            # This interpreter never saw it (new binding) or holds an older definition:
            # rebuild it from the store; a shadow copy rebuilds nothing, it runs the
            # stored definition inline.
            if shadow:
                return pool.execute(command, {**args, "program": definition}, **call)
            pool.execute("create_program", {**definition, "id": program_id}, **call)
            result = pool.execute(command, checked, **call)
        if command == "delete_program":
            node.store.delete_program(session_id, program_id)
        return result
    return pool.execute(command, args, **call)


def _run(execute: Callable[..., Any]) -> Callable[[LaneCall], Any]:
    def run(call: LaneCall) -> Any:
        node = call.node
        if call.attempt and node.stopping:
            # A retry is a new start: on a stopping node it goes back to the broker.
            raise NodeStopping(f"node {node.name} is stopping; retrying elsewhere")
        try:
            result = execute(
                node, call.command, call.args, call.session_id, call.timeout,
                shadow=call.is_shadow_copy,
            )  # fmt: skip
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # The SessionStore's Redis is away (restarting): a typed, retryable error.
            raise PoolUnavailable(f"Redis unreachable: {exc}", reason="redis") from exc
        except Exception as exc:
            if node.refused_by_shutdown(exc):
                raise NodeStopping(f"node {node.name} is stopping: {exc}") from None
            raise
        if nested_too_deep(result):
            # Celery's JSON result backend would fail to store it (RecursionError),
            # leaving the caller a raw encoding error instead of the command's outcome.
            raise CommandFailed(
                f"the result of {call.command!r} is nested more than {MAX_NESTING} levels "
                "deep: a lane's result travels as JSON and cannot be that deep",
                remote_type="ResultTooDeep",
                max_nesting=MAX_NESTING,
            )
        return result

    return run


#: The pipeline's "run" for each lane.
_LANES: dict[str, Callable[[LaneCall], Any]] = {
    "v3": _run(execute_v3),
    "v2compat": _run(execute_v2compat),
}


def report_lane(request: Any, lane: str) -> None:
    """Make ``AsyncResult.queue`` name the lane even for a node-direct (``.dq2``) delivery.

    With ``result_extended`` Celery stores the delivery's routing key as the result's
    queue; a V2-compat session's request arrives on its node's worker-direct queue, but
    the contract is that the caller sees the lane.
    """
    info = getattr(request, "delivery_info", None)
    if isinstance(info, dict) and info.get("routing_key") != lane:
        info["routing_key"] = lane


#: The steps every lane request goes through (stateless: shared by all threads).
LANE_PIPELINE = Pipeline(lane_steps())


#: Where a lane task's request keeps its call until the result is stored.
_CALL_ATTRIBUTE = "snakepool_lane_call"


def run_lane(  # noqa: PLR0917 - the task's arguments, plus where it runs
    node: Node,
    lane: str,
    request: Any,
    command: Any,
    args: Any,
    session_id: Any,
    options: dict[str, Any],
    *,
    after_result_later: bool = False,
) -> Any:
    """Take one request through the lane pipeline on ``node``; its result, or raise its error.

    Args:
        request: The Celery request of the task (for its id and the shadow tag header).
        after_result_later: Leave the observation the steps deferred (the primary's
            shadow record) on ``request``, for :class:`LaneTask` to run once the result
            is stored; by default it runs here, before returning.

    A shadow copy's result goes nowhere (it is sent with ``ignore_result``): it returns
    None whatever happened, once its outcome is recorded for the comparison.

    Raises:
        Reject: with ``requeue=True`` when the node is stopping and the request has not
            run to its end here: its message goes back to the broker, unacknowledged.
    """
    call = LaneCall(
        node=node, lane=lane, command=command, args=args, session_id=session_id,
        options=options, shadow=ShadowTag.of(request),
    )  # fmt: skip
    # A task called directly (not by a worker) gets no after_return: run it all here.
    later = after_result_later and not getattr(request, "called_directly", False)
    try:
        with node.serving():
            outcome = LANE_PIPELINE.run(call, _LANES[lane])
    except NodeStopping as stopping:
        later = False
        raise Reject(str(stopping), requeue=True) from None
    finally:
        if later:
            setattr(request, _CALL_ATTRIBUTE, call)
        else:
            Pipeline.run_after_result(call)
    if call.is_shadow_copy:
        return None
    return outcome.unwrap()


class LaneTask(DeliveredOnce):
    """The lane tasks' base: what a request deferred runs after its result is stored."""

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        """Called by Celery once the result is stored (success or failure)."""
        call = getattr(self.request, _CALL_ATTRIBUTE, None)
        if isinstance(call, LaneCall):
            Pipeline.run_after_result(call)


@shared_task(name=LANE_TASKS["v3"], bind=True, base=LaneTask, throws=CLIENT_ERRORS)
def v3_execute(
    self: Any, command: str, args: dict[str, Any] | None = None,
    session_id: str | None = None, **options: Any,
) -> Any:  # fmt: skip
    """Run ``command`` on the V3 lane."""
    report_lane(self.request, "v3")
    return run_lane(
        current_node(), "v3", self.request, command, args, session_id, options,
        after_result_later=True,
    )  # fmt: skip


@shared_task(name=LANE_TASKS["v2compat"], bind=True, base=LaneTask, throws=CLIENT_ERRORS)
def v2compat_execute(
    self: Any, command: str, args: dict[str, Any] | None = None,
    session_id: str | None = None, **options: Any,
) -> Any:  # fmt: skip
    """Run ``command`` on the V2-compat lane."""
    report_lane(self.request, "v2compat")
    return run_lane(
        current_node(), "v2compat", self.request, command, args, session_id, options,
        after_result_later=True,
    )  # fmt: skip
