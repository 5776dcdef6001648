"""The pieces of node-death recovery that need no Redis server (issue 9 items 1, 3, 4).

- a redelivered message never runs, nor overwrites, a task id that has a final result
  (:class:`DeliveredOnce`, through Celery's own tracer);
- ``DeadLettered`` comes back from Celery's JSON result backend as itself;
- ``POISON_THRESHOLD`` is validated;
- in-flight entries and unacked deliveries parse back to what was written;
- the chaos adapter's ``kill_node`` SIGKILLs the node: the interpreter's grandparent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, states
from celery.app.trace import build_tracer
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config import load_settings
from snakepool.errors import ConfigError, DeadLettered, SnakepoolError
from snakepool.tasks.worker.recovery.broker import Delivery
from snakepool.tasks.worker.recovery.inflight import InflightEntry
from snakepool.tasks.worker.recovery.once import DeliveredOnce

# ------------------------------------------------------------- DeliveredOnce


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("once-test", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.update(result_serializer="json", accept_content=["json"])
    yield app
    app.close()


def _once_task(app: Celery, body: Any = None) -> tuple[Any, list[str]]:
    runs: list[str] = []

    @app.task(bind=True, base=DeliveredOnce, name="test.once", shared=False)  # this app only
    def once(self: Any, value: Any) -> Any:
        runs.append(self.request.id)  # the worker's request, not a bare one
        if body is not None:
            return body(self, value)
        return value

    return once, runs


def _deliver(app: Celery, task: Any, task_id: str, value: Any, *, redelivered: bool) -> Any:
    # The memory cache backend is one per process: every test uses its own task ids.
    tracer = build_tracer(task.name, task, app=app, eager=False)
    request = {"id": task_id, "delivery_info": {"redelivered": redelivered}}
    return tracer(task_id, (value,), {}, request=request)


def test_a_first_delivery_runs_and_stores(app: Celery) -> None:
    task, runs = _once_task(app)
    _deliver(app, task, "t1", 1, redelivered=False)
    assert runs == ["t1"]
    assert app.backend.get_task_meta("t1")["result"] == 1


@pytest.mark.parametrize("final", [states.SUCCESS, states.FAILURE])
def test_a_redelivery_of_a_settled_task_id_neither_runs_nor_overwrites(
    app: Celery, final: str
) -> None:
    task, runs = _once_task(app)
    first: Any = "first" if final == states.SUCCESS else DeadLettered("set aside", deliveries=3)
    task_id = f"t2-{final}"
    app.backend.store_result(task_id, first, final)
    _deliver(app, task, task_id, "second", redelivered=True)
    assert runs == []
    meta = app.backend.get_task_meta(task_id)
    assert meta["status"] == final
    if final == states.SUCCESS:
        assert meta["result"] == "first"
    else:
        assert isinstance(meta["result"], DeadLettered) and meta["result"].deliveries == 3


def test_a_redelivery_of_an_unsettled_task_id_runs(app: Celery) -> None:
    task, runs = _once_task(app)
    _deliver(app, task, "t3", "again", redelivered=True)
    assert runs == ["t3"]
    assert app.backend.get_task_meta("t3")["result"] == "again"


@pytest.mark.parametrize("raises", [False, True])
def test_a_redelivery_settled_elsewhere_while_it_ran_keeps_the_first_result(
    app: Celery, raises: bool
) -> None:
    def body(task: Any, value: Any) -> Any:
        app.backend.store_result(task.request.id, "the other run's", states.SUCCESS)
        if raises:
            raise ValueError("this run failed")
        return value

    task, runs = _once_task(app, body)
    task_id = f"t4-{raises}"
    _deliver(app, task, task_id, "mine", redelivered=True)
    assert runs == [task_id]
    assert app.backend.get_task_meta(task_id)["result"] == "the other run's"


def test_when_the_backend_cannot_say_the_redelivery_runs(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, runs = _once_task(app)

    def broken(task_id: str) -> dict[str, Any]:
        raise ConnectionError("backend down")

    monkeypatch.setattr(app.backend, "get_task_meta", broken)
    _deliver(app, task, "t5", 5, redelivered=True)
    assert runs == ["t5"]


def test_a_direct_call_still_works(app: Celery) -> None:
    task, runs = _once_task(app)
    assert task(7) == 7 and len(runs) == 1


# ----------------------------------------------------------- DeadLettered


def test_dead_lettered_survives_celerys_json_result_backend(app: Celery) -> None:
    error = DeadLettered("poison", task_id="t", deliveries=3, nodes=["a@h", "b@h", "c@h"])
    stored = json.loads(json.dumps(app.backend.prepare_exception(error, "json")))
    rebuilt = app.backend.exception_to_python(stored)
    assert type(rebuilt) is DeadLettered and isinstance(rebuilt, SnakepoolError)
    assert rebuilt.message == "poison" and rebuilt.nodes == ["a@h", "b@h", "c@h"]
    assert rebuilt.deliveries == 3 and not rebuilt.retryable and rebuilt.is_client_error


# -------------------------------------------------------- POISON_THRESHOLD


def test_poison_threshold_defaults_to_three() -> None:
    assert load_settings().poison_threshold == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=-1000, max_value=1000))
def test_poison_threshold_is_validated(value: int) -> None:
    if 1 <= value <= 100:
        assert load_settings(poison_threshold=value).poison_threshold == value
    else:
        with pytest.raises(ConfigError, match="POISON_THRESHOLD") as caught:
            load_settings(poison_threshold=value)
        assert caught.value.setting == "POISON_THRESHOLD"


def test_poison_threshold_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPOOL_POISON_THRESHOLD", "three")
    with pytest.raises(ConfigError, match="SNAKEPOOL_POISON_THRESHOLD"):
        load_settings()


# ------------------------------------------------------- entries, deliveries


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


@settings(max_examples=40, deadline=None)
@given(
    score=st.floats(min_value=0, max_value=2e9).map(repr),
    task_id=_text, task=_text, queue=_text,
    received=st.floats(min_value=0, max_value=2e9),
    started=st.none() | st.floats(min_value=0, max_value=2e9),
)  # fmt: skip
def test_an_inflight_entry_reads_back_as_written(
    score: str, task_id: str, task: str, queue: str, received: float, started: float | None
) -> None:
    entry = InflightEntry(score, task_id, task, queue, received, started)
    encoded = entry.encode()
    assert encoded.startswith(score + " ")  # what prune.lua compares
    assert InflightEntry.decode(encoded.encode()) == entry


@pytest.mark.parametrize("raw", ["", "[]", "{}", '["x", "", "v3"]', '[{"headers": 1}, "", "v3"]'])
def test_a_delivery_that_is_not_kombus_is_refused(raw: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        Delivery.decode(raw)


def test_a_delivery_reads_its_task_and_marks_redelivery() -> None:
    body = "W1siZWNobyIsIHsieCI6IDF9LCBudWxsXSwge30sIHt9XQ=="  # [["echo", {"x": 1}, null], {}, {}]
    message = {"body": body, "headers": {"id": "t", "task": "snakepool.v3.execute"},
               "properties": {"body_encoding": "base64", "delivery_info": {}}}  # fmt: skip
    delivery = Delivery.decode(json.dumps([message, "", "v3"]))
    assert (delivery.task_id, delivery.task_name, delivery.command) == ("t", "snakepool.v3.execute",
                                                                        "echo")  # fmt: skip
    assert delivery.call() == (["echo", {"x": 1}, None], {})
    marked = delivery.marked(redelivered=True)
    assert marked["headers"]["redelivered"] is True
    assert marked["properties"]["delivery_info"]["redelivered"] is True
    assert "redelivered" not in delivery.message["headers"]  # a copy
    assert Delivery.decode(json.dumps([message, "C.dq2", "v2@h"])).is_direct
    assert not delivery.is_direct


@given(exchange=st.sampled_from(["", "C.dq2"]), routing_key=st.text(min_size=1, max_size=40))
def test_a_queued_message_knows_where_it_was_sent(exchange: str, routing_key: str) -> None:
    info = {"exchange": exchange, "routing_key": routing_key}
    message = {"body": "", "headers": {"id": "t"}, "properties": {"delivery_info": info}}
    raw = json.dumps(message).encode()
    delivery = Delivery.from_message(raw)
    assert (delivery.exchange, delivery.routing_key) == (exchange, routing_key)
    assert delivery.is_direct == (exchange == "C.dq2") and delivery.task_id == "t"
    assert delivery.raw.encode() == raw  # unpop.lua removes it by these exact bytes


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"[]", b'{"headers": 1}', b"\xff",
        # these raised AttributeError, which stopped the sweep of every dead incarnation
        b'{"headers": {}, "properties": 5}',
        b'{"headers": {}, "properties": {"delivery_info": []}}',
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError, also stopping every sweep
    ],
)  # fmt: skip
def test_a_queued_message_that_is_not_kombus_is_refused(raw: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        Delivery.from_message(raw)


# ---------------------------------------------------------------- kill_node

_LEVEL = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1], *sys.argv[2:]]).wait()"  # noqa: E501
_INTERPRETER = (
    "import json, sys; from snakepool.pool.interpreter import chaos; "
    "reply = chaos.kill_node(json.loads(sys.argv[1])); "
    "open(sys.argv[2], 'w').write(json.dumps(reply))"
)


def _tree(args: dict[str, Any], out: Path) -> subprocess.Popen[bytes]:
    """node → template → interpreter (running kill_node), in a process group of its own."""
    env = {**os.environ, "SNAKEPOOL_ENABLE_CHAOS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _LEVEL, _LEVEL, _INTERPRETER, json.dumps(args), str(out)],
        env=env, start_new_session=True,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_kill_node_kills_the_interpreters_grandparent(tmp_path: Path) -> None:
    node = _tree({}, tmp_path / "out")
    try:
        assert node.wait(30) == -signal.SIGKILL
        assert not (tmp_path / "out").exists()  # it never replied
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)  # the template and interpreter it left


@pytest.mark.timeout(60)
def test_kill_node_spares_when_told_and_names_the_node(tmp_path: Path) -> None:
    spare = tmp_path / "spare"
    spare.touch()
    node = _tree({"spare_if": str(spare)}, tmp_path / "out")
    try:
        assert node.wait(30) == 0
        assert json.loads((tmp_path / "out").read_text()) == {"spared": True, "node": node.pid}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
