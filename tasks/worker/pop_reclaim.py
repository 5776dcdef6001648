"""The reliable pop's reclaim: what a lost reply left behind goes back to its queue
(why: :mod:`~snakepool.tasks.worker.pop`).

A reply lost with its connection may have carried a message (a ``BLMOVE``'s or a take's:
the message is on the processing list) or confirmed an ``ACCEPT`` (it may have run: the
message is in ``unacked``, delivered nowhere). Once no other reply is pending, the
channel puts both back at the head of the lists they came from.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import redis
from kombu.exceptions import InconsistencyError
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from snakepool.tasks.worker import pop_scripts as scripts

if TYPE_CHECKING:
    from snakepool.tasks.worker.pop import ReliableChannel

__all__ = ["give_back", "home", "reclaim"]

log = logging.getLogger("snakepool.broker")


def reclaim(channel: ReliableChannel, unsure: dict[str, bytes]) -> None:
    """Put back every message on ``channel``'s processing list, and each of ``unsure``
    (delivery tag → message: the ``ACCEPT`` whose reply was lost) that is in ``unacked``
    (:data:`~snakepool.tasks.worker.pop_scripts.RESTORE`); ``unsure`` is emptied.

    Raises:
        redis.ConnectionError: Redis is away (the channel tries again later).
    """
    processing = channel.processing_list
    with channel.conn_or_acquire() as client:
        items = client.lrange(processing, 0, -1)
        for item in items:  # newest first: the oldest ends at the head of its list
            try:
                source = home(channel, item)
            except (ValueError, TypeError, KeyError, RecursionError):
                log.error("dropping an unreadable message: %r", item[:200])
                client.lrem(processing, -1, item)
                continue
            client.eval(scripts.GIVE_BACK, 2, processing, source, item, "RIGHT")
        for tag, item in list(unsure.items()):
            keys: tuple[Any, ...] = (
                channel.unacked_key, channel.unacked_index_key, home(channel, item)
            )  # fmt: skip
            if channel.inflight_record:
                keys += (channel.inflight_record,)
            items.extend([item] * client.eval(scripts.RESTORE, len(keys), *keys, tag, item))
            del unsure[tag]
    if items:
        log.warning("%d message(s) whose reply was lost put back on their queues",
                    len(items))  # fmt: skip


def give_back(channel: ReliableChannel, item: bytes, source: str) -> None:
    """Put a message from the processing list back at the head of ``source`` (at its
    newest end for a list of shadow copies); Redis away or refusing (OOM): later, by the
    reclaim."""
    end = "LEFT" if channel.deferral.is_deferred(source) else "RIGHT"
    try:
        with channel.conn_or_acquire() as client:
            client.eval(scripts.GIVE_BACK, 2, channel.processing_list, source, item, end)
    except (*channel.connection_errors, redis.ResponseError):
        channel.reclaim_later()


def home(channel: ReliableChannel, item: bytes) -> str:
    """The list a message on the processing list came from (its exchange and routing
    key, as kombu routes it, and its priority's list)."""
    payload = loads(bytes_to_str(item))
    info = payload["properties"]["delivery_info"]
    try:
        queues = channel._lookup(info["exchange"], info["routing_key"])
    except (InconsistencyError, KeyError):
        queues = []
    queue = sorted(queues)[0] if queues else info["routing_key"]
    return str(channel._q_for_pri(queue, channel._get_message_priority(payload, reverse=False)))
