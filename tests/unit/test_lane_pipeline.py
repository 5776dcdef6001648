"""The lane pipeline on a node backed by fakeredis and a stand-in pool (no processes).

What must hold: validate → run → retries → metrics → shadow → V2 classification, in that
order; a step that fails (a Redis error while recording, a bug) is logged and never
changes what the caller gets; every failure is counted, a non-snakepool exception as a
server error by its type; caller options are only ``timeout``.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from snakepool.config import load_settings
from snakepool.errors import (
    CommandFailed,
    InvalidArguments,
    SnakepoolError,
    UnknownCommand,
    WorkerCrashed,
)
from snakepool.tasks.rollout.shadow import outcome_of
from snakepool.tasks.worker.lanes import run_lane
from snakepool.tasks.worker.node import Node
from snakepool.tasks.worker.observer import LaneObserver
from snakepool.tasks.worker.options import SHADOW_HEADER, ShadowTag
from snakepool.tasks.worker.pipeline import LaneCall, LaneStep, Outcome, Pipeline
from snakepool.tasks.worker.pipeline import retries as retries_module

PAIR = "0123456789abcdef" * 2


class StandInPool:
    """What the lanes use of a Pool: execute() and commands()."""

    def __init__(self, behaviour: Callable[[str, dict[str, Any]], Any]) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[str, dict[str, Any], float | None]] = []

    def execute(self, command: str, args: dict[str, Any], **call: Any) -> Any:
        self.calls.append((command, args, call.get("timeout")))
        return self.behaviour(command, args)

    def commands(self) -> dict[str, dict[str, bool]]:
        return {
            "ping": {"read_only": True, "idempotent": True},
            "flaky": {"read_only": False, "idempotent": True},
            "unsafe": {"read_only": False, "idempotent": False},
        }


def answer(command: str, args: dict[str, Any]) -> Any:
    if command == "ping":
        return {"pong": True}
    if command == "fail":
        raise CommandFailed("it failed", remote_type="ValueError")
    if command == "bug":
        raise RuntimeError("not a snakepool error")
    if command == "bad":
        raise InvalidArguments("bad args")
    raise UnknownCommand(f"unknown command {command!r}")


@pytest.fixture
def node() -> Node:
    settings = load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}", request_timeout=30)
    node = Node(settings, name="unit@test", lanes=("v3", "v2compat"))
    node.pool = StandInPool(answer)  # type: ignore[assignment]
    return node


def request(task_id: str = "t-1", tag: Any = None) -> SimpleNamespace:
    return SimpleNamespace(id=task_id, headers={SHADOW_HEADER: tag} if tag is not None else None)


def run(node: Node, command: Any, lane: str = "v3", req: Any = None, **options: Any) -> Any:
    return run_lane(node, lane, req or request(), command, None, None, options)


def counts(node: Node, lane: str = "v3") -> dict[str, Any]:
    return node.metrics.summary(lane)


def break_metrics(node: Node, lane: str = "v3") -> None:
    """A real Redis error on recording: the lane's counters key holds the wrong type."""
    node.redis.set(node.keys.lane_metrics(lane), "not a hash")


# ------------------------------------------------------------------ observability


class StepFailures(LaneObserver):
    """Records what the pipeline reports of its failing steps."""

    def __init__(self) -> None:
        self.failed: list[tuple[str, str]] = []

    def on_step_failure(self, lane: str, step: str) -> None:
        self.failed.append((lane, step))


@pytest.mark.parametrize(
    ("command", "expected"),
    [("ping", {"pong": True}), ("fail", CommandFailed), ("bug", RuntimeError)],
)
def test_a_redis_error_while_recording_metrics_never_changes_the_outcome(
    node: Node, command: str, expected: Any, caplog: pytest.LogCaptureFixture
) -> None:
    break_metrics(node)
    if isinstance(expected, dict):
        assert run(node, command) == expected
    else:
        with pytest.raises(expected):
            run(node, command)
    failed = [r for r in caplog.records if "RecordMetrics.after failed" in r.getMessage()]
    assert failed and failed[0].exc_info and failed[0].exc_info[0] is redis.ResponseError


