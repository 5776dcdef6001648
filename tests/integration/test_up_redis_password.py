"""The Redis ``snakepool up`` starts asks for the password ``REDIS_URL`` carries.

Found in review: with a password in ``REDIS_URL`` and no Redis answering, ``up`` started
its throwaway redis-server with no password at all. The password reaches redis-server on
its standard input (``redis-server -``), never on its command line.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import redis

from snakepool.tasks.local.launcher import Launcher
from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

#: Every character a config line could trip on: quotes, space, backslash, newline, '#'.
ODD_PASSWORD = 'p@ss w"rd\\ #:\né%40'


@pytest.mark.parametrize("username", [None, "default", "snake-pool"])
def test_up_s_redis_asks_for_the_url_s_password(username: str | None, tmp_path: Path) -> None:
    port = free_port()
    with Launcher({}, logdir=tmp_path) as launcher:
        managed = launcher.start_redis(port, username=username, password=ODD_PASSWORD)
        arguments = " ".join(psutil.Process(managed.process.pid).cmdline())
        assert "p@ss" not in arguments and "rd" not in arguments.replace("redis", "")
        anonymous = redis.Redis(port=port, socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        wrong = redis.Redis(port=port, username=username, password="p@ss", socket_timeout=5)
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        right = redis.Redis(port=port, username=username, password=ODD_PASSWORD, socket_timeout=5)
        assert right.ping() is True
        assert right.set("k", "v") and right.get("k") == b"v"
        right.close()
        pid = managed.process.pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_without_a_password_up_s_redis_asks_for_none(tmp_path: Path) -> None:
    port = free_port()
    with Launcher({}, logdir=tmp_path) as launcher:
        launcher.start_redis(port)
        client = redis.Redis(port=port, socket_timeout=5)
        assert client.ping() is True
        client.close()
