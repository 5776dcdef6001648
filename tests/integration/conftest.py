from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery

from snakepool.config.settings import load_settings
from snakepool.pool import Pool
from snakepool.tasks.worker.app import create_app

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


@pytest.fixture
def node_app(redis_url: str) -> Iterator[Celery]:
    """A worker node's Celery app (``create_app(node=True)``) on the session's Redis."""
    app = create_app(load_settings(redis_url=redis_url), node=True)
    yield app
    app.close()
