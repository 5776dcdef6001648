"""Redis clients from URLs, including the embedded (fakeredis) mode.

``fakeredis://name`` gives an in-process Redis shared by everything in this process that
uses the same name — how ``snakepool demo`` runs with no Redis server at all. Only the
embedded mode and unit tests use it.
"""

from __future__ import annotations

import threading
from typing import Any

import redis

__all__ = ["EMBEDDED_SCHEME", "redis_answers", "redis_from_url"]

EMBEDDED_SCHEME = "fakeredis://"
_servers: dict[str, Any] = {}
_lock = threading.Lock()


def redis_from_url(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://`` or ``fakeredis://``)."""
    if url.startswith(EMBEDDED_SCHEME):
        import fakeredis

        name = url[len(EMBEDDED_SCHEME) :] or "default"
        with _lock:
            server = _servers.setdefault(name, fakeredis.FakeServer())
        fake: redis.Redis = fakeredis.FakeRedis(server=server, **options)
        return fake
    return redis.Redis.from_url(url, **options)


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url`` within ``timeout`` seconds."""
    if url.startswith(EMBEDDED_SCHEME):
        return True
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False
