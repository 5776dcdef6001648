"""A Client made before the process forks keeps working in every child.

gunicorn ``--preload`` and uWSGI without ``lazy-apps`` build the application — and so
its Client — once, then fork the workers. Every child inherits the parent's sockets: the
broker connection and the result backend's subscription. Without care, a child's result
can be read by its sibling or the parent, and its caller waits in vain.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import time
from collections.abc import Iterator
from multiprocessing.queues import Queue
from pathlib import Path

import pytest

from snakepool.tasks.async_client import AsyncClient
from snakepool.tasks.client import Client
from tests.integration.cluster import Cluster, one_node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHILDREN = 3
REQUESTS = 15


@pytest.fixture(scope="module")
def node(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        redis_server, tmp_path_factory.mktemp("fork"), adapter="snakepool.pool.interpreter.builtin"
    )
    with one_node(cluster, "fork") as started:
        yield started


def _requests(client: Client, tag: str) -> int:
    """How many of REQUESTS echo calls came back with their own payload."""
    right = 0
    for i in range(REQUESTS):
        payload = {"tag": tag, "i": i}
        right += client.execute("echo", payload, timeout=20) == payload
    return right


@pytest.mark.timeout(120)
@pytest.mark.parametrize("routing", ["router", "direct"])
def test_children_forked_after_the_client_get_their_own_results(
    node: Cluster, routing: str, tmp_path: Path
) -> None:
    client = Client(redis_url=node.redis_url, routing=routing)
    try:
        assert client.execute("ping", timeout=30)["pong"] is True  # connections are open
        children: dict[int, int] = {}
        for n in range(CHILDREN):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: no pytest machinery from here on
                os.close(read_fd)
                code = 1
                try:
                    os.write(write_fd, str(_requests(client, f"child-{n}")).encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write_fd)
            children[pid] = read_fd
        assert _requests(client, "parent") == REQUESTS
        answers: dict[int, int] = {}
        deadline = time.monotonic() + 90
        while len(answers) < CHILDREN:
            ready, _, _ = select.select(
                [fd for pid, fd in children.items() if pid not in answers], [], [], 1.0
            )
            for fd in ready:
                pid = next(p for p, f in children.items() if f == fd)
                answers[pid] = int(os.read(fd, 32) or b"-1")
            assert time.monotonic() < deadline, f"children still waiting: {answers}"
        for pid, fd in children.items():
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        assert sorted(answers.values()) == [REQUESTS] * CHILDREN
    finally:
        client.close()


async def _async_requests(client: AsyncClient, tag: str) -> int:
    """How many of REQUESTS concurrent echo calls came back with their own payload."""

    async def one(i: int) -> bool:
        payload = {"tag": tag, "i": i}
        return bool(await client.execute("echo", payload, timeout=20) == payload)

    done = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(REQUESTS))), 40)
    return sum(done)


def _async_child(client: AsyncClient, tag: str, answers: Queue[tuple[str, int]]) -> None:
    try:
        right = asyncio.run(_async_requests(client, tag))
    except BaseException as exc:  # reported as 0 right answers, the reason shown
        print(f"{tag}: {exc!r}", flush=True)
        right = 0
    answers.put((tag, right))


@pytest.mark.timeout(150)
@pytest.mark.parametrize("routing", ["router", "direct"])
def test_an_async_client_used_before_fork_serves_parent_and_children(
    node: Cluster, routing: str
) -> None:
    # Before the fix the children's calls waited for ever: the inherited thread pool
    # counted the parent's threads as idle and never started one of its own.
    client = AsyncClient(redis_url=node.redis_url, routing=routing)
    try:
        assert asyncio.run(_async_requests(client, "before")) == REQUESTS
        context = multiprocessing.get_context("fork")
        answers: Queue[tuple[str, int]] = context.Queue()
        children = [
            context.Process(target=_async_child, args=(client, f"child-{n}", answers))
            for n in range(CHILDREN)
        ]
        for child in children:
            child.start()
        assert asyncio.run(_async_requests(client, "parent")) == REQUESTS
        got = dict(answers.get(timeout=90) for _ in children)
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert got == {f"child-{n}": REQUESTS for n in range(CHILDREN)}
    finally:
        asyncio.run(client.aclose())
