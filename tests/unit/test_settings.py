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


# ------------------------------------------------- values checked together

MIB = 1024 * 1024


def config_error(**env: str) -> ConfigError:
    """The ConfigError load_settings raises with ``SNAKEPOOL_<name>=value`` set."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(f"SNAKEPOOL_{name}", value)
        with pytest.raises(ConfigError) as caught:
            load_settings()
    return caught.value


def test_visibility_timeout_must_outlast_a_request() -> None:
    error = config_error(VISIBILITY_TIMEOUT="10", REQUEST_TIMEOUT="30")
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_VISIBILITY_TIMEOUT (10 s) must be greater than "
        "SNAKEPOOL_REQUEST_TIMEOUT (30 s): Redis redelivers a message not acknowledged within "
        "the visibility timeout, so a longer request would run twice, on two nodes"
    )
    assert error.setting == "VISIBILITY_TIMEOUT"
    error = config_error(VISIBILITY_TIMEOUT="35", REQUEST_TIMEOUT="30")  # QUEUE_TIMEOUT 10
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_VISIBILITY_TIMEOUT (35 s) must be greater than "
        "SNAKEPOOL_QUEUE_TIMEOUT + SNAKEPOOL_REQUEST_TIMEOUT (10 + 30 = 40 s): a request may "
        "wait that long for an interpreter and run before it is acknowledged, and would then "
        "run twice, on two nodes"
    )
    assert (
        config_error(VISIBILITY_TIMEOUT="40", REQUEST_TIMEOUT="30").setting == "VISIBILITY_TIMEOUT"
    )


def test_visibility_timeout_just_above_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPOOL_VISIBILITY_TIMEOUT", "41")
    monkeypatch.setenv("SNAKEPOOL_REQUEST_TIMEOUT", "30")
    settings = load_settings()
    assert (settings.visibility_timeout, settings.shutdown_grace) == (41, 35.0)


def test_shutdown_grace_lets_a_request_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(SHUTDOWN_GRACE="10", REQUEST_TIMEOUT="30")
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_SHUTDOWN_GRACE (10 s) must be at least "
        "SNAKEPOOL_REQUEST_TIMEOUT (30 s): a warm shutdown lets started requests run to their "
        "own timeout"
    )
    assert error.setting == "SHUTDOWN_GRACE"
    monkeypatch.setenv("SNAKEPOOL_SHUTDOWN_GRACE", "30")
    monkeypatch.setenv("SNAKEPOOL_REQUEST_TIMEOUT", "30")
    assert load_settings().shutdown_grace == 30
    monkeypatch.delenv("SNAKEPOOL_SHUTDOWN_GRACE")
    monkeypatch.setenv("SNAKEPOOL_REQUEST_TIMEOUT", "50")
    monkeypatch.setenv("SNAKEPOOL_RESULT_TIMEOUT", "90")  # > QUEUE_TIMEOUT + 50
    assert load_settings().shutdown_grace == 55  # unset: REQUEST_TIMEOUT + 5 s


def test_clients_wait_longer_than_a_request_may_run() -> None:
    error = config_error(RESULT_TIMEOUT="30", REQUEST_TIMEOUT="30")
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_RESULT_TIMEOUT (30 s) must be greater than "
        "SNAKEPOOL_REQUEST_TIMEOUT (30 s): clients would stop waiting for requests that are "
        "still allowed to run"
    )
    assert error.setting == "RESULT_TIMEOUT"


def test_clients_wait_longer_than_a_request_may_wait_and_run() -> None:
    # Found in review: 60 s of waiting against 100 s of queue + 30 s of run was accepted,
    # and a request could succeed after its caller was told ResultTimeout.
    error = config_error(QUEUE_TIMEOUT="100", REQUEST_TIMEOUT="30", RESULT_TIMEOUT="60",
                         VISIBILITY_TIMEOUT="3600")  # fmt: skip
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_RESULT_TIMEOUT (60 s) must be greater than "
        "SNAKEPOOL_QUEUE_TIMEOUT + SNAKEPOOL_REQUEST_TIMEOUT (100 + 30 = 130 s): a request "
        "may wait that long for an interpreter and then run, and would succeed after its "
        "caller was told ResultTimeout"
    )
    assert error.setting == "RESULT_TIMEOUT"
    assert (
        config_error(QUEUE_TIMEOUT="30", REQUEST_TIMEOUT="30", RESULT_TIMEOUT="60").setting
        == "RESULT_TIMEOUT"
    )  # equal is not enough: the hops to and from the node take time
    load_settings(redis_url="redis://localhost/0", queue_timeout=29, request_timeout=30,
                  result_timeout=60)  # fmt: skip


def test_every_contradiction_is_listed_the_first_is_the_setting() -> None:
    error = config_error(REQUEST_TIMEOUT="100", VISIBILITY_TIMEOUT="50", SHUTDOWN_GRACE="20")
    assert error.setting == "VISIBILITY_TIMEOUT"
    for name in ("VISIBILITY_TIMEOUT (50 s)", "SHUTDOWN_GRACE (20 s)", "RESULT_TIMEOUT (60 s)"):
        assert f"SNAKEPOOL_{name}" in str(error)


def test_max_message_bytes_against_the_limits() -> None:
    error = config_error(MAX_MESSAGE_BYTES=str(100_000))
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_MAX_MESSAGE_BYTES (100000) must be at least 524288: "
        "V3 sends a session's program (up to 262144 bytes) inline with its inputs"
    )
    error = config_error(MAX_MESSAGE_BYTES=str(600 * MIB))
    assert str(error) == (
        f"contradicting settings: SNAKEPOOL_MAX_MESSAGE_BYTES ({600 * MIB}) must be at most "
        f"{512 * MIB} (Redis's largest value): a larger result could not be stored as a task "
        "result"
    )
    assert error.setting == "MAX_MESSAGE_BYTES"
    # A pool on its own has no sessions and no result backend: its own range applies.
    assert load_pool_settings(max_message_bytes=2048).max_message_bytes == 2048


@pytest.mark.parametrize(
    ("name", "url", "message"),
    [
        ("REDIS_URL", "unix:///tmp/redis.sock", "not unix:// (Celery's result backend cannot "
         "use unix sockets)"),
        ("REDIS_URL", "http://localhost/0", "not http://"),
        ("REDIS_URL", "localhost:6379", "not a URL"),
        ("REDIS_URL", "redis://localhost:99999/0", "not a valid Redis URL: Port out of range"),
        ("REDIS_URL", "redis://localhost:6379/zero", "the database must be a number"),
        ("BROKER_URL", "amqp://guest@localhost//", "not amqp://"),
        ("BROKER_URL", "redis://localhost:6379/x", "the database must be a number"),
    ],
)  # fmt: skip
def test_urls_name_the_setting_and_the_schemes(name: str, url: str, message: str) -> None:
    error = config_error(**{name: url})
    assert f"invalid settings: SNAKEPOOL_{name}: Value error, " in str(error)
    assert message in str(error)
    assert error.setting == name


@pytest.mark.parametrize(
    ("redis_url", "broker_url"),
    [
        ("redis://localhost:6379/0", "rediss://localhost:6380/1"),
        ("rediss://:pw@localhost:6380/2", "sentinel://localhost:26379"),
        ("redis://localhost/0", "redis+socket:///tmp/redis.sock"),
        ("fakeredis://demo", "fakeredis://demo"),
    ],
)
def test_valid_urls(monkeypatch: pytest.MonkeyPatch, redis_url: str, broker_url: str) -> None:
    monkeypatch.setenv("SNAKEPOOL_REDIS_URL", redis_url)
    monkeypatch.setenv("SNAKEPOOL_BROKER_URL", broker_url)
    assert load_settings().broker_url == broker_url


def test_a_url_password_never_appears_in_anconfig_error() -> None:
    error = config_error(REDIS_URL="redis://:hunter2@localhost:6379/zero")
    assert "hunter2" not in str(error) and "redis://:***@localhost:6379/zero" in str(error)
    error = config_error(REDIS_URL="redis://:hunter2@localhost/0", BROKER_URL="fakeredis://x")
    assert "hunter2" not in str(error)


def test_store_and_broker_are_both_embedded_or_both_real() -> None:
    error = config_error(BROKER_URL="fakeredis://demo")
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_REDIS_URL (redis://localhost:6379/0) and "
        "SNAKEPOOL_BROKER_URL (fakeredis://demo) must both be embedded (fakeredis://) or both "
        "real: an embedded Redis exists only inside one process, so workers elsewhere would "
        "never see the other"
    )
    assert error.setting == "BROKER_URL"
    assert (
        config_error(REDIS_URL="fakeredis://demo", BROKER_URL="redis://h/0").setting == "REDIS_URL"
    )


def test_lm_answers_need_the_dummy_lm(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text("{}")
    error = config_error(LM="openai/gpt-4o-mini", LM_ANSWERS=str(answers))
    assert str(error) == (
        "contradicting settings: SNAKEPOOL_LM_ANSWERS is only read by the dummy LM, but "
        "SNAKEPOOL_LM is 'openai/gpt-4o-mini': unset one of them"
    )
    with pytest.raises(ConfigError, match="only read by the dummy LM"):
        Pool(lm="openai/gpt-4o-mini", lm_answers=str(answers))


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("KEY_PREFIX", "snake pool:", "SNAKEPOOL_KEY_PREFIX: Value error, must be 1-64"),
        ("KEY_PREFIX", "snakepool:\n", "SNAKEPOOL_KEY_PREFIX: Value error, must be 1-64"),
        ("ADAPTER", "snakepool.pool.interpreter.builtin\n", "SNAKEPOOL_ADAPTER: Value error"),
        ("BREAKER_WINDOW", "601", "SNAKEPOOL_BREAKER_WINDOW: Input should be less than or equal "
         "to 600"),
        ("SHUTDOWN_GRACE", "0", "SNAKEPOOL_SHUTDOWN_GRACE: Input should be greater than 0"),
    ],
)  # fmt: skip
def test_more_bad_values_name_the_setting(name: str, value: str, fragment: str) -> None:
    error = config_error(**{name: value})
    assert fragment in str(error)
    assert error.setting == name
