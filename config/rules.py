"""Settings checked together: values that are each valid but contradict each other.

A single field's range lives on the field (:mod:`snakepool.config.settings`); what no
single field can say lives here: the visibility timeout must outlast a request, a
warm shutdown must let a started request finish, a message must hold a stored program,
the broker and the store must be in the same world. Each rule says why, because the
person reading the error has to choose which of the two values to change.

Every contradiction found is reported at once, in one
:class:`~snakepool.errors.ConfigError` naming the first setting to change. Each setting
in a message is named the way the user wrote it (:func:`setting_name`): its env var
(``SNAKEPOOL_REQUEST_TIMEOUT``), or its file, line and TOML key
(``snakepool.toml:3: request_timeout``) when the TOML file set it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from snakepool.config.limits import MAX_PROGRAM_BYTES, REDIS_MAX_BULK_BYTES
from snakepool.config.secrets import redact_url
from snakepool.errors import ConfigError

if TYPE_CHECKING:
    from snakepool.config.settings import PoolSettings, Settings

__all__ = [
    "BROKER_SCHEMES",
    "MIN_SYSTEM_MESSAGE_BYTES",
    "REDIS_SCHEMES",
    "Contradiction",
    "check_broker_url",
    "check_redis_url",
    "named_as_written",
    "pool_contradictions",
    "raise_contradictions",
    "setting_name",
    "system_contradictions",
]

#: ``REDIS_URL`` holds sessions, flags and Celery's results: redis-py and Celery's
#: result backend must both understand it (so no ``unix://``: Celery's backend does not).
REDIS_SCHEMES = ("redis", "rediss", "fakeredis")
#: ``BROKER_URL``: kombu's Redis transports (``fakeredis``: the embedded demo).
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "fakeredis")
#: Smallest ``MAX_MESSAGE_BYTES`` of a whole system: V3 sends a stored program (up to
#: ``MAX_PROGRAM_BYTES``) inline with its inputs in every ``execute_program`` request.
MIN_SYSTEM_MESSAGE_BYTES = 2 * MAX_PROGRAM_BYTES

_EMBEDDED = "fakeredis"
#: The ``?parameters`` of a ``rediss://`` URL that both kombu and redis-py take (TLS).
_TLS_QUERY = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"})
_DATABASE = re.compile(r"/?[0-9]*")
#: Setting → how the user wrote it, while :func:`named_as_written` is in force.
_ORIGINS: ContextVar[Mapping[str, str] | None] = ContextVar("snakepool_origins", default=None)


@contextmanager
def named_as_written(origins: Mapping[str, str]) -> Iterator[None]:
    """Within this block, :func:`setting_name` names each setting by ``origins``.

    Args:
        origins: Setting (``request_timeout``) → where its value was written
            (``snakepool.toml:3: request_timeout``, ``SNAKEPOOL_REQUEST_TIMEOUT``), as
            :class:`~snakepool.config.sources.Layers` records it.
    """
    token = _ORIGINS.set(origins)
    try:
        yield
    finally:
        _ORIGINS.reset(token)


def setting_name(field: str) -> str:
    """How to name setting ``field`` in a message: where the user wrote it, else (a
    default) the env var that would set it."""
    origins = _ORIGINS.get() or {}
    return origins.get(field, f"SNAKEPOOL_{field.upper()}")


@dataclass(frozen=True)
class Contradiction:
    """One broken rule: the setting to change (``VISIBILITY_TIMEOUT``) and why."""

    setting: str
    message: str


def _scheme(url: str, allowed: Sequence[str]) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in allowed:
        listed = ", ".join(f"{s}://" for s in allowed)
        given = f"not {scheme}://" if scheme else "not a URL"
        why = " (Celery's result backend cannot use unix sockets)" if scheme == "unix" else ""
        raise ValueError(f"must be a URL starting with one of {listed}, {given}{why}")
    return scheme


def _query_refusal(url: str, *, broker: bool) -> str | None:
    """Why ``url``'s ``?parameters`` cannot be used, or None.

    redis-py takes its own connection parameters from a URL (and passes any other
    name on, to fail at the first connection); kombu's Connection, which reads the
    broker URL, takes none but the TLS ones of ``rediss://`` and fails on any other with a
    raw ``TypeError``. ``password`` / ``username`` are taken by both: redis-py reads them,
    and :func:`~snakepool.tasks.worker.broker_url.kombu_url` moves them into the user part
    before kombu sees the URL.
    """
    import redis

    names = [name for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)]
    tls = _TLS_QUERY if url.lower().startswith("rediss://") else frozenset()
    allowed = tls if broker else tls | frozenset(redis.connection.URL_QUERY_ARGUMENT_PARSERS)
    for name in names:
        if name not in allowed and name not in ("password", "username"):
            where = (
                "the Celery broker (kombu) takes no ?parameters but the TLS ones of rediss://"
                if broker
                else "redis-py does not know it"
            )
            return f"unknown URL parameter {name[:40]!r}: {where}"
    return None


def _check_redis_form(url: str, *, broker: bool = False) -> None:
    import redis

    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"not a valid Redis URL: {exc}") from None
    if not _DATABASE.fullmatch(urlsplit(url).path):
        raise ValueError("the database must be a number, as in redis://host:6379/0")
    refusal = _query_refusal(url, broker=broker)
    if refusal is not None:
        raise ValueError(refusal)


def check_redis_url(url: str) -> str:
    """Return ``url`` if it can hold sessions, flags and results.

    Raises:
        ValueError: another scheme (``unix://`` too: Celery's result backend cannot use
            it), or a malformed Redis URL.
    """
    if _scheme(url, REDIS_SCHEMES) != _EMBEDDED:
        _check_redis_form(url)
    return url


def check_broker_url(url: str) -> str:
    """Return ``url`` if it names a Redis broker.

    Raises:
        ValueError: another transport (snakepool's late acks and visibility timeout
            are the Redis transport's), or a malformed ``redis://`` URL.
    """
    if _scheme(url, BROKER_SCHEMES) in ("redis", "rediss"):
        _check_redis_form(url, broker=True)
    return url


def pool_contradictions(settings: PoolSettings) -> list[Contradiction]:
    """What contradicts among the pool's own settings."""
    found = []
    if settings.lm_answers and settings.lm != "dummy":
        found.append(Contradiction(
            "LM_ANSWERS",
            f"{setting_name('lm_answers')} is only read by the dummy LM, but "
            f"{setting_name('lm')} is {settings.lm!r}: unset one of them",
        ))  # fmt: skip
    return found


def system_contradictions(settings: Settings) -> list[Contradiction]:
    """What contradicts among a whole system's settings (pool, lanes, broker, store)."""
    found = pool_contradictions(settings)
    request, queue = settings.request_timeout, settings.queue_timeout
    visibility = settings.visibility_timeout
    named = {
        field: setting_name(field)
        for field in ("request_timeout", "queue_timeout", "visibility_timeout", "shutdown_grace",
                      "result_timeout", "rollout_bake_seconds", "rollout_window")
    }  # fmt: skip
    if visibility <= request:
        found.append(Contradiction(
            "VISIBILITY_TIMEOUT",
            f"{named['visibility_timeout']} ({visibility:g} s) must be greater than "
            f"{named['request_timeout']} ({request:g} s): Redis redelivers a message not "
            "acknowledged within the visibility timeout, so a longer request would run "
            "twice, on two nodes",
        ))  # fmt: skip
    elif visibility <= queue + request:
        found.append(Contradiction(
            "VISIBILITY_TIMEOUT",
            f"{named['visibility_timeout']} ({visibility:g} s) must be greater than "
            f"{named['queue_timeout']} + {named['request_timeout']} ({queue:g} + {request:g} "
            f"= {queue + request:g} s): a request may wait that long for an interpreter and "
            "run before it is acknowledged, and would then run twice, on two nodes",
        ))  # fmt: skip
    grace = settings.shutdown_grace
    if grace is not None and grace < request:
        found.append(Contradiction(
            "SHUTDOWN_GRACE",
            f"{named['shutdown_grace']} ({grace:g} s) must be at least "
            f"{named['request_timeout']} ({request:g} s): a warm shutdown lets started "
            "requests run to their own timeout",
        ))  # fmt: skip
    if settings.result_timeout <= request:
        found.append(Contradiction(
            "RESULT_TIMEOUT",
            f"{named['result_timeout']} ({settings.result_timeout:g} s) must be greater than "
            f"{named['request_timeout']} ({request:g} s): clients would stop waiting for "
            "requests that are still allowed to run",
        ))  # fmt: skip
    elif settings.result_timeout <= queue + request:
        found.append(Contradiction(
            "RESULT_TIMEOUT",
            f"{named['result_timeout']} ({settings.result_timeout:g} s) must be greater than "
            f"{named['queue_timeout']} + {named['request_timeout']} ({queue:g} + {request:g} "
            f"= {queue + request:g} s): a request may wait that long for an interpreter and "
            "then run, and would succeed after its caller was told ResultTimeout",
        ))  # fmt: skip
    if settings.rollout_bake_seconds < settings.rollout_window:
        found.append(Contradiction(
            "ROLLOUT_BAKE_SECONDS",
            f"{named['rollout_bake_seconds']} ({settings.rollout_bake_seconds:g} s) must be at "
            f"least {named['rollout_window']} ({settings.rollout_window} s): the controller "
            "would promote a step before it has filled one window of its own traffic",
        ))  # fmt: skip
    found.extend(_message_size(settings.max_message_bytes))
    found.extend(_same_world(settings.redis_url, settings.broker_url))
    found.extend(_broker_query(settings.redis_url, settings.broker_url))
    return found


def _broker_query(redis_url: str, broker_url: str | None) -> list[Contradiction]:
    """``REDIS_URL`` with redis-py ``?parameters`` that, as the default broker, kombu refuses."""
    if broker_url not in (None, redis_url) or not redis_url.lower().startswith(
        ("redis://", "rediss://")
    ):
        return []  # a BROKER_URL of its own was checked on its own
    refusal = _query_refusal(redis_url, broker=True)
    if refusal is None:
        return []
    return [Contradiction(
        "BROKER_URL",
        f"{setting_name('redis_url')} ({redact_url(redis_url)}) is also the broker's URL "
        f"while {setting_name('broker_url')} is unset, and as the broker's: {refusal}; set "
        f"{setting_name('broker_url')} to the URL without them",
    )]  # fmt: skip


def _message_size(size: int) -> list[Contradiction]:
    if size < MIN_SYSTEM_MESSAGE_BYTES:
        return [Contradiction(
            "MAX_MESSAGE_BYTES",
            f"{setting_name('max_message_bytes')} ({size}) must be at least "
            f"{MIN_SYSTEM_MESSAGE_BYTES}: V3 sends a session's program (up to "
            f"{MAX_PROGRAM_BYTES} bytes) inline with its inputs",
        )]  # fmt: skip
    if size > REDIS_MAX_BULK_BYTES:
        return [Contradiction(
            "MAX_MESSAGE_BYTES",
            f"{setting_name('max_message_bytes')} ({size}) must be at most {REDIS_MAX_BULK_BYTES} "
            "(Redis's largest value): a larger result could not be stored as a task result",
        )]  # fmt: skip
    return []


def _same_world(redis_url: str, broker_url: str | None) -> list[Contradiction]:
    broker = broker_url or redis_url
    embedded_store = redis_url.lower().startswith(f"{_EMBEDDED}://")
    embedded_broker = broker.lower().startswith(f"{_EMBEDDED}://")
    if embedded_store == embedded_broker:
        return []
    return [Contradiction(
        "BROKER_URL" if embedded_broker else "REDIS_URL",
        f"{setting_name('redis_url')} ({redact_url(redis_url)}) and "
        f"{setting_name('broker_url')} ({redact_url(broker)}) must both be embedded "
        "(fakeredis://) or both real: "
        "an embedded Redis exists only inside one process, so workers elsewhere would "
        "never see the other",
    )]  # fmt: skip


def raise_contradictions(found: Sequence[Contradiction]) -> None:
    """Raise one ConfigError for every contradiction found (none: return).

    Raises:
        ConfigError: ``setting`` is the first contradiction's; the message lists all.
    """
    if not found:
        return
    message = "contradicting settings: " + "; ".join(c.message for c in found)
    raise ConfigError(message, setting=found[0].setting)