def test_every_failing_step_is_counted_by_lane_and_step(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("Redis down")

    node.observer = seen = StepFailures()
    break_metrics(node)  # read after the result: RecordMetrics.after's deferred work
    monkeypatch.setattr(node.shadows, "record", down)  # the shadow copy records at once
    assert run(node, "ping") == {"pong": True}
    shadow_copy = request(ShadowTag("shadow", PAIR).task_id, {"role": "shadow", "pair": PAIR})
    assert run(node, "ping", lane="v2compat", req=shadow_copy) is None
    assert seen.failed == [("v3", "RecordMetrics"), ("v2compat", "RecordShadow")]


def test_an_unreachable_metrics_redis_never_changes_the_outcome(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("Error 111 connecting to metrics")

    monkeypatch.setattr(node.metrics, "record", unreachable)
    assert run(node, "ping") == {"pong": True}
    with pytest.raises(UnknownCommand):
        run(node, "nope")


def test_a_failing_shadow_record_never_changes_the_primary(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("shadow Redis down")

    monkeypatch.setattr(node.shadows, "record", down)
    primary = request(PAIR, {"role": "primary", "pair": PAIR})
    assert run(node, "ping", req=primary) == {"pong": True}
    with pytest.raises(CommandFailed):
        run(node, "fail", req=primary)
    assert counts(node)["requests"] == 2  # the metrics step still ran


def test_an_unexpected_exception_is_counted_as_a_server_error_by_type(node: Node) -> None:
    with pytest.raises(RuntimeError, match="not a snakepool error"):
        run(node, "bug")
    with pytest.raises(CommandFailed):
        run(node, "fail")
    assert run(node, "ping") == {"pong": True}
    with pytest.raises(InvalidArguments):
        run(node, "bad")
    figures = counts(node)
    assert (figures["requests"], figures["errors"], figures["client_errors"]) == (4, 2, 1)
    assert figures["error_types"] == {"CommandFailed": 1, "InvalidArguments": 1, "RuntimeError": 1}
    assert node.metrics.window("v3", 60) == {"requests": 4, "errors": 2}


class Explodes(LaneStep):
    def __init__(self, hook: str) -> None:
        self.hook = hook

    def before(self, call: LaneCall) -> SnakepoolError | None:
        if self.hook == "before":
            raise RuntimeError("step bug")
        return None

    def after(self, call: LaneCall, outcome: Outcome) -> float | None:
        if self.hook == "after":
            raise redis.ConnectionError("step lost Redis")
        return None


@pytest.mark.parametrize("hook", ["before", "after"])
@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("behaviour", ["ok", "typed", "bug"])
def test_any_step_failing_anywhere_leaves_the_outcome_as_the_command_made_it(
    node: Node, hook: str, position: int, behaviour: str
) -> None:
    def command(call: LaneCall) -> Any:
        if behaviour == "typed":
            raise WorkerCrashed("died", exit_code=9)
        if behaviour == "bug":
            raise KeyError("bug")
        return {"value": 42}

    steps: list[LaneStep] = [LaneStep(), LaneStep()]
    steps.insert(position, Explodes(hook))
    call = LaneCall(node=node, lane="v3", command="x", args={}, session_id=None, options={})
    outcome = Pipeline(steps).run(call, command)
    if behaviour == "ok":
        assert (outcome.result, outcome.error) == ({"value": 42}, None)
    else:
        assert type(outcome.error) is (WorkerCrashed if behaviour == "typed" else KeyError)


def test_a_failing_guard_refuses_the_request_and_never_runs_it_unchecked(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenCheck(LaneStep):
        guard = True

        def before(self, call: LaneCall) -> SnakepoolError | None:
            raise RuntimeError("validation bug")

    ran: list[LaneCall] = []
    call = LaneCall(node=node, lane="v3", command="x", args={}, session_id=None, options={})
    outcome = Pipeline([LaneStep(), BrokenCheck(), Explodes("before")]).run(call, ran.append)
    assert ran == []
    assert outcome.refused and type(outcome.error) is SnakepoolError
    assert outcome.error.step == "BrokenCheck" and not outcome.error.is_client_error
    assert any("BrokenCheck.before failed" in r.getMessage() for r in caplog.records)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("shape", ["deep", "wide"])
@pytest.mark.parametrize("where", ["command", "session_id", "timeout", "program_id"])
def test_a_hostile_value_is_refused_briefly_never_run(node: Node, where: str, shape: str) -> None:
    """Validation used to fail with RecursionError quoting a deeply nested value in its
    refusal; the pipeline took that as "no opinion" and ran the request unchecked. A wide
    one was quoted whole: megabytes of error message, in the logs and the stored result."""
    pool = node.pool
    assert isinstance(pool, StandInPool)
    value = _nested(sys.getrecursionlimit() + 50) if shape == "deep" else list(range(10**5))
    session_id = node.store.create(ttl=60) if where == "program_id" else None
    call = {"command": "ping", "args": None, "session_id": session_id, "options": {}}
    if where == "program_id":
        call.update(command="execute_program", args={"program_id": value})
    elif where == "timeout":
        call["options"] = {"timeout": value}
    else:
        call[where] = value
    with pytest.raises(InvalidArguments) as refused:
        run_lane(node, "v3", request(), call["command"], call["args"], call["session_id"],
                 call["options"])  # fmt: skip
    assert len(str(refused.value)) < 200
    assert pool.calls == []
    assert (counts(node)["client_errors"], counts(node)["errors"]) == (1, 0)


def test_hooks_run_in_order_before_and_in_reverse_after(node: Node) -> None:
    seen: list[str] = []

    class Named(LaneStep):
        def __init__(self, name: str) -> None:
            self.name = name

        def before(self, call: LaneCall) -> SnakepoolError | None:
            seen.append(f"before {self.name}")
            return None

        def after(self, call: LaneCall, outcome: Outcome) -> float | None:
            seen.append(f"after {self.name}")
            return None

    call = LaneCall(node=node, lane="v3", command="x", args={}, session_id=None, options={})
    Pipeline([Named("a"), Named("b")]).run(call, lambda _: seen.append("run"))
    assert seen == ["before a", "before b", "run", "after b", "after a"]


# ------------------------------------------------------------------ the steps


def test_retries_rerun_only_idempotent_commands_and_count_the_request_once(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retries_module, "RETRY_BASE_SECONDS", 0.0)
    attempts = {"flaky": 0, "unsafe": 0}

    def crash_twice(command: str, args: dict[str, Any]) -> Any:
        attempts[command] += 1
        if attempts[command] <= 2:
            raise WorkerCrashed("died", exit_code=9)
        return {"attempt": attempts[command]}

    node.pool = StandInPool(crash_twice)  # type: ignore[assignment]
    assert run(node, "flaky") == {"attempt": 3}
    with pytest.raises(WorkerCrashed):
        run(node, "unsafe")
    assert attempts == {"flaky": 3, "unsafe": 1}
    assert counts(node)["requests"] == 2 and counts(node)["errors"] == 1


def test_v2compat_errors_are_classified_and_v3_errors_are_not(node: Node) -> None:
    with pytest.raises(UnknownCommand) as on_v2:
        run(node, "nope", lane="v2compat")
    assert (on_v2.value.v2_category, on_v2.value.severity) == ("validation_error", "info")
    with pytest.raises(UnknownCommand) as on_v3:
        run(node, "nope", lane="v3")
    assert "v2_category" not in on_v3.value.data


def test_validation_refuses_before_anything_runs_and_counts_a_client_error(node: Node) -> None:
    pool = node.pool
    assert isinstance(pool, StandInPool)
    for command, args, session_id in ((None, None, None), ("ping", [1], None),
                                      ("ping", None, "session-1\n")):  # fmt: skip
        with pytest.raises(InvalidArguments):
            run_lane(node, "v3", request(), command, args, session_id, {})
    assert pool.calls == []
    assert counts(node)["client_errors"] == 3 and counts(node)["errors"] == 0


def test_timeout_is_the_only_option_and_is_bounded_by_request_timeout(node: Node) -> None:
    pool = node.pool
    assert isinstance(pool, StandInPool)
    assert run(node, "ping", timeout=2) == {"pong": True}
    assert pool.calls[-1][2] == 2.0
    for bad in (0, -1, 31, float("nan"), float("inf"), True, "5", 10**400, -(2**1024)):
        with pytest.raises(InvalidArguments, match="timeout"):
            run(node, "ping", timeout=bad)
    with pytest.raises(InvalidArguments, match="unknown option"):
        run(node, "ping", shadow_role="shadow")
    assert len(pool.calls) == 1  # review 8: timeout=10**400 ran (OverflowError: no opinion)


def test_validation_that_fails_refuses_the_request(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 8: the runner takes a hook's exception as "no opinion"; for Validate that
    ran the request unchecked. It fails closed."""
    pool = node.pool
    assert isinstance(pool, StandInPool)

    def broken(session_id: object) -> str:
        raise RuntimeError("a bug in a check")

    monkeypatch.setattr("snakepool.tasks.worker.pipeline.validate.checked_session_id", broken)
    with pytest.raises(InvalidArguments, match=r"could not be checked \(RuntimeError\)"):
        run_lane(node, "v3", request(), "ping", {}, "session-1", {})
    assert pool.calls == []


def test_caller_options_never_touch_shadow_keys(node: Node) -> None:
    """Issue 8.8: ``shadow_id="counts"`` used to delete ``shadow:counts``."""
    node.redis.hset(node.keys.shadow_counts, mapping={"compared": 7, "matched": 7})
    before = node.redis.hgetall(node.keys.shadow_counts)
    with pytest.raises(InvalidArguments, match="unknown option"):
        run(node, "ping", shadow_id="counts", shadow_role="primary")
    with pytest.raises(InvalidArguments, match="unknown option"):
        run(node, "fail", shadow_role="shadow")  # no longer a None result
    assert node.redis.hgetall(node.keys.shadow_counts) == before


@pytest.mark.parametrize(
    "tag",
    [
        {"role": "shadow", "pair": "counts"},  # would name shadow:counts
        {"role": "shadow", "pair": PAIR + "\n"},  # a final newline is not a full match
        {"role": "shadow", "pair": PAIR},  # valid pair, but not this task's id
        {"role": "boss", "pair": PAIR},
        "shadow",
        ["shadow", PAIR],
    ],
)
def test_a_forged_shadow_tag_is_ignored(node: Node, tag: Any) -> None:
    node.redis.hset(node.keys.shadow_counts, "compared", 3)
    with pytest.raises(CommandFailed):  # the typed error, not a swallowed None
        run(node, "fail", req=request("some-task", tag))
    assert node.redis.hgetall(node.keys.shadow_counts) == {b"compared": b"3"}
    assert node.redis.keys(f"{node.keys.prefix}shadow:*") == [node.keys.shadow_counts.encode()]


def test_our_shadow_pair_is_recorded_and_compared(node: Node) -> None:
    shadow_copy = request(ShadowTag("shadow", PAIR).task_id, {"role": "shadow", "pair": PAIR})
    assert run(node, "fail", lane="v2compat", req=shadow_copy) is None  # result goes nowhere
    with pytest.raises(CommandFailed):
        run(node, "fail", req=request(PAIR, {"role": "primary", "pair": PAIR}))
    assert node.shadows.counts() == {"compared": 1, "matched": 1, "mismatched": 0}
    assert outcome_of(None, CommandFailed("x"))["error"]["type"] == "CommandFailed"
