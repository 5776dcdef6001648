"""A Redis URL's ``?parameters`` (review 8): each one is one redis-py or kombu takes, or a
``ConfigError`` naming the setting — never a raw ``TypeError`` from kombu or redis-py at
the first connection (``?password=`` made every CLI command a traceback)."""

from __future__ import annotations

import pytest

from snakepool.config import load_settings
from tests.unit.test_settings import config_error


@pytest.mark.parametrize(
    ("name", "url", "message"),
    [
        ("REDIS_URL", "redis://:hunter2@h:6379/0?foo=bar",
         "unknown URL parameter 'foo': redis-py does not know it"),
        ("REDIS_URL", "redis://h:6379/0?ssl_cert_reqs=none",
         "unknown URL parameter 'ssl_cert_reqs'"),
        ("BROKER_URL", "redis://:hunter2@h:6379/0?socket_timeout=5",
         "unknown URL parameter 'socket_timeout': the Celery broker (kombu) takes no"),
    ],
)  # fmt: skip
def test_a_parameter_nothing_takes_names_the_setting(name: str, url: str, message: str) -> None:
    error = config_error(**{name: url})
    assert f"SNAKEPOOL_{name}" in str(error) and message in str(error)
    assert error.setting == name
    assert "hunter2" not in str(error)


def test_redis_py_parameters_need_a_broker_url_of_their_own() -> None:
    error = config_error(REDIS_URL="redis://:hunter2@h:6379/0?socket_timeout=5")
    assert error.setting == "BROKER_URL"
    assert "is also the broker's URL while SNAKEPOOL_BROKER_URL is unset" in str(error)
    assert "set SNAKEPOOL_BROKER_URL to the URL without them" in str(error)
    assert "hunter2" not in str(error)


@pytest.mark.parametrize(
    ("redis_url", "broker_url"),
    [
        ("redis://h:6379/0?socket_timeout=5&health_check_interval=10", "redis://h:6379/0"),
        ("rediss://h:6380/0?ssl_cert_reqs=required", None),
        ("rediss://h:6380/0", "rediss://h:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem"),
        # Credentials as parameters: redis-py reads them; kombu gets them in the user part
        # (tasks.worker.broker_url.kombu_url; end to end in test_secrets_cli).
        ("redis://h:6379/0?password=hunter2", None),
        ("redis://h:6379/0?username=u&password=p", None),
        ("rediss://h:6380/0", "rediss://h:6379/0?password=hunter2"),
    ],
)
def test_parameters_both_take_are_accepted(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, broker_url: str | None
) -> None:
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", redis_url)
    if broker_url is not None:
        monkeypatch.setenv("SNAKEPOOL_BROKER_URL", broker_url)
    assert load_settings().broker_url == (broker_url or redis_url)
