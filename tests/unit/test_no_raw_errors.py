"""No raw redis, kombu or socket error reaches a caller of the public API (issue 9 item 6).

A no-persistence Redis restart under load gave about one caller in 230 a bare
``redis.exceptions.ConnectionError`` as its request's outcome: the router's read of a
V2-compat session's binding met the restart, and the router task's base class
(``DeliveredOnce``) bypassed the mapping of ``SnakepoolTask``. Each boundary is checked
here with the error injected at its exact point (a Redis port nobody listens on, or a
stub raising it):

- what a task raises is stored typed (the router and lane tasks included);
- a raw error stored by an older node is read back typed;
- the handle ``submit`` returns (``get``, ``state``, ``result``, ``ready``, ``forget``);
- every ``Client`` method, and ``AsyncClient``'s (whose wait rides an outage out).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.app.trace import build_tracer
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import DecodeError, OperationalError

from snakepool import errors
from snakepool.config import load_settings
from snakepool.config.flags import RolloutFlags
from snakepool.config.keys import Keys
from snakepool.errors import PoolUnavailable, ResultTimeout, SnakepoolError
from snakepool.tasks.async_client import AsyncClient
from snakepool.tasks.client import Client
from snakepool.tasks.worker import router
from snakepool.tasks.worker.app import LANE_TASKS, ROUTE_TASK, SnakepoolTask, create_app
from snakepool.tasks.worker.lanes import LaneTask
from snakepool.tasks.worker.recovery.once import DeliveredOnce
from snakepool.tasks.worker.results import SnakepoolResult
from snakepool.tasks.worker.unreachable import typed_error
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)

REFUSED = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


def _is_unreachable(error: BaseException, cause: type[BaseException] | None = None) -> None:
    assert type(error) is PoolUnavailable, repr(error)
    assert error.data["reason"] == "unreachable"
    assert error.retryable
    if cause is not None:
        assert isinstance(error.__cause__, cause), repr(error.__cause__)


# ------------------------------------------------------------------ the mapping


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (REFUSED, PoolUnavailable),
        (redis.TimeoutError("Timeout reading from socket"), PoolUnavailable),
        (redis.BusyLoadingError("Redis is loading the dataset in memory"), PoolUnavailable),
        (OperationalError("Error 111 connecting"), PoolUnavailable),
        (ConnectionResetError(104, "Connection reset by peer"), PoolUnavailable),
        (TimeoutError("timed out"), PoolUnavailable),
        (redis.ReadOnlyError("You can't write against a read only replica."), SnakepoolError),
        (redis.ResponseError("OOM command not allowed"), SnakepoolError),
        (DecodeError("bad payload"), SnakepoolError),
        (ValueError("not ours to map"), None),
        (PoolUnavailable("typed already"), None),
        (ResultTimeout("typed already"), None),
    ],
)
def test_raw_errors_map_to_the_tree(raw: BaseException, expected: type | None) -> None:
    typed = typed_error(raw, "testing")
    if expected is None:
        assert typed is None
        return
    assert type(typed) is expected
    assert typed is not None and typed.message.startswith("testing: Redis or the broker")
    if expected is SnakepoolError:  # a refusal, not an outage: the raw type is named
        assert not typed.retryable
        assert typed.data["reason"].endswith(type(raw).__name__)


# --------------------------------------------------------- what a task stores


@pytest.fixture
def node_app() -> Iterator[Any]:
    app = create_app(load_settings(redis_url=f"fakeredis://{uuid.uuid4().hex}"), node=True)
    yield app
    app.close()


def _trace(app: Any, task: Any, *args: Any) -> Any:
    """Run ``task`` as a worker does (Celery's tracer, result stored); its stored result."""
    task_id = uuid.uuid4().hex
    tracer = build_tracer(task.name, task, app=app, eager=False)
    tracer(task_id, args, {}, request={"id": task_id, "delivery_info": {}})
    return app.AsyncResult(task_id).get(propagate=False, timeout=5)


def test_the_router_reading_a_binding_during_a_restart_stores_pool_unavailable(
    node_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos run's finding: ``store.binding`` met the restart inside ``route``."""

    def binding(session_id: str) -> str | None:
        raise REFUSED

    node = SimpleNamespace(
        flags=SimpleNamespace(get=RolloutFlags),  # 0 %: a session goes to V2-compat
        breaker=None,
        catalog=None,
        store=SimpleNamespace(binding=binding),
        redis=None,
        keys=Keys("snakepool:"),
    )
    monkeypatch.setattr(router, "current_node", lambda: node)
    stored = _trace(node_app, node_app.tasks[ROUTE_TASK], "ping", None, "s-1")
    _is_unreachable(stored)


@pytest.mark.parametrize("base", [DeliveredOnce, LaneTask], ids=["delivered-once", "lane"])
def test_every_task_base_stores_typed_errors(node_app: Any, base: type) -> None:
    @node_app.task(name=f"t.{uuid.uuid4().hex}", base=base, shared=False)  # type: ignore[untyped-decorator]
    def fails() -> None:
        raise REFUSED

    assert isinstance(fails, SnakepoolTask)
    _is_unreachable(_trace(node_app, fails))


def test_the_router_and_lane_tasks_are_snakepool_tasks(node_app: Any) -> None:
    for name in (ROUTE_TASK, *LANE_TASKS.values()):
        assert isinstance(node_app.tasks[name], SnakepoolTask), name


def test_a_task_base_cannot_bypass_the_mapping() -> None:
    with pytest.raises(TypeError, match="override _run_call"):

        class Bypassing(SnakepoolTask):
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                return self.run(*args, **kwargs)


# ------------------------------------------------- a stored outcome read back


@pytest.fixture
def nowhere() -> str:
    """A Redis URL nobody answers at (connections refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_raw_error_stored_by_an_older_node_is_read_back_typed(nowhere: str) -> None:
    app = create_app(load_settings(redis_url=nowhere))
    try:
        stored = {
            "exc_type": "ConnectionError",
            "exc_module": "redis.exceptions",
            "exc_message": ["Error 111 connecting to 127.0.0.1:6379. Connection refused."],
        }
        _is_unreachable(app.backend.exception_to_python(stored), redis.ConnectionError)
        other = {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["x"]}
        assert type(app.backend.exception_to_python(other)) is ValueError
        ours = {"exc_type": "PoolUnavailable", "exc_module": "snakepool.errors",
                "exc_message": ["stopped", {"reason": "stopping"}]}  # fmt: skip
        assert app.backend.exception_to_python(ours).data == {"reason": "stopping"}
    finally:
        app.close()


#: Where the error classes lived before issue 7 (the names a node of that layout stored).
_OLD_ERROR_MODULES = ("pool.errors", "pool.interpreter.adapter")


@pytest.mark.parametrize("module", _OLD_ERROR_MODULES)
def test_an_error_stored_under_the_old_module_names_is_read_back_as_ours(
    nowhere: str, module: str
) -> None:
    """Issue 7 moved the error tree from ``pool.errors`` to ``snakepool.errors``: what a
    node of the old layout stored (a rolling deploy, results still in Redis) used to come
    back as Celery's stand-in ``celery.exceptions.InvalidArguments``, not a SnakepoolError."""
    app = create_app(load_settings(redis_url=nowhere))
    try:
        stored = {"exc_type": "InvalidArguments", "exc_module": module,
                  "exc_message": ["bad args", {"field": "q"}]}  # fmt: skip
        rebuilt = app.backend.exception_to_python(stored)
        assert type(rebuilt) is errors.InvalidArguments
        assert (rebuilt.message, rebuilt.field) == ("bad args", "q")
    finally:
        app.close()


# ----------------------------------------------------------------- the handle


@pytest.fixture
def client(nowhere: str) -> Iterator[Client]:
    client = Client(redis_url=nowhere)
    yield client
    client.close()


def test_the_handle_raises_typed_errors_while_redis_is_away(client: Client) -> None:
    handle = client.app.AsyncResult(uuid.uuid4().hex)
    assert isinstance(handle, SnakepoolResult)
    reads: list[Callable[[], Any]] = [
        lambda: handle.state,
        lambda: handle.result,
        handle.ready,
        lambda: handle.queue,
        handle.forget,
    ]
    for read in reads:
        with pytest.raises(PoolUnavailable) as raised:
            read()
        _is_unreachable(raised.value, redis.ConnectionError)


def test_a_wait_through_an_outage_is_a_result_timeout(client: Client) -> None:
    handle = client.app.AsyncResult(uuid.uuid4().hex)
    with pytest.raises(ResultTimeout) as raised:
        handle.get(timeout=0.3)
    assert isinstance(raised.value, CeleryTimeoutError)  # what callers caught before
    assert raised.value.data["task_id"] == handle.id


def test_a_wait_meeting_a_raw_error_raises_it_typed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = client.app.AsyncResult(uuid.uuid4().hex)

    def drain(*args: Any, **kwargs: Any) -> None:
        raise REFUSED  # the pub/sub read, wherever Celery's consumer lets it through

    monkeypatch.setattr(client.app.backend, "wait_for_pending", drain)
    with pytest.raises(PoolUnavailable) as raised:
        handle.get(timeout=5)
    _is_unreachable(raised.value, redis.ConnectionError)


# ---------------------------------------------------------------- the clients

CLIENT_CALLS: dict[str, Callable[[Any], Any]] = {
    "create_session": lambda c: c.create_session(),
    "get_session": lambda c: c.get_session("s-1"),
    "delete_session": lambda c: c.delete_session("s-1"),
    "rollout_state": lambda c: c.rollout_state(),
    "set_rollout": lambda c: c.set_rollout(10, "test"),
    "rollback": lambda c: c.rollback("test"),
    "set_shadow": lambda c: c.set_shadow(True),
    "wait_for_flags": lambda c: c.wait_for_flags(1, timeout=1),
    "decide": lambda c: c.decide("ping"),
    "submit": lambda c: c.submit("ping"),
    "execute": lambda c: c.execute("ping", timeout=1),
}


@pytest.mark.parametrize("call", CLIENT_CALLS.values(), ids=CLIENT_CALLS.keys())
def test_every_client_method_raises_typed_errors(client: Client, call: Callable[..., Any]) -> None:
    with pytest.raises(PoolUnavailable) as raised:
        call(client)
    assert raised.value.data["reason"] == "unreachable"
    assert isinstance(raised.value.__cause__, redis.RedisError | OperationalError)


def test_a_command_redis_refuses_is_a_snakepool_error(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise redis.ReadOnlyError("You can't write against a read only replica.")

    monkeypatch.setattr(client.redis, "execute_command", refuse)
    with pytest.raises(SnakepoolError) as raised:
        client.create_session()
    assert type(raised.value) is SnakepoolError
    assert isinstance(raised.value.__cause__, redis.ReadOnlyError)


@pytest.mark.parametrize(
    "call",
    [CLIENT_CALLS["create_session"], CLIENT_CALLS["rollout_state"], CLIENT_CALLS["submit"]],
    ids=["create_session", "rollout_state", "submit"],
)
def test_async_client_methods_raise_typed_errors(nowhere: str, call: Callable[..., Any]) -> None:
    async def scenario() -> None:
        async with AsyncClient(redis_url=nowhere) as client:
            with pytest.raises(PoolUnavailable) as raised:
                await call(client)
            _is_unreachable(raised.value)
            with pytest.raises(PoolUnavailable):
                await client.wait_for_flags(1, timeout=0.5)

    asyncio.run(scenario())


def test_an_async_wait_rides_an_outage_out_then_times_out_typed(nowhere: str) -> None:
    """Before: the poller's first failed MGET handed every waiter the raw error at once,
    though the request may still run and its result be stored once Redis is back."""

    async def scenario() -> None:
        async with AsyncClient(redis_url=nowhere) as client:
            with pytest.raises(ResultTimeout) as raised:
                await client.wait(uuid.uuid4().hex, timeout=0.5)
            _is_unreachable(raised.value.__cause__)  # type: ignore[arg-type]

    asyncio.run(scenario())


# ------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "args",
    [("sessions", "show", "s-1"), ("rollout", "set", "10", "--reason", "test")],
    ids=["sessions show", "rollout set"],
)
def test_the_cli_keeps_exit_3_for_redis_unreachable(
    nowhere: str, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """The clients' typed errors stand for Redis's own failure: exit 3 (unreachable),
    as before they were typed, not 2 (a snakepool error)."""
    from click.testing import CliRunner

    from snakepool.tasks.cli import main

    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", nowhere)
    done = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert done.exit_code == 3, done.output
    assert done.output.startswith("cannot reach Redis / the broker:"), done.output
