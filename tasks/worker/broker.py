"""The broker transport: kombu's Redis transport, made to survive a Redis restart.

Issue 9 item 6 ("a node died with a kombu AttributeError while reconnecting"), as
reproduced by ``tests/chaos/test_redis_restart.py``: when a worker loses Redis, Celery's
consumer first *collects* the connection (kombu sets ``transport.client = None``) and
then closes it. Closing a Redis channel restores its unacknowledged messages — the
requests still running, with late acks — through a fresh connection pool, whose
settings kombu reads from ``transport.client``::

    Channel.close ─► QoS.restore_unacked ─► Channel._create_client ─► Channel.pool
      ─► Channel._connparams: transport.client.hostname ─► AttributeError

Only connection errors are expected there, so the ``AttributeError`` stops the worker
("Unrecoverable error"). The same path breaks the late acknowledgement of every request
that was running across the outage (``Message.ack`` → ``QoS.ack`` → ``_connparams``).

:class:`Channel` remembers the connection settings it was opened with and uses them once
the transport has been collected: the restore then fails as a plain connection error
while Redis is down (ignored, as kombu intends), and the acknowledgements made after
Redis is back reach it — so a request that ran across a restart is neither lost nor run
a second time an hour later (``VISIBILITY_TIMEOUT``).
"""

from __future__ import annotations

import threading
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport", "transport_for"]

#: kombu's name for this module's transport (``broker_transport``).
_PATH = f"{__name__}:Transport"
_lock = threading.Lock()


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, usable for acks and restores after its transport was
    collected (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The kombu Connection (URL, credentials, TLS) this channel was opened with.
        self._opened_with = self.connection.client

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport.client is not None or self._opened_with is None:
            params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
            return params
        # Collected after a lost connection: borrow back the settings for this call only.
        with _lock:
            transport.client = self._opened_with
            try:
                params = super()._connparams(asynchronous=asynchronous)
            finally:
                transport.client = None
        return params


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """The ``broker_transport`` for ``broker_url``: this module's for ``redis://``, None
    (kombu's own, from the URL) for anything else (``rediss://`` keeps kombu's TLS
    defaults, ``sentinel://`` and ``redis+socket://`` their own transports)."""
    return _PATH if broker_url.lower().startswith("redis://") else None
