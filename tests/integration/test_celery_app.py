"""``celery -A snakepool.tasks.worker.celery_app`` (review finding 12): Celery's own command
line with the nodes' app, built from the settings on first use, the broker URL from the
environment — never ``celery -b URL``, which shows a password to ``ps``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.app.utils import find_app

from snakepool.errors import ConfigError
from snakepool.tasks.worker import celery_app
from tests.integration.cluster import ROOT, Cluster

pytestmark = [pytest.mark.integration]

MODULE = "snakepool.tasks.worker.celery_app"


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No app built yet (and none left built for the next test)."""
    monkeypatch.setattr(celery_app, "_app", None)
    yield
    built = celery_app._app
    if built is not None:
        built.close()


def test_importing_reads_no_settings_the_app_is_built_on_first_use(
    fresh: None, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZ", "4")  # a misspelt setting: only use may fail
    importlib.reload(celery_app)
    with pytest.raises(ConfigError, match="did you mean SNAKEPOOL_POOL_SIZE"):
        celery_app.app  # noqa: B018 - the attribute celery -A reads
    monkeypatch.delenv("SNAKEPOOL_POOL_SIZ")
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", redis_url)
    app = find_app(MODULE)  # what `celery -A` does
    assert app is celery_app.app is celery_app.celery is celery_app.get_app()
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert app.conf.broker_url == redis_url
    assert app.snakepool_settings.redis_url == redis_url


def test_the_broker_url_in_the_environment_wins(
    fresh: None, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("CELERY_BROKER_URL", redis_url)  # Celery reads it before any config
    assert celery_app.get_app().conf.broker_url == redis_url


@pytest.mark.timeout(120)
def test_celery_inspect_ping_reaches_a_node(redis_url: str, tmp_path: Path) -> None:
    cluster = Cluster(
        redis_url, tmp_path, adapter="snakepool.pool.interpreter.builtin", pool_size=1
    )
    try:
        node = cluster.start("v3", "inspected")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CELERY_BROKER_URL": redis_url}
        env["SNAKEPOOL_REDIS_URL"] = redis_url
        done = subprocess.run(
            [str(Path(sys.executable).parent / "celery"), "-A", MODULE, "inspect", "ping",
             "-d", node.hostname, "--timeout", "10"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=90, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"{node.hostname}: OK" in done.stdout and "pong" in done.stdout
        assert "1 node online" in done.stdout
    finally:
        assert cluster.stop() == []
