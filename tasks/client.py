"""The client API for application code.

::

    from snakepool.tasks.client import Client

    client = Client()                                   # settings from SNAKEPOOL_* env
    sid = client.create_session()
    client.execute("create_program", {"id": "qa", "signature": "question -> answer"},
                   session_id=sid)
    client.execute("execute_program", {"program_id": "qa", "inputs": {"question": "Why?"}},
                   session_id=sid)                      # → {"answer": ...}

``routing="router"`` (default) sends every request to the router task, which decides
and forwards; ``routing="direct"`` makes the same decision here, from the same flags,
and enqueues straight onto the lane: zero hops. Errors arrive as the typed exceptions of
:mod:`snakepool.errors`.

The only request option is ``timeout`` (seconds the command may run); any other is
refused here, before anything is sent, with ``InvalidArguments`` (and again by the router
and the lane, for messages that did not come through this class).

Arguments travel as Celery's JSON: what it cannot encode (a set, a complex, an object,
a tuple as a key, nesting past the recursion limit, an integer of more than 4300
digits — see :mod:`~snakepool.config.json_values`) is ``InvalidArguments`` naming the
value, and nothing is sent. ``execute``'s wait ``timeout`` is checked before anything is
sent too; a result that does not arrive in time is
:class:`~snakepool.errors.ResultTimeout`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import replace
from typing import Any

import redis
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from kombu.exceptions import EncodeError

from snakepool.config import Settings, load_settings
from snakepool.config.flags import FlagCache, FlagStore, RolloutFlags
from snakepool.config.ids import validate_command_name
from snakepool.config.keys import Keys
from snakepool.config.quoting import describe
from snakepool.config.timeouts import checked_timeout
from snakepool.errors import InvalidArguments, PoolUnavailable
from snakepool.sessions import SessionStore, redis_from_url
from snakepool.tasks import after_fork
from snakepool.tasks.client_errors import checked_flags_wait, result_timeout, unsendable_args
from snakepool.tasks.operator import operator_name
from snakepool.tasks.rollout.breaker import BreakerPolicy, CircuitBreaker
from snakepool.tasks.rollout.liveness import LaneLiveness
from snakepool.tasks.rollout.metrics import LaneMetrics
from snakepool.tasks.rollout.shadow import CommandCatalog, ShadowRecorder
from snakepool.tasks.v2_api import V2Api
from snakepool.tasks.worker.app import ROUTE_TASK, ROUTER_QUEUE, create_app
from snakepool.tasks.worker.dispatch import (
    choose,
    destination,
    lane_signature,
    plan_shadow,
    send_shadow,
)
from snakepool.tasks.worker.node import live_nodes
from snakepool.tasks.worker.options import LaneOptions, checked_session_id
from snakepool.tasks.worker.unreachable import UNREACHABLE, typed_methods

__all__ = ["Client", "V2Api", "operator_name"]

_ROUTINGS = ("router", "direct")
#: What a request that could not be sent raises from kombu and redis-py.
_UNREACHABLE: tuple[type[BaseException], ...] = (redis.RedisError, *UNREACHABLE)


@typed_methods
class Client:
    """Enqueue work, manage sessions and the rollout.

    No method raises a raw redis, kombu or socket error: Redis or the broker unreachable
    is ``PoolUnavailable`` (``reason="unreachable"``, retryable), any other of their
    errors a ``SnakepoolError``, the raw one chained as the cause
    (:mod:`~snakepool.tasks.worker.unreachable`); the handle :meth:`submit` returns
    raises typed errors too (:class:`~snakepool.tasks.worker.results.SnakepoolResult`).

    Args:
        redis_url: SessionStore / flags Redis (default: ``REDIS_URL``).
        broker_url: Celery broker (default: ``BROKER_URL``, else ``redis_url``).
        routing: ``"router"`` (through the router task) or ``"direct"`` (zero hops).
        settings: Use these settings instead of reading the environment.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        broker_url: str | None = None,
        routing: str = "router",
        *,
        settings: Settings | None = None,
    ) -> None:
        if routing not in _ROUTINGS:
            raise InvalidArguments(f"routing must be one of {_ROUTINGS}, not {routing!r}")
        overrides = {k: v for k, v in (("redis_url", redis_url), ("broker_url", broker_url)) if v}
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        if redis_url and not broker_url and settings.broker_url != redis_url:
            settings = settings.model_copy(update={"broker_url": redis_url})
        self.settings = settings
        self.routing = routing
        self.keys = Keys(settings.key_prefix)
        self._open()
        self.v2 = V2Api(self)
        after_fork.renew_after_fork(self)  # gunicorn --preload: see tasks.after_fork

    def _open(self) -> None:
        """Connections and the state guarded by locks: built here, and anew after a fork."""
        settings = self.settings
        self.app = create_app(settings)
        self.redis = redis_from_url(settings.redis_url)
        self.store = SessionStore(
            self.redis, prefix=settings.key_prefix, default_ttl=settings.session_ttl
        )
        self.flags = FlagStore(self.redis, prefix=settings.key_prefix)
        self._flag_cache = FlagCache(self.flags)
        self._catalog = CommandCatalog(self.redis, prefix=settings.key_prefix)
        self.shadows = ShadowRecorder(self.redis, prefix=settings.key_prefix)
        # Zero-hop routing sheds a lane with no live node like the router does.
        who = f"client {operator_name()}"
        liveness = LaneLiveness(self.redis, prefix=settings.key_prefix, audit=self.flags, who=who)
        self._breaker = CircuitBreaker(
            LaneMetrics(self.redis, prefix=settings.key_prefix),
            BreakerPolicy.from_settings(settings),
            liveness=liveness,
        )

    def _after_fork(self) -> None:
        """In a forked child: never touch the parent's sockets, locks or subscriptions.

        The inherited broker connections and the result backend's subscription share
        their sockets with the parent (a result would go to whichever process reads it
        first), and a lock held by a parent thread at the fork stays held for ever here.
        The old objects are kept, never closed: closing would shut the parent's sockets.
        """
        after_fork.keep_inherited(self.app, self.redis)
        self._open()

    # ------------------------------------------------------------------ requests

    def decide(
        self, command: str, args: dict[str, Any] | None = None, session_id: str | None = None
    ) -> str:
        """The lane the router would pick for this request now: ``v3`` or ``v2compat``.

        Raises:
            InvalidArguments: a bad command name or session id (as :meth:`submit`).
        """
        validate_command_name(command)
        if session_id is not None:
            checked_session_id(session_id)
        return choose(command, args, session_id, self._flag_cache.get(), uuid.uuid4().hex)

    def submit(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue one request; returns its Celery AsyncResult (``.queue`` names the lane).

        Args:
            options: Only ``timeout``: seconds the command may run (a number above 0; the
                lane accepts at most its ``REQUEST_TIMEOUT``).

        Raises:
            InvalidArguments: a bad command, args or session id, an unknown option or a
                bad ``timeout`` — before anything is sent; args Celery's JSON cannot
                encode (naming the value: a set, an object, a tuple key, nesting past the
                recursion limit, an integer of more than 4300 digits) — nothing is sent.
            PoolUnavailable: the broker or Redis did not answer (within about a second):
                nothing was sent (``reason="unreachable"``).
        """
        validate_command_name(command)  # COMMAND_NAME, a full match: before anything is sent
        if args is not None and not isinstance(args, dict):
            raise InvalidArguments(f"args must be a dict, not {type(args).__name__}")
        if session_id is not None:
            checked_session_id(session_id)
        checked = LaneOptions.parse(options).to_kwargs()
        try:
            return self._send_reachable(command, args, session_id, checked)
        except (EncodeError, ValueError) as exc:  # raised before publishing: nothing went out
            refusal = unsendable_args(command, args, exc)
            if refusal is None:
                raise
            raise refusal from None

    def _send_reachable(
        self,
        command: str,
        args: dict[str, Any] | None,
        session_id: str | None,
        checked: dict[str, Any],
    ) -> AsyncResult:
        request_id = uuid.uuid4().hex  # also the shadow pair id: see rollout.shadow.PAIR_ID
        try:
            return self._send(command, args, session_id, checked, request_id)
        except _UNREACHABLE as exc:
            # Nothing was accepted: say so now rather than hand back a result that never
            # comes. (Celery publishes with a short retry here: CLIENT_PUBLISH_RETRY.)
            self._forget(request_id)
            raise PoolUnavailable(
                f"request not sent: the broker or Redis is unreachable ({exc})",
                reason="unreachable",
            ) from exc

    def _send(
        self,
        command: str,
        args: dict[str, Any] | None,
        session_id: str | None,
        checked: dict[str, Any],
        request_id: str,
    ) -> AsyncResult:
        if self.routing == "router":
            return self.app.send_task(
                ROUTE_TASK, args=(command, args, session_id), kwargs=checked,
                queue=ROUTER_QUEUE, task_id=request_id,
            )  # fmt: skip
        flags = self._flag_cache.get()
        lane = choose(command, args, session_id, flags, request_id, breaker=self._breaker)
        tag = plan_shadow(command, request_id, flags=flags, catalog=self._catalog)
        queue = destination(lane, session_id, store=self.store, client=self.redis, keys=self.keys)
        signature = lane_signature(
            self.app, lane, command, args, session_id, checked, queue, shadow=tag
        )
        result = signature.apply_async(task_id=request_id)
        if tag is not None:  # the copy after the primary: its publish never delays it
            send_shadow(self.app, lane, command, args, session_id, checked, request_id)
        return result

    def _forget(self, request_id: str) -> None:
        """Stop listening for the result of a request that was never sent."""
        consumer = getattr(self.app.backend, "result_consumer", None)
        if consumer is not None:
            with contextlib.suppress(Exception):  # tidying up only
                consumer.cancel_for(request_id)

    def execute(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> Any:
        """Run one request and return its result (or raise its typed error).

        Args:
            timeout: Seconds to wait for the result (default ``RESULT_TIMEOUT``): a
                number above 0 and at most 86400, checked before anything is sent.
            options: None is accepted (``timeout`` here is the wait): any is refused with
                ``InvalidArguments``, as :meth:`submit` refuses unknown ones.

        Raises:
            InvalidArguments: as :meth:`submit`, or a bad ``timeout`` — nothing is sent.
            ResultTimeout: no result within ``timeout`` (the request may still run).
            SnakepoolError: the request's own typed error.
        """
        wait = self.settings.result_timeout if timeout is None else checked_timeout(timeout)
        result = self.submit(command, args, session_id=session_id, **options)
        try:
            # The Redis backend pushes results (no polling); the embedded one is polled.
            return result.get(timeout=wait, interval=0.01)
        except CeleryTimeoutError:
            # The backend keeps a pending result (and its subscription) until it arrives:
            # let go of it now, or every timed-out request leaves one behind.
            remove = getattr(self.app.backend, "remove_pending_result", None)
            if remove is not None:
                remove(result)
            raise result_timeout(result.id, wait, command) from None

    # ------------------------------------------------------------------ sessions

    def create_session(self, ttl: int | None = None, metadata: dict[str, Any] | None = None) -> str:
        """Create a session; returns its id."""
        return self.store.create(ttl=ttl, metadata=metadata)

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session (with its program ids), or None."""
        return self.store.get(session_id)

    def delete_session(self, session_id: str) -> bool:
        """Delete a session and its programs."""
        return self.store.delete(session_id)

    # ------------------------------------------------------------------- rollout

    def rollout_state(self) -> dict[str, Any]:
        """The current rollout flags: ``percent``, ``version``, ``paused``, ``forced_lane``,
        ``excluded_commands`` (kept on V2-compat), ``v3_commands`` (the V3 allow-list,
        None: every command), ``overrides``, ``finalized`` (V3 only), shadowing, …"""
        return self.flags.read().to_dict()

    def set_rollout(self, percent: int, reason: str) -> dict[str, Any]:
        """Send ``percent`` % of sessions to V3.

        Raises:
            InvalidArguments: not 0-100, or the rollout is finalized (unfinalize first).
        """
        return self.flags.set_percent(percent, who=operator_name(), why=reason).to_dict()

    def wait_for_flags(self, version: int, timeout: float = 5.0) -> None:
        """Block until every live node reports routing by flags ``version`` or newer.

        Nodes re-read the flags at least every 0.5 s and report the version they use in
        their heartbeat (every second), so this returns within about a second.

        Raises:
            InvalidArguments: ``version`` not an int, or ``timeout`` not a number of
                seconds in (0, 86400].
            PoolUnavailable: not every node caught up within ``timeout`` seconds.
        """
        deadline = time.monotonic() + checked_flags_wait(version, timeout)
        while True:
            nodes = live_nodes(self.redis, self.keys)
            behind = [n["name"] for n in nodes if n.get("flags_version", -1) < version]
            if nodes and not behind:
                return
            if time.monotonic() > deadline:
                raise PoolUnavailable(
                    f"nodes still routing by older flags than version {version}: "
                    f"{behind or 'no live nodes'}"
                )
            time.sleep(0.05)  # heartbeats are in Redis: there is nothing to wait on

    def set_shadow(self, enabled: bool, rate: float | None = None) -> dict[str, Any]:
        """Turn shadow comparison on or off (``rate``: share of read-only requests).

        Raises:
            InvalidArguments: ``enabled`` is not a bool, or ``rate`` is not a number from
                0 to 1 (nothing is written).
        """
        if not isinstance(enabled, bool):
            raise InvalidArguments(f"enabled must be True or False, not {describe(enabled)}")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
        ):  # compared, not formatted first: f"{2**1024:g}" raised OverflowError
            raise InvalidArguments(
                f"shadow rate must be a number from 0 to 1, not {describe(rate)}"
            )

        def change(flags: RolloutFlags) -> RolloutFlags:
            return replace(flags, shadow=enabled, shadow_rate=flags.shadow_rate if rate is None
                           else rate)  # fmt: skip

        why = f"shadow {'on' if enabled else 'off'}" + (f" at {rate:g}" if rate is not None else "")
        return self.flags.update(change, who=operator_name(), why=why).to_dict()

    def rollback(self, reason: str) -> dict[str, Any]:
        """Send all traffic back to V2-compat now (seen everywhere within a second) and
        pause promotion.

        Raises:
            InvalidArguments: the rollout is finalized: ``snakepool rollout unfinalize``
                first, with V2-compat nodes running again.
        """
        return self.flags.rollback(who=operator_name(), why=reason).to_dict()

    def close(self) -> None:
        """Release connections."""
        after_fork.forget(self)
        self.redis.close()
        self.app.close()
