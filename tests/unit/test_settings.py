from pathlib import Path

import pytest

from snakepool.config import load_pool_settings, load_settings
from snakepool.errors import ConfigError
from snakepool.pool import Pool


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZE", "3")
    monkeypatch.setenv("SNAKEPOOL_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", "redis://example:6380/1")
    settings = load_settings()
    assert settings.pool_size == 3
    assert settings.request_timeout == 2.5
    assert settings.broker_url == "redis://example:6380/1"  # defaults to REDIS_URL
    assert settings.start_method == "forkserver"
    assert settings.adapter == "snakepool.pool.interpreter.builtin"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("POOL_SIZE", "0", "SNAKEPOOL_POOL_SIZE: Input should be greater than or equal to 1"),
        ("POOL_SIZE", "many", "SNAKEPOOL_POOL_SIZE"),
        ("START_METHOD", "fork", "SNAKEPOOL_START_METHOD: Input should be 'forkserver' or 'spawn'"),
        ("REQUEST_TIMEOUT", "-1", "SNAKEPOOL_REQUEST_TIMEOUT: Input should be greater than 0"),
        ("MAX_MESSAGE_BYTES", "10", "SNAKEPOOL_MAX_MESSAGE_BYTES"),
        ("ADAPTER", "not a path", "SNAKEPOOL_ADAPTER: Value error, must be a dotted module path"),
        ("PYTHON", "/nonexistent/python", "SNAKEPOOL_PYTHON: Value error, no executable Python"),
    ],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(f"SNAKEPOOL_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert fragment in str(caught.value)
    assert caught.value.setting == name


def test_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "snakepool.toml"
    path.write_text('pool_size = 5\nadapter = "tests.adapters.greeter"\nqueue_timeout = 1.5\n')
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(path))
    monkeypatch.setenv("SNAKEPOOL_QUEUE_TIMEOUT", "2")  # env beats the file
    settings = load_settings()
    assert (settings.pool_size, settings.adapter, settings.queue_timeout) == (
        5, "tests.adapters.greeter", 2.0,
    )  # fmt: skip
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


def test_pool_keywords_are_validated() -> None:
    with pytest.raises(ConfigError, match="pool_size: Input should be greater than or equal to 1"):
        Pool(size=0)
    with pytest.raises(ConfigError, match="unknown pool setting"):
        Pool(sise=3)
    pool = Pool(size=2, max_requests_per_worker=10, max_message_bytes=2048)
    assert pool.settings.pool_size == 2 and pool.settings.max_message_bytes == 2048
    assert load_pool_settings(queue_timeout=0).queue_timeout == 0


def test_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZE", "3")
    pool = Pool.from_settings(load_settings(), request_timeout=7)
    assert pool.settings.pool_size == 3 and pool.settings.request_timeout == 7
