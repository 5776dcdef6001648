"""What answers on a local TCP port: nothing, a Redis, or something else.

``snakepool up`` starts a redis-server only when nothing listens on the port of a local
``REDIS_URL``. When something does and is not a Redis snakepool can use (a web server,
a silent service, a Redis that wants a password), ``up`` must say so at once, naming the
port and what answered — not start a redis-server that cannot bind, nor wait on a
connection that never answers.
"""

from __future__ import annotations

import socket

__all__ = ["PROBE_TIMEOUT", "what_answers"]

#: Seconds to connect, and then to wait for an answer to PING.
PROBE_TIMEOUT = 1.0
#: Redis' inline PING; every Redis answers it (``+PONG``, or an error such as ``-NOAUTH``).
_PING = b"PING\r\n"
#: The most of an answer quoted back.
_QUOTED = 60


def what_answers(host: str, port: int, *, timeout: float = PROBE_TIMEOUT) -> str | None:
    """What listens on ``host:port``, in words; None when nothing does.

    Returns:
        None (connection refused: the port is free), or one of ``"a Redis (PONG)"``,
        ``"a Redis that refuses: <its error>"``, ``"something that is not Redis:
        <the first bytes it sent>"``, ``"something that accepted the connection and
        said nothing in <timeout> s"``. Never raises; takes at most about
        ``2 * timeout`` seconds.
    """
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return None
    except OSError as exc:
        return f"no connection ({exc.strerror or exc})"
    with connection:
        try:
            connection.sendall(_PING)
            answer = connection.recv(256)
        except TimeoutError:
            return f"something that accepted the connection and said nothing in {timeout:g} s"
        except OSError as exc:
            return f"something that closed the connection ({exc.strerror or exc})"
    return _described(answer)


def _described(answer: bytes) -> str:
    """What sent ``answer`` (the first bytes after our PING), in words."""
    first = answer.split(b"\r\n", 1)[0]
    quoted = first[:_QUOTED].decode("ascii", "backslashreplace")
    if first == b"+PONG":
        return "a Redis (PONG)"
    if first.startswith(b"-"):
        return f"a Redis that refuses: {quoted[1:]!r}"
    if not answer:
        return "something that closed the connection without answering"
    return f"something that is not Redis: {quoted!r}"
