"""The broker's Redis as kombu's Redis transport lays it out, and the messages in it.

With late acknowledgements kombu keeps every message a consumer has taken and not yet
acknowledged in two keys that all nodes share, with no word of who took it::

    unacked        hash        delivery tag → JSON [message, exchange, routing key]
    unacked_index  sorted set  delivery tag → when it was taken (the taker's clock)

and it restores one by pushing the message back onto the lists its exchange and routing
key are bound to (one list per priority), marked redelivered — after
``VISIBILITY_TIMEOUT``, or when its consumer closes cleanly. :class:`BrokerRedis` gives
the recovery the same names and lookups through a kombu channel, so transport options
(``unacked_key``, priority steps, bindings) are honoured exactly as kombu honours them;
:class:`Delivery` is one unacked entry.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import WORKER_DIRECT_EXCHANGE
from kombu import Queue

__all__ = ["BrokerRedis", "Delivery", "text"]


def text(value: object) -> str:
    """A Redis reply as text (the clients here return bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Delivery:
    """One entry of kombu's ``unacked`` hash: the message and where it was published.

    Attributes:
        raw: The entry exactly as stored (compared before anything is moved).
        message: kombu's message dict (``body``, ``headers``, ``properties``).
        exchange: The exchange it was published to (``""``: straight to a queue).
        routing_key: Its routing key (the queue name, or a node name for ``C.dq2``).
    """

    raw: str
    message: dict[str, Any]
    exchange: str
    routing_key: str

    @classmethod
    def decode(cls, raw: str | bytes) -> Delivery:
        """Parse an ``unacked`` entry.

        Raises:
            ValueError: it is not kombu's ``[message, exchange, routing_key]`` JSON.
        """
        entry = text(raw)
        message, exchange, routing_key = _loads(entry)
        if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
            raise ValueError("not a kombu message")
        return cls(entry, message, str(exchange or ""), str(routing_key or ""))

    @classmethod
    def from_message(cls, raw: str | bytes) -> Delivery:
        """A message as published (a queue's or a processing list's entry), with the
        exchange and routing key kombu wrote into its ``delivery_info``.

        Raises:
            ValueError: it is not a kombu message.
        """
        entry = text(raw)
        message = _loads(entry)
        if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
            raise ValueError("not a kombu message")
        info = message.get("properties", {})
        info = info.get("delivery_info", {}) if isinstance(info, dict) else None
        if not isinstance(info, dict):
            raise ValueError("not a kombu message: no delivery_info")
        return cls(entry, message, str(info.get("exchange") or ""),
                   str(info.get("routing_key") or ""))  # fmt: skip

    @property
    def headers(self) -> dict[str, Any]:
        """Celery's task headers (``id``, ``task``, ``ignore_result``, …)."""
        headers: dict[str, Any] = self.message["headers"]
        return headers

    @property
    def task_id(self) -> str:
        """The Celery task id (the caller's request id)."""
        return str(self.headers.get("id", ""))

    @property
    def task_name(self) -> str:
        """The Celery task name (``snakepool.v3.execute``, …)."""
        return str(self.headers.get("task", ""))

    @property
    def is_direct(self) -> bool:
        """Whether it was sent to one node's worker-direct queue (V2-compat affinity)."""
        return self.exchange == str(WORKER_DIRECT_EXCHANGE.name)

    def call(self) -> tuple[Any, Any]:
        """The task's ``(args, kwargs)`` from the body (Celery's protocol 2, JSON), or
        ``(None, None)`` when the body is not that."""
        try:
            body = self.message.get("body", "")
            if self.message.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args, kwargs, _embed = json.loads(body)
        except (ValueError, TypeError, RecursionError):
            return None, None
        return args, kwargs

    @property
    def command(self) -> str | None:
        """The snakepool command it carries (the task's first argument), if any."""
        args, _kwargs = self.call()
        return args[0] if isinstance(args, list) and args and isinstance(args[0], str) else None

    def marked(self, *, redelivered: bool) -> dict[str, Any]:
        """A copy of the message with kombu's redelivered flags set (or cleared), as
        kombu's own restore sets them; Celery reads them into ``delivery_info``."""
        message = copy.deepcopy(self.message)
        message["headers"]["redelivered"] = redelivered
        info = message.setdefault("properties", {}).setdefault("delivery_info", {})
        info["redelivered"] = redelivered
        return message


class BrokerRedis:
    """A kombu channel on the broker, for finding and moving messages as kombu does.

    Args:
        app: The Celery app whose broker this is (a Redis transport).

    Raises:
        ValueError: the broker is not kombu's Redis transport (the embedded demo's
            in-memory broker has no ``unacked`` hash to recover from).
    """

    def __init__(self, app: Celery) -> None:
        self._connection = app.connection_for_write()
        if self._connection.transport.driver_type != "redis":
            self._connection.release()
            raise ValueError("recovery needs kombu's Redis transport")
        self._channel = self._connection.default_channel
        #: A client for the broker's Redis (thread-safe: a connection pool).
        self.client: redis.Redis = self._channel.client

    @staticmethod
    def supports(app: Celery) -> bool:
        """Whether ``app``'s broker is kombu's Redis transport."""
        connection = app.connection_for_write()
        try:
            driver: str = connection.transport.driver_type
            return driver == "redis"
        finally:
            connection.release()

    @property
    def unacked_key(self) -> str:
        """kombu's hash of unacknowledged messages."""
        return str(self._channel.unacked_key)

    @property
    def unacked_index_key(self) -> str:
        """kombu's sorted set of unacknowledged delivery tags, by receipt time."""
        return str(self._channel.unacked_index_key)

    def queues_for(self, exchange: str, routing_key: str) -> list[str]:
        """The queues ``exchange`` routes ``routing_key`` to (kombu's lookup)."""
        return sorted(self._channel._lookup(exchange, routing_key))

    def list_for(self, queue: str, message: dict[str, Any]) -> str:
        """The Redis list of ``queue`` that holds ``message`` (one list per priority)."""
        priority = self._channel._get_message_priority(message, reverse=False)
        return str(self._channel._q_for_pri(queue, priority))

    def priority_lists(self, queue: str) -> list[str]:
        """Every Redis list of ``queue``, one per priority step."""
        lists = (self._channel._q_for_pri(queue, p) for p in self._channel.priority_steps)
        return list(dict.fromkeys(str(name) for name in lists))

    def direct_queues(self) -> dict[str, str]:
        """Node name → its worker-direct queue, for every node that ever declared one."""
        table = self._channel.get_table(WORKER_DIRECT_EXCHANGE.name)
        return {str(routing_key): str(queue) for routing_key, _pattern, queue in table}

    def bound_queues(self, exchange: str) -> list[str]:
        """The queues bound to ``exchange`` (kombu's binding table)."""
        return sorted(str(queue) for _key, _pattern, queue in self._channel.get_table(exchange))

    def binding(self, queue: Queue) -> tuple[list[str], str]:
        """Where kombu keeps ``queue``'s binding, and the entry: ``([table, permanent
        set], member)`` — the member exactly as kombu's ``queue_bind`` writes it."""
        channel = self._channel
        exchange, key = str(queue.exchange.name), queue.routing_key or ""
        _key, pattern, _queue = channel.typeof(exchange).prepare_bind(
            queue.name, exchange, key, queue.binding_arguments or {}
        )
        member = str(channel.sep).join([key, pattern or "", queue.name])
        tables = (channel.keyprefix_queue, channel.keyprefix_binding_permanent)
        return [str(table % exchange) for table in tables], member

    def close(self) -> None:
        """Release the connection."""
        self._connection.release()


def _loads(entry: str) -> Any:
    """JSON, or ValueError (also for nesting too deep for the decoder: RecursionError,
    which stopped every sweep)."""
    try:
        return json.loads(entry)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
