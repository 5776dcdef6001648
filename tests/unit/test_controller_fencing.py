"""Fencing the controller's changes (fakeredis): every lease acquisition has a larger
token, a flag change made under a token that is no longer current writes nothing, and a
controller refused that way goes back to standby."""

from __future__ import annotations

import threading
from dataclasses import replace

import fakeredis
import pytest

from snakepool.config.flags import FlagStore
from snakepool.errors import StaleFence
from snakepool.tasks.rollout.controller import ControllerPolicy, Decision, RolloutController
from snakepool.tasks.rollout.lease import ControllerLease
from snakepool.tasks.rollout.metrics import LaneMetrics

pytestmark = pytest.mark.timeout(60)


def lease(client: fakeredis.FakeRedis, holder: str) -> ControllerLease:
    return ControllerLease(client, prefix="f:", holder=holder, ttl=30)


def test_every_acquisition_gets_a_larger_token() -> None:
    client = fakeredis.FakeRedis()
    a, b = lease(client, "a"), lease(client, "b")
    assert a.acquire() and a.token is not None
    first = a.token
    assert a.acquire() and a.token == first  # a renewal keeps the token
    assert not b.acquire() and b.token is None
    assert a.release() and a.token is None
    assert b.acquire() and b.token is not None and b.token > first
    second = b.token
    client.delete(b.key)  # what its TTL does when b stops renewing
    assert a.acquire() and a.token is not None and a.token > second
    assert not b.acquire() and b.token is None  # b's renewal finds a's lease: not b's


def test_a_fenced_change_applies_only_while_its_lease_is_current() -> None:
    client = fakeredis.FakeRedis()
    flags = FlagStore(client, prefix="f:")
    a, b = lease(client, "a"), lease(client, "b")
    assert a.acquire()
    fence = a.fence()
    flags.set_percent(10, who="ops", why="first")
    flags.update(lambda f: replace(f, percent=25), who="controller", why="up", fence=fence)
    assert flags.read().percent == 25
    client.delete(a.key)  # a paused past its lease ...
    assert b.acquire()  # ... and b took over
    version, entries = flags.version(), len(flags.history(100))
    with pytest.raises(StaleFence, match=f"token {fence.token} is stale") as refused:
        flags.update(lambda f: replace(f, percent=50), who="controller", why="up", fence=fence)
    assert refused.value.token == fence.token
    assert (flags.read().percent, flags.version()) == (25, version)  # nothing written
    assert len(flags.history(100)) == entries  # and nothing audited
    # The same lease holder id with an older token is refused too (a's new acquisition
    # after b would carry a new token; the old one stays stale).
    client.delete(b.key)
    assert a.acquire() and a.token != fence.token
    with pytest.raises(StaleFence):
        flags.update(lambda f: replace(f, percent=0), who="controller", why="old", fence=fence)
    # Writers without a fence are unchanged: operators, the CLI, the client.
    assert flags.set_percent(5, who="ops", why="by hand").percent == 5


def test_the_audit_entry_records_the_token() -> None:
    client = fakeredis.FakeRedis()
    flags, metrics = FlagStore(client, prefix="f:"), LaneMetrics(client, prefix="f:")
    controller = RolloutController(flags, metrics, ControllerPolicy(min_samples=1))
    flags.set_percent(10, who="ops", why="first")
    a = lease(client, "a")
    assert a.acquire()
    decision = Decision("rollback", "test", {"v3": {}}, 0)
    controller.apply(decision, acting="a", fence=a.fence())
    details = flags.history(1)[0]["details"]
    assert (details["controller"], details["fence"]) == ("a", a.token)


def test_a_controller_that_paused_past_its_lease_is_refused_and_stands_by() -> None:
    """It decides, 'pauses' (the lease is taken over meanwhile), then applies: refused."""
    client = fakeredis.FakeRedis()
    flags, metrics = FlagStore(client, prefix="f:"), LaneMetrics(client, prefix="f:")
    controller = RolloutController(
        flags, metrics, ControllerPolicy(min_samples=5, bake_seconds=0, schedule=(10, 25))
    )
    flags.set_percent(10, who="ops", why="first")
    for _ in range(10):
        metrics.record("v3", 0.002, None)
    mine, other = lease(client, "mine"), lease(client, "other")
    decide = controller.evaluate

    def evaluate_then_pause(now: float | None = None) -> Decision:
        decision = decide(now)
        assert decision.action == "promote"
        client.delete(mine.key)  # the pause outlived the lease
        assert other.acquire()  # another controller took over and acted
        flags.rollback(who="controller", why="other acted", details={"controller": "other"})
        return decision

    controller.evaluate = evaluate_then_pause  # type: ignore[method-assign]
    said: list[str] = []
    stop = threading.Event()

    def announce(message: str) -> None:
        said.append(message)
        if message.startswith("standby"):
            stop.set()

    controller.run(interval=0.01, stop=stop, lease=mine, announce=announce)
    assert said[0].startswith("acting: controller mine")
    assert said[1].startswith("refused: fencing token") and "standing by" in said[1]
    assert said[2].startswith("standby: controller other is acting")
    assert (flags.read().percent, flags.read().paused) == (0, True)  # the other's rollback
    assert not any(e["details"].get("controller") == "mine" for e in flags.history(100))
    assert other.current() == "other"  # the refused one did not release the other's lease
