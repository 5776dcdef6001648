"""The broker channel builds one redis-py client per connection pool, not one per publish
and per ack (kombu's way, ~10 % of a node's CPU), and messages still go through it."""

from __future__ import annotations

import kombu
import pytest

from snakepool.tasks.worker.broker import Transport

pytestmark = [pytest.mark.integration]


def test_one_client_per_pool_and_a_new_one_for_a_new_pool(redis_url: str) -> None:
    with kombu.Connection(redis_url, transport=Transport) as connection:
        channel = connection.channel()
        try:
            first = channel._create_client()
            assert channel._create_client() is first
            assert first.connection_pool is channel.pool
            queue = kombu.Queue("broker-client-test", channel=channel)
            queue.declare()
            producer = kombu.Producer(channel)
            for n in range(3):
                producer.publish({"n": n}, routing_key="broker-client-test")
            got = [queue.get(no_ack=False) for _ in range(3)]
            assert [m.payload["n"] for m in got if m is not None] == [0, 1, 2]
            for message in got:
                assert message is not None
                message.ack()
            assert channel._create_client() is first  # publishes and acks reused it
            channel._disconnect_pools()  # what a lost connection does
            second = channel._create_client()
            assert second is not first and second.connection_pool is channel.pool
        finally:
            channel.close()
