from dataclasses import replace

import fakeredis
import pytest

from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.errors import CommandFailed, InvalidArguments
from snakepool.tasks.rollout.comparator import Comparator
from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.shadow import CommandCatalog, ShadowRecorder, outcome_of, should_shadow

OK = {"ok": True}
#: Shadow pairs are recorded under our request ids (uuid4().hex).
R1, R2 = "1" * 32, "2" * 32


@pytest.mark.parametrize(
    ("first", "second", "matches"),
    [
        ({**OK, "value": {"answer": "x", "pid": 1}}, {**OK, "value": {"answer": "x", "pid": 2}}, True),  # noqa: E501
        ({**OK, "value": {"result": 0.1 + 0.2}}, {**OK, "value": {"result": 0.3}}, True),
        ({**OK, "value": {"result": 0.3}}, {**OK, "value": {"result": 0.31}}, False),
        ({**OK, "value": [1, 2]}, {**OK, "value": [1, 2, 3]}, False),
        ({**OK, "value": {"a": 1}}, {**OK, "value": {"b": 1}}, False),
        ({**OK, "value": 1}, {**OK, "value": True}, False),
        ({"ok": False, "error": {"type": "InvalidArguments", "message": "a"}},
         {"ok": False, "error": {"type": "InvalidArguments", "message": "b"}}, True),
        ({"ok": False, "error": {"type": "InvalidArguments"}},
         {"ok": False, "error": {"type": "CommandFailed"}}, False),
        ({**OK, "value": 1}, {"ok": False, "error": {"type": "CommandFailed"}}, False),
    ],
)  # fmt: skip
def test_comparator_rules(first: dict, second: dict, matches: bool) -> None:
    diffs = Comparator().compare(first, second)
    assert (diffs == []) == matches, diffs


def test_recorder_compares_exactly_once_when_the_second_arrives() -> None:
    recorder = ShadowRecorder(fakeredis.FakeRedis(), prefix="t:")
    assert recorder.record(R1, "shadow", "v3", "calculate", outcome_of({"result": 2}, None)) is None
    assert (
        recorder.record(R1, "primary", "v2compat", "calculate", outcome_of({"result": 2}, None))
        == []
    )
    recorder.record(R2, "primary", "v3", "calculate", outcome_of({"result": 2}, None))
    diffs = recorder.record(R2, "shadow", "v2compat", "calculate",
                            outcome_of(None, InvalidArguments("no")))  # fmt: skip
    assert diffs and "failed" in diffs[0]
    assert recorder.counts() == {"compared": 2, "matched": 1, "mismatched": 1}
    mismatch = recorder.mismatches()[0]
    assert (
        mismatch["request_id"] == R2 and mismatch["shadow"]["error"]["type"] == "InvalidArguments"
    )
    assert mismatch["primary"]["value"] == {"result": 2} and mismatch["diff"] == diffs


def test_only_read_only_commands_are_shadowed() -> None:
    client = fakeredis.FakeRedis()
    client.hset("t:commands", mapping={"calculate": '{"read_only": true}',
                                      "create_program": '{"read_only": false}'})  # fmt: skip
    catalog = CommandCatalog(client, prefix="t:")
    on = RolloutFlags(shadow=True, shadow_rate=1.0)
    assert should_shadow(on, "calculate", catalog)
    assert not should_shadow(on, "create_program", catalog)
    assert not should_shadow(on, "unknown", catalog)
    assert not should_shadow(replace(on, shadow=False), "calculate", catalog)
    assert not should_shadow(replace(on, shadow_rate=0.0), "calculate", catalog)


def make_controller(**policy: object) -> tuple[RolloutController, FlagStore, LaneMetrics]:
    client = fakeredis.FakeRedis()
    flags, metrics = FlagStore(client, prefix="t:"), LaneMetrics(client, prefix="t:")
    settings = {"min_samples": 20, "bake_seconds": 0.0, **policy}
    return RolloutController(flags, metrics, ControllerPolicy(**settings)), flags, metrics


def feed(metrics: LaneMetrics, lane: str, count: int, *, errors: int = 0, client_errors: int = 0,
         ms: float = 5.0) -> None:  # fmt: skip
    for i in range(count):
        error = (CommandFailed("x") if i < errors
                 else InvalidArguments("y") if i < errors + client_errors else None)  # fmt: skip
        metrics.record(lane, ms / 1000, error)


def test_controller_never_starts_a_rollout() -> None:
    controller, _, metrics = make_controller()
    feed(metrics, "v3", 100)
    decision = controller.evaluate()
    assert decision.action == "hold" and "not started" in decision.reason
    assert controller.apply(decision) is None


def test_controller_promotes_a_healthy_baked_step() -> None:
    controller, flags, metrics = make_controller()
    flags.set_percent(10, who="ops", why="first step")
    feed(metrics, "v3", 30, client_errors=10)  # client errors are not V3's fault
    feed(metrics, "v2compat", 30)
    decision = controller.evaluate()
    assert decision.action == "promote" and decision.target == 25
    applied = controller.apply(decision)
    assert applied is not None and applied.percent == 25
    entry = flags.history(1)[0]
    assert entry["who"] == "controller" and entry["details"]["snapshot"]["v3"]["requests"] == 30


def test_controller_holds_while_baking_or_short_of_samples() -> None:
    controller, flags, metrics = make_controller(bake_seconds=3600)
    flags.set_percent(10, who="ops", why="first step")
    feed(metrics, "v3", 30)
    assert "baking" in controller.evaluate().reason
    controller, flags, metrics = make_controller()
    flags.set_percent(10, who="ops", why="first step")
    feed(metrics, "v3", 5)
    assert "only 5 V3 requests" in controller.evaluate().reason


@pytest.mark.parametrize(
    ("v3", "v2", "fragment"),
    [
        ({"count": 40, "errors": 10}, {"count": 40}, "over 5.0%"),
        ({"count": 40, "errors": 1, "ms": 50.0}, {"count": 40, "ms": 5.0}, "p99"),
    ],
)
def test_controller_rolls_back_and_pauses(v3: dict, v2: dict, fragment: str) -> None:
    controller, flags, metrics = make_controller(max_error_excess=0.5)
    flags.set_percent(50, who="ops", why="half")
    feed(metrics, "v3", v3.pop("count"), **v3)
    feed(metrics, "v2compat", v2.pop("count"), **v2)
    decision = controller.evaluate()
    assert decision.action == "rollback" and fragment in decision.reason
    applied = controller.apply(decision)
    assert applied is not None and applied.percent == 0 and applied.paused
    assert controller.evaluate().reason == "rollout not started (0 % to V3)"


def test_controller_rollback_to_previous_step() -> None:
    controller, flags, metrics = make_controller(rollback_to_previous=True)
    flags.set_percent(50, who="ops", why="half")
    feed(metrics, "v3", 40, errors=20)
    decision = controller.evaluate()
    assert decision.target == 25
    assert controller.apply(decision).percent == 25
