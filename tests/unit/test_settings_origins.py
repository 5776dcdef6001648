"""Settings as the user wrote them (review finding 11): two spellings of one name that
disagree are an error, not a silent winner; a contradiction names each setting where it
was written (TOML key and file, or env var); ``SNAKEPOOL_CONFIG`` says what it names
when that is not a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snakepool.config import load_settings
from snakepool.config.sources import config_file, read_environment
from snakepool.errors import ConfigError

FIELDS = ["pool_size", "redis_url", "request_timeout"]


# ------------------------------------------- one name, two spellings (the environment)


def test_env_names_differing_in_case_with_different_values_are_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZE", "3")
    monkeypatch.setenv("snakepool_pool_size", "7")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = caught.value.message
    assert "SNAKEPOOL_POOL_SIZE='3'" in message and "snakepool_pool_size='7'" in message
    assert "name the same setting (names are not case-sensitive) with different values" in message
    assert caught.value.setting == "POOL_SIZE"
    monkeypatch.setenv("snakepool_pool_size", "3")  # the same value: no doubt which
    assert load_settings().pool_size == 3


@pytest.mark.parametrize(
    "environ",
    [
        {"SNAKEPOOL_POOL_SIZE": "3", "Snakepool_Pool_Size": "4"},
        {"snakepool_request_timeout": "30", "SNAKEPOOL_request_TIMEOUT": "31"},
        {"SNAKEPOOL_CONFIG": "/a.toml", "snakepool_config": "/b.toml"},  # not a setting: too
        {"SNAKEPOOL_OPERATOR": "ada", "snakepool_operator": "bob"},
    ],
)
def test_any_snakepool_name_spelled_twice_must_agree(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="name the same setting"):
        read_environment(environ, FIELDS)


def test_a_password_in_two_disagreeing_urls_is_not_shown() -> None:
    environ = {
        "SNAKEPOOL_REDIS_URL": "redis://:hunter1@h/0",
        "snakepool_redis_url": "redis://:hunter2@h/0",
    }
    with pytest.raises(ConfigError) as caught:
        read_environment(environ, FIELDS)
    assert "hunter" not in caught.value.message and "redis://:***@h/0" in caught.value.message


def test_snakepool_config_is_found_whatever_its_case(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("pool_size = 2\n")
    assert config_file({"snakepool_config": str(path)}) == str(path)


# --------------------------------------------------- one key, two spellings (TOML)


def _toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "snakepool.toml"
    path.write_text(text)
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(path))
    return path


def test_toml_keys_differing_in_case_with_different_values_are_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, "pool_size = 3\nmax_queue = 5\nPOOL_SIZE = 7\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message == (
        f"{path}:1: pool_size = 3 and {path}:3: POOL_SIZE = 7 name the same setting (keys are "
        "not case-sensitive) with different values: keep one"
    )
    assert caught.value.setting == "POOL_SIZE"
    _toml(tmp_path, monkeypatch, "pool_size = 3\nPool_Size = 3\n")
    assert load_settings().pool_size == 3
    # Each key's own line, whichever case comes first (the lower-case one was given the
    # line of the first spelling: 'path:1: ... and path:1: ...').
    path = _toml(tmp_path, monkeypatch, "Pool_Size = 3\n\npool_size = 4\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message.startswith(f"{path}:1: Pool_Size = 3 and {path}:3: pool_size = 4")


# ------------------------------------- contradictions: named where they were written


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "request_timeout = 30\nvisibility_timeout = 20\n",
            {},
            "{path}:2: visibility_timeout (20 s) must be greater than {path}:1: "
            "request_timeout (30 s)",
        ),
        (
            "visibility_timeout = 20\n",
            {"REQUEST_TIMEOUT": "30"},
            "{path}:1: visibility_timeout (20 s) must be greater than SNAKEPOOL_REQUEST_TIMEOUT "
            "(30 s)",
        ),
        (
            "queue_timeout = 10\nrequest_timeout = 30\nvisibility_timeout = 35\n",
            {},
            "{path}:3: visibility_timeout (35 s) must be greater than {path}:1: queue_timeout + "
            "{path}:2: request_timeout (10 + 30 = 40 s)",
        ),
        (
            "request_timeout = 30\nshutdown_grace = 10\n",
            {},
            "{path}:2: shutdown_grace (10 s) must be at least {path}:1: request_timeout (30 s)",
        ),
        (
            "REQUEST_TIMEOUT = 30\nresult_timeout = 30\n",
            {},
            "{path}:2: result_timeout (30 s) must be greater than {path}:1: REQUEST_TIMEOUT (30 s)",
        ),
        (
            "rollout_window = 120\nrollout_bake_seconds = 60\n",
            {},
            "{path}:2: rollout_bake_seconds (60 s) must be at least {path}:1: rollout_window "
            "(120 s)",
        ),
        (
            "max_message_bytes = 100000\n",
            {},
            "{path}:1: max_message_bytes (100000) must be at least 524288",
        ),
        (
            'redis_url = "redis://localhost:6379/0"\nbroker_url = "fakeredis://x"\n',
            {},
            "{path}:1: redis_url (redis://localhost:6379/0) and {path}:2: broker_url "
            "(fakeredis://x) must both be embedded",
        ),
    ],
)
def test_a_contradiction_in_the_file_names_each_setting_by_key_and_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    env: dict[str, str],
    expected: str,
) -> None:
    path = _toml(tmp_path, monkeypatch, text)
    for name, value in env.items():
        monkeypatch.setenv(f"SNAKEPOOL_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected.format(path=path) in caught.value.message
    set_in_file = {line.split("=")[0].strip().upper() for line in text.splitlines()}
    for name in set_in_file:  # never under its env var name: the user did not write that
        assert f"SNAKEPOOL_{name}" not in caught.value.message


def test_the_lm_answers_contradiction_names_the_file_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text("{}")
    path = _toml(tmp_path, monkeypatch, f'lm = "openai/gpt-4o"\nlm_answers = "{answers}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert (
        f"{path}:2: lm_answers is only read by the dummy LM, but {path}:1: lm is "
        "'openai/gpt-4o': unset one of them"
    ) in caught.value.message


# -------------------------------------------------- SNAKEPOOL_CONFIG that is no file


def test_a_directory_as_the_settings_file_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message == (
        f"SNAKEPOOL_CONFIG: {str(tmp_path)!r} is a directory, not a settings file (name the "
        ".toml file in it)"
    )
    assert caught.value.setting == "CONFIG"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (os.mkfifo, "{path!r} is not a regular file"),
        (lambda p: os.symlink(p.parent / "gone.toml", p), "{path!r} is a broken symbolic link"),
        (lambda p: None, "no such file {path!r}"),
    ],
    ids=["fifo", "broken symlink", "missing"],
)
def test_other_things_that_are_not_a_file_say_what_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: object, says: str
) -> None:
    path = tmp_path / "settings.toml"
    make(path)  # type: ignore[operator]
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(path))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.message == "SNAKEPOOL_CONFIG: " + says.format(path=str(path))
