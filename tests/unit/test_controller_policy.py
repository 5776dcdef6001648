"""The controller's policy from settings, its schedule, and the lease (fakeredis)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import fakeredis
import pytest

from snakepool.config import load_settings
from snakepool.config.flags import FlagStore
from snakepool.errors import CommandFailed
from snakepool.tasks.rollout.controller import ControllerPolicy, RolloutController
from snakepool.tasks.rollout.lease import ControllerLease, controller_id
from snakepool.tasks.rollout.metrics import LaneMetrics


def make(policy: ControllerPolicy) -> tuple[RolloutController, FlagStore, LaneMetrics]:
    client = fakeredis.FakeRedis()
    flags, metrics = FlagStore(client, prefix="t:"), LaneMetrics(client, prefix="t:")
    return RolloutController(flags, metrics, policy), flags, metrics


def feed(metrics: LaneMetrics, lane: str, count: int, errors: int = 0) -> None:
    for i in range(count):
        metrics.record(lane, 0.005, CommandFailed("x") if i < errors else None)


def test_policy_from_settings_takes_every_rollout_setting() -> None:
    settings = load_settings(
        rollout_window=30, rollout_min_samples=7, rollout_max_error_rate=0.2,
        rollout_max_error_excess=0.1, rollout_max_p99_ratio=4.5, rollout_bake_seconds=45,
        rollout_rollback_to="previous", rollout_schedule="20,60,100",
    )  # fmt: skip
    assert ControllerPolicy.from_settings(settings) == ControllerPolicy(
        window_seconds=30, min_samples=7, max_error_rate=0.2, max_error_excess=0.1,
        max_p99_ratio=4.5, bake_seconds=45, rollback_to_previous=True, schedule=(20, 60, 100),
    )  # fmt: skip
    assert not ControllerPolicy.from_settings(load_settings()).rollback_to_previous


def test_the_controller_promotes_along_its_own_schedule() -> None:
    controller, flags, metrics = make(
        ControllerPolicy(min_samples=5, bake_seconds=0, schedule=(20, 60))
    )
    flags.set_percent(5, who="ops", why="first")  # not on the schedule: the next step above
    feed(metrics, "v3", 10)
    decision = controller.evaluate()
    assert (decision.action, decision.target) == ("promote", 20)
    assert controller.apply(decision, acting="c-1").percent == 20  # type: ignore[union-attr]
    assert flags.history(1)[0]["details"]["controller"] == "c-1"
    flags.set_percent(60, who="ops", why="last step")
    decision = controller.evaluate()
    assert decision.action == "hold" and "last step" in decision.reason
    assert controller.apply(decision) is None and flags.read().percent == 60


@pytest.mark.parametrize(("to_previous", "expected"), [(False, 0), (True, 20)])
def test_a_rollback_goes_where_the_policy_says_and_pauses(to_previous: bool, expected: int) -> None:
    controller, flags, metrics = make(
        ControllerPolicy(min_samples=5, schedule=(20, 60, 100), rollback_to_previous=to_previous)
    )
    flags.set_percent(60, who="ops", why="up")
    feed(metrics, "v3", 20, errors=10)
    decision = controller.evaluate()
    assert (decision.action, decision.target) == ("rollback", expected)
    applied = controller.apply(decision)
    assert applied is not None and (applied.percent, applied.paused) == (expected, True)
    assert applied.previous_percent == 60


# ------------------------------------------------------------------ the lease


def test_one_holder_at_a_time_and_release_hands_over() -> None:
    client = fakeredis.FakeRedis()
    first = ControllerLease(client, prefix="t:", holder="a", ttl=5)
    second = ControllerLease(client, prefix="t:", holder="b", ttl=5)
    assert first.acquire() and first.acquire()  # taken, then renewed
    assert not second.acquire() and second.current() == "a"
    assert not second.release() and first.current() == "a"  # not b's to give up
    assert first.release() and first.current() is None
    assert second.acquire() and not first.acquire() and first.current() == "b"


def test_an_expired_lease_goes_to_the_next_one_that_asks() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    first = ControllerLease(client, prefix="t:", holder="a", ttl=5)
    second = ControllerLease(client, prefix="t:", holder="b", ttl=5)
    assert first.acquire()
    client.delete(first.key)  # what its TTL does when "a" stops renewing
    assert second.acquire() and not first.acquire()  # "a" cannot take it back by renewing
    assert 0 < client.pttl(second.key) <= 5000


def test_controller_ids_are_unique() -> None:
    assert len({controller_id() for _ in range(50)}) == 50


def test_run_acts_only_while_holding_the_lease() -> None:
    controller, flags, metrics = make(ControllerPolicy(min_samples=5, bake_seconds=0))
    client = flags.client
    flags.set_percent(1, who="ops", why="first")
    feed(metrics, "v3", 10)
    other = ControllerLease(client, prefix="t:", holder="other", ttl=30)
    assert other.acquire()
    mine = ControllerLease(client, prefix="t:", holder="mine", ttl=30)
    said: list[str] = []
    stop = threading.Event()

    def announce(message: str) -> None:
        said.append(message)
        if len(said) == 1:
            assert message.startswith("standby: controller other is acting")
            other.release()  # the acting one stops: this one takes over at its next try
        else:
            stop.set()

    controller.run(interval=0.01, stop=stop, lease=mine, announce=announce)
    assert said[1].startswith("acting: controller mine")
    assert mine.current() is None  # given up on the way out
    entry = flags.history(1)[0]
    assert entry["who"] == "controller" and entry["details"]["controller"] == "mine"
    assert flags.read().percent == 5


def test_controller_once_acts_only_without_another_acting(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from snakepool.sessions import redis_from_url
    from snakepool.tasks.cli import main

    url = "fakeredis://controller-once"
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", url)
    client = redis_from_url(url)
    client.flushall()
    FlagStore(client).set_percent(10, who="ops", why="first")
    feed(LaneMetrics(client), "v3", 60)
    other = ControllerLease(client, holder="other-controller", ttl=30)
    assert other.acquire()
    options = ["controller", "--once", "--bake", "60"]
    standby = CliRunner().invoke(main, options)
    assert standby.exit_code == 0, standby.output
    assert "standby: controller other-controller is acting" in standby.output
    assert FlagStore(client).read().percent == 10  # it did not act
    other.release()
    acted = CliRunner().invoke(main, [*options, "--bake", "0", "--min-samples", "5"])
    assert acted.exit_code == 2 and "ROLLOUT_BAKE_SECONDS" in acted.output  # bake < window
    store = FlagStore(client)  # the step has run for a while: 5 s ago
    aged = replace(store.read(), updated_at=time.time() - 5)
    client.set(store.keys.rollout, json.dumps(aged.to_dict()))
    with monkeypatch.context() as env:
        env.setenv("SNAKEPOOL_ROLLOUT_WINDOW", "2")  # this second and the last
        feed(LaneMetrics(client), "v3", 10)
        acted = CliRunner().invoke(main, [*options, "--bake", "2", "--min-samples", "5"])
    assert acted.exit_code == 0, acted.output
    assert "promote" in acted.output and FlagStore(client).read().percent == 25
    assert ControllerLease(client, holder="x", ttl=1).current() is None  # given back
