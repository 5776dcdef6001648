"""A dead node's messages back on their queues; poison dead-lettered (issue 9 items 1, 3, 4).

Real redis-server and kombu's key layout, no worker processes (see ``held.py``): a
"node" takes messages as kombu does and records them as the bootstep does, then stops
beating; a survivor's :class:`~snakepool.tasks.worker.recovery.sweep.Recovery` settles
them. The same code runs on real nodes in ``test_node_deaths.py``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from celery.result import AsyncResult
from celery.utils.nodenames import worker_direct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snakepool.config.limits import DEAD_LETTER_TTL
from snakepool.errors import DeadLettered
from snakepool.tasks.worker import pop_scripts
from snakepool.tasks.worker.inflight_entry import entry_fields
from snakepool.tasks.worker.recovery import sweep as sweep_module
from tests.integration.held import World, world
from tests.integration.test_redis_bounds import _documented_patterns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(30),
    # Celery's Redis result backend (which stores DeadLettered here, in this process)
    # still calls redis-py's deprecated setex.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]


@pytest.fixture
def w(redis_url: str) -> Iterator[World]:
    with world(redis_url) as made:
        yield made


def test_a_dead_nodes_messages_go_back_to_their_queue_redelivered(w: World) -> None:
    first, second, third = (w.send("echo", {"n": n}) for n in range(3))
    node = w.node()
    running = w.take(node)  # started: its death counts against it
    waiting = w.take(node, start=False)  # only prefetched: it did not kill the node
    assert w.client.hlen(w.broker.unacked_key) == 2
    w.wait_dead(node)
    report = w.recovery.sweep()
    assert [r.node for r in report.recovered] == ["v3-dead@host"]
    assert sorted(report.recovered[0].restored) == sorted([first, second])
    assert w.client.hlen(w.broker.unacked_key) == 0
    assert w.client.zcard(w.broker.unacked_index_key) == 0
    queued = w.queued("v3")
    # Restored at the head of the line in the order they were taken; the untouched one last.
    assert [m["headers"]["id"] for m in queued] == [first, second, third]
    for message in queued[:2]:
        assert message["headers"]["redelivered"] is True
        assert message["properties"]["delivery_info"]["redelivered"] is True
    assert "redelivered" not in queued[2]["headers"]
    assert {m["properties"]["delivery_tag"] for m in queued[:2]} == {running, waiting}
    # Only the started delivery counts as a death.
    assert w.client.llen(w.keys.deaths(first)) == 1
    assert not w.client.exists(w.keys.deaths(second))
    # The dead incarnation is forgotten; a second sweep finds nothing more.
    assert not w.client.exists(node.key)
    assert w.client.zscore(w.keys.inflight_index, node.incarnation) is None
    assert w.recovery.sweep().recovered == []
    assert len(w.queued("v3")) == 3


def test_what_a_dead_nodes_reliable_pop_held_goes_back_uncounted(w: World) -> None:
    first, second, third = (w.send("echo", {"n": n}) for n in range(3))
    node = w.node()
    running = w.take(node)
    processing = w.keys.processing(node.incarnation)
    # Its pop moved the next two onto its processing list (BLMOVE's end), then it died.
    for _ in range(2):
        w.client.lmove("v3", processing, "RIGHT", "LEFT")
    w.client.expire(processing, 60)
    assert w.client.llen("v3") == 0
    w.wait_dead(node)
    report = w.recovery.sweep()
    assert sorted(report.recovered[0].restored) == sorted([first, second, third])
    # The oldest first; those never delivered are neither counted nor marked redelivered.
    queued = w.queued("v3")
    assert [m["headers"]["id"] for m in queued] == [first, second, third]
    assert all("redelivered" not in m["headers"] for m in queued[1:])
    assert not w.client.exists(w.keys.deaths(second))
    assert w.client.llen(w.keys.deaths(first)) == 1
    assert not w.client.exists(processing) and not w.client.exists(node.key)
    assert running in {m["properties"]["delivery_tag"] for m in queued}


def test_a_late_nodes_processing_list_is_left_alone(w: World) -> None:
    sent = w.send("echo", {"n": 1})
    node = w.node()
    processing = w.keys.processing(node.incarnation)
    w.client.lmove("v3", processing, "RIGHT", "LEFT")
    w.wait_dead(node)
    node.ttl = 30
    node.beat()  # late, not dead: it may be delivering that message right now
    assert w.recovery._unpop_all(node.incarnation) == []
    assert w.client.lrange(processing, 0, -1) and w.client.llen("v3") == 0
    assert sent


def test_the_broker_may_be_another_redis_than_the_store(redis_url: str) -> None:
    broker_url = redis_url.rsplit("/", 1)[0] + "/1"
    with world(redis_url, broker_url=broker_url, threshold=1) as w:
        assert w.client.connection_pool.connection_kwargs["db"] == 1
        task_id = w.send("kill_node")
        direct = w.send("echo", task="snakepool.v2compat.execute", queue=worker_direct("v2@h"))
        node = w.node()
        w.take(node)
        w.wait_dead(node)
        report = w.recovery.sweep()
        assert report.recovered[0].dead_lettered == [task_id] and report.drained == 1
        assert [m["headers"]["id"] for m in w.queued("v2compat")] == [direct]
        with pytest.raises(DeadLettered):  # the result backend is REDIS_URL's
            AsyncResult(task_id, app=w.app).get(timeout=5)
        assert w.heartbeats.keys("snakepool:deadletter*") == []  # the broker holds them


def test_a_live_node_is_left_alone(w: World) -> None:
    w.send("echo")
    node = w.node(ttl=30)
    w.take(node)
    assert w.recovery.dead() == []
    assert w.recovery.sweep().recovered == []
    assert w.client.hlen(w.broker.unacked_key) == 1 and w.client.llen("v3") == 0


def test_a_later_delivery_of_the_same_message_elsewhere_is_never_taken(w: World) -> None:
    task_id = w.send("echo")
    dead = w.node("v3-dead@host")
    tag = w.take(dead)
    # kombu restored it meanwhile (visibility timeout) and another node took it again.
    raw = w.client.hget(w.broker.unacked_key, tag)
    w.client.hdel(w.broker.unacked_key, tag)
    w.client.zrem(w.broker.unacked_index_key, tag)
    w.client.lpush("v3", json.dumps(json.loads(raw)[0]))
    time.sleep(0.01)  # a later receipt time: another delivery
    alive = w.node("v3-alive@host", ttl=30)
    assert w.take(alive) == tag
    w.wait_dead(dead)
    report = w.recovery.sweep()
    assert report.recovered[0].restored == [] and report.recovered[0].skipped == 1
    assert w.client.hexists(w.broker.unacked_key, tag)  # still the live node's
    assert w.client.llen("v3") == 0
    assert not w.client.exists(w.keys.deaths(task_id))


def test_acknowledged_and_pruned_messages_are_not_restored(w: World) -> None:
    w.send("echo")
    w.send("echo")
    node = w.node()
    done = w.take(node)
    held = w.take(node)
    # The first is acknowledged as kombu does, without a task_postrun (a revoke, say).
    w.client.hdel(w.broker.unacked_key, done)
    w.client.zrem(w.broker.unacked_index_key, done)
    assert node.prune() == [done]
    assert set(node.held()) == {held}
    assert set(w.client.hkeys(node.key)) == {b"~node", held.encode()}
    node.finished(held)
    assert node.held() == {}  # reads the replies sent without waiting: the HDEL is in
    assert set(w.client.hkeys(node.key)) == {b"~node"}


def test_a_message_accept_recorded_and_acknowledged_without_finishing_is_forgotten(
    w: World,
) -> None:
    """The reliable pop's ACCEPT writes the entry and the ack's MULTI removes it; a
    message acknowledged with no ``finished`` (revoked once received, say) is out of
    Redis at once, so no prune script sees it: the node still forgot it for good."""
    w.send("echo")
    w.send("echo")
    node = w.node()
    tags = []
    for _ in range(2):
        raw = w.client.rpop("v3")
        assert raw is not None
        message = json.loads(raw)
        info, tag = message["properties"]["delivery_info"], message["properties"]["delivery_tag"]
        value = json.dumps([message, info["exchange"], info["routing_key"]])
        w.client.lpush(node.processing, raw)
        score = w.client.eval(
            pop_scripts.ACCEPT, 4, w.broker.unacked_index_key, w.broker.unacked_key,
            node.processing, node.key, tag, repr(time.time()), value, raw,
            entry_fields(message["headers"]["id"], "snakepool.v3.execute", "v3", time.time()),
        )  # fmt: skip
        node.received(tag, task_id=message["headers"]["id"], task="snakepool.v3.execute",
                      queue="v3", score=score.decode())  # fmt: skip
        tags.append(tag)
    revoked, running = tags
    node.started(running)
    with w.client.pipeline() as pipe:  # kombu's ack, with broker.QoS's HDEL
        pipe.zrem(w.broker.unacked_index_key, revoked).hdel(w.broker.unacked_key, revoked)
        pipe.hdel(node.key, revoked).execute()
    assert node.prune() == []
    assert set(node.held()) == {running}  # a started one waits for its task_postrun
    node.finished(running)
    assert node.held() == {}


@pytest.mark.parametrize("threshold", [1, 2, 3])
def test_poison_is_dead_lettered_after_exactly_threshold_deaths(
    redis_url: str, threshold: int
) -> None:
    with world(redis_url, threshold=threshold) as w:
        task_id = w.send("kill_node", {"x": 1})
        nodes = [f"v3-{n}@host" for n in range(threshold)]
        for n, name in enumerate(nodes, start=1):
            node = w.node(name)
            w.take(node)
            w.wait_dead(node)
            report = w.recovery.sweep()
            if n < threshold:
                assert report.recovered[0].restored == [task_id]
                assert w.client.llen(w.keys.deaths(task_id)) == n
                assert AsyncResult(task_id, app=w.app).state == "PENDING"
            else:
                assert report.recovered[0].dead_lettered == [task_id]
                assert report.reported == 1
        assert w.client.llen("v3") == 0 and w.client.hlen(w.broker.unacked_key) == 0
        # The caller gets the typed error, rebuilt from Celery's JSON result backend.
        with pytest.raises(DeadLettered) as caught:
            AsyncResult(task_id, app=w.app).get(timeout=5)
        error = caught.value
        assert (error.category, error.retryable, error.is_client_error) == ("client", False, True)
        assert error.deliveries == threshold and error.nodes == nodes
        assert error.task_id == task_id and error.threshold == threshold
        letter = w.dead_letters.get(task_id)
        assert letter is not None and letter.nodes == nodes
        assert letter.meta["command"] == "kill_node" and letter.meta["queue"] == "v3"
        assert [d["node"] for d in letter.describe()["history"]] == nodes
        assert all(d["started"] and d["noticed"] >= d["started"] for d in letter.deliveries)
        assert letter.describe()["args"] == ["kill_node", {"x": 1}, None]
        assert [x.task_id for x in w.dead_letters.list()] == [task_id]
        assert not w.client.exists(w.keys.deaths(task_id))
        assert w.client.scard(w.keys.dead_letter_unreported) == 0


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(threshold=st.integers(1, 4), starts=st.lists(st.booleans(), min_size=1, max_size=8))
def test_only_deliveries_that_had_started_count(
    redis_url: str, threshold: int, starts: list[bool]
) -> None:
    with world(redis_url, threshold=threshold) as w:
        w.client.flushall()
        task_id = w.send("kill_node")
        deaths = 0
        for n, start in enumerate(starts):
            node = w.node(f"v3-{n}@host")
            w.take(node, start=start)
            report = w.recovery.recover(node.incarnation)  # its death, settled at once
            assert report is not None
            deaths += start
            if deaths == threshold and start:
                assert report.dead_lettered == [task_id] and report.restored == []
                letter = w.dead_letters.get(task_id)
                assert letter is not None and len(letter.deliveries) == threshold
                assert w.client.llen("v3") == 0
                return
            assert report.restored == [task_id] and report.dead_lettered == []
            assert w.client.llen(w.keys.deaths(task_id)) == deaths
        assert w.dead_letters.get(task_id) is None and w.client.llen("v3") == 1


def test_retry_republishes_under_the_task_id_with_a_fresh_count(redis_url: str) -> None:
    with world(redis_url, threshold=1) as w:
        task_id = w.send("kill_node", {"spare_if": "/nonexistent"})
        node = w.node()
        w.take(node)
        w.wait_dead(node)
        w.recovery.sweep()
        assert AsyncResult(task_id, app=w.app).state == "FAILURE"
        assert w.dead_letters.retry(task_id) is True
        assert AsyncResult(task_id, app=w.app).state == "PENDING"  # DeadLettered forgotten
        [message] = w.queued("v3")
        assert message["headers"]["id"] == task_id and not message["headers"]["redelivered"]
        assert message["properties"]["delivery_info"]["redelivered"] is False
        assert w.dead_letters.get(task_id) is None and w.dead_letters.list() == []
        assert w.dead_letters.retry(task_id) is False
        # It kills again: dead-lettered again, with a count that started afresh.
        again = w.node("v3-again@host")
        w.take(again)
        w.wait_dead(again)
        assert w.recovery.sweep().recovered[0].dead_lettered == [task_id]
        letter = w.dead_letters.get(task_id)
        assert letter is not None and letter.nodes == ["v3-again@host"]


def test_dead_letters_hold_their_cap(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_module, "MAX_DEAD_LETTERS", 2)
    with world(redis_url, threshold=1) as w:
        ids = [w.send("kill_node") for _ in range(4)]
        node = w.node()
        for _ in ids:
            w.take(node)
        w.wait_dead(node)
        assert sorted(w.recovery.sweep().recovered[0].dead_lettered) == sorted(ids)
        assert w.client.zcard(w.keys.dead_letter_index) == 2
        kept = {x.task_id for x in w.dead_letters.list()}
        assert len(kept) == 2 and kept < set(ids)
        assert sum(bool(w.client.exists(w.keys.dead_letter(i))) for i in ids) == 2
        assert w.dead_letters.purge() == 2
        assert w.dead_letters.list() == [] and not w.client.exists(w.keys.dead_letter_index)


def test_a_gone_nodes_direct_queue_goes_back_to_the_lane(w: World) -> None:
    dead, alive = worker_direct("v2-dead@host"), worker_direct("v2-alive@host")
    w.client.set(w.keys.node("v2-alive@host"), "{}", ex=30)
    lane = w.send("ping", task="snakepool.v2compat.execute", queue="v2compat")
    direct = [w.send("echo", {"n": n}, task="snakepool.v2compat.execute", queue=dead)
              for n in range(3)]  # fmt: skip
    kept = w.send("echo", task="snakepool.v2compat.execute", queue=alive)
    assert w.recovery.drain_direct_queues() == 3
    # At the head of the lane, oldest first, ahead of what the lane already had.
    assert [m["headers"]["id"] for m in w.queued("v2compat")] == [*direct, lane]
    assert w.client.llen("v2-dead@host.dq2") == 0
    assert [m["headers"]["id"] for m in w.queued("v2-alive@host.dq2")] == [kept]
    # A message published there after the node's death is drained by the next sweep.
    late = w.send("echo", task="snakepool.v2compat.execute", queue=dead)
    assert w.recovery.sweep().drained == 1
    assert w.queued("v2compat")[-1]["headers"]["id"] == lane
    assert late in [m["headers"]["id"] for m in w.queued("v2compat")]


def test_a_long_gone_nodes_direct_queue_is_looked_at_less_often(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(sweep_module, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                              time=time.time))  # fmt: skip
    monkeypatch.setattr(sweep_module, "DRAIN_WATCH_SECONDS", 3.0)
    # A name of its own: kombu remembers, per process, which queues it has declared.
    dead = worker_direct("v2-long-gone@host")

    def send() -> str:
        return w.send("echo", task="snakepool.v2compat.execute", queue=dead)

    send()
    assert w.recovery.drain_direct_queues() == 1  # just seen gone: every sweep
    clock[0] += 10
    send()
    assert w.recovery.drain_direct_queues() == 0  # long gone: every third sweep only
    assert w.recovery.drain_direct_queues() == 1
    # Alive again, then gone again: watched closely again.
    w.client.set(w.keys.node("v2-long-gone@host"), "{}")
    assert w.recovery.drain_direct_queues() == 0
    w.client.delete(w.keys.node("v2-long-gone@host"))
    send()
    assert w.recovery.drain_direct_queues() == 1
    assert w.client.llen("v2compat") == 3


def test_a_message_taken_from_a_dead_nodes_direct_queue_goes_to_the_lane(w: World) -> None:
    task_id = w.send("echo", task="snakepool.v2compat.execute", queue=worker_direct("v2-a@host"))
    node = w.node("v2-a@host")
    w.take(node, "v2-a@host.dq2")
    w.wait_dead(node)
    assert w.recovery.sweep().recovered[0].restored == [task_id]
    assert [m["headers"]["id"] for m in w.queued("v2compat")] == [task_id]
    assert w.client.llen("v2-a@host.dq2") == 0


def test_only_one_survivor_settles_a_dead_node(w: World) -> None:
    w.send("echo")
    node = w.node()
    w.take(node)
    w.wait_dead(node)
    w.client.set(w.keys.recovery_lock(node.incarnation), "someone else", ex=30)
    assert w.recovery.sweep().recovered == []
    assert w.client.hlen(w.broker.unacked_key) == 1
    w.client.delete(w.keys.recovery_lock(node.incarnation))
    assert len(w.recovery.sweep().recovered[0].restored) == 1


def test_a_late_node_that_beats_again_keeps_its_record(w: World) -> None:
    w.send("echo")
    node = w.node(ttl=0.2)
    w.take(node)
    w.wait_dead(node)
    node.ttl = 30
    node.beat()  # it was only late
    assert w.recovery.sweep().recovered == []
    assert w.client.hlen(w.broker.unacked_key) == 1 and w.client.exists(node.key)


def test_every_recovery_key_is_documented_with_its_bound(redis_url: str) -> None:
    with world(redis_url, threshold=2) as w:
        w.keys = type(w.keys)("b:")  # the prefix the key table's check uses
        w.recovery.keys = w.dead_letters.keys = w.keys
        letters = [w.send("kill_node") for _ in range(2)]
        seen: set[str] = set()
        for n in range(2):
            node = w.node(f"v3-{n}@host")
            for _ in letters:
                w.take(node)
            w.wait_dead(node)
            w.client.set(w.keys.recovery_lock(node.incarnation), "held", ex=30)
            seen |= _check_documented(w)
            w.client.delete(w.keys.recovery_lock(node.incarnation))
            w.recovery.sweep()
            seen |= _check_documented(w)
        w.client.sadd(w.keys.dead_letter_unreported, letters[0])  # as if not yet reported
        seen |= _check_documented(w)
        shapes = {re.sub(r":[0-9a-f-]{32,36}$", ":*", key) for key in seen}
        assert shapes >= {
            "b:inflight", "b:inflight:*", "b:recovering:*", "b:deaths:*", "b:deadletters",
            "b:deadletters:unreported", "b:deadletter:*",
        }  # fmt: skip
        assert 0 < w.client.ttl(w.keys.dead_letter(letters[0])) <= DEAD_LETTER_TTL


def _check_documented(w: World) -> set[str]:
    """Every ``b:`` key is in docs/redis-keys.md with a bound it has; the keys."""
    documented = _documented_patterns()
    keys = {raw.decode() for raw in w.client.scan_iter(match="b:*")}
    for key in keys:
        bounds = [bound for pattern, bound in documented if pattern.fullmatch(key)]
        assert bounds, f"{key} is not in docs/redis-keys.md"
        if bounds[0].startswith("TTL"):
            assert w.client.ttl(key) > 0, f"{key} should have a TTL ({bounds[0]})"
        else:
            assert bounds[0].startswith(("cap", "pruned")), (key, bounds[0])
    return keys
