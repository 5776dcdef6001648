"""AsyncClient's own option, ``max_threads``: anything but a whole number from 1 to
MAX_THREADS is ``InvalidArguments`` before anything connects (0 and -1 were a builtin
``ValueError`` from the thread pool, ``"4"`` a ``TypeError``; 1.5 and True were taken)."""

from __future__ import annotations

import uuid

import pytest

from snakepool import AsyncClient
from snakepool.config import load_settings
from snakepool.errors import InvalidArguments
from snakepool.tasks.async_client import DEFAULT_THREADS, MAX_THREADS

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("threads", [0, -1, MAX_THREADS + 1, 1.5, "4", True, float("nan")])
def test_a_thread_count_that_is_not_one_is_refused(threads: object) -> None:
    with pytest.raises(InvalidArguments, match="max_threads"):
        AsyncClient(redis_url="redis://127.0.0.1:1/0", max_threads=threads)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("threads", "made"), [(1, 1), (MAX_THREADS, MAX_THREADS), (None, DEFAULT_THREADS)]
)
def test_thread_counts_in_range_are_taken(threads: int | None, made: int) -> None:
    url = f"fakeredis://{uuid.uuid4().hex}"
    client = AsyncClient(settings=load_settings(redis_url=url, broker_url=url), max_threads=threads)
    try:
        assert client._executor._max_workers == made
    finally:
        client._release()
