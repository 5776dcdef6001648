from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from snakepool.pool import Pool

PoolFactory = Callable[..., Pool]


@pytest.fixture
def make_pool(registry_dir: str) -> Iterator[PoolFactory]:
    """Start pools with a private registry; stop every one of them after the test."""
    pools: list[Pool] = []

    def factory(*, start: bool = True, **settings: Any) -> Pool:
        settings.setdefault("registry_dir", registry_dir)
        settings.setdefault("startup_timeout", 30)
        pool = Pool(**settings)
        pools.append(pool)
        if start:
            pool.start()
        return pool

    yield factory
    for pool in pools:
        pool.stop(grace=2)


@pytest.fixture
def chaos_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow the chaos adapter in interpreters started by this test."""
    monkeypatch.setenv("SNAKEPOOL_ENABLE_CHAOS", "1")
