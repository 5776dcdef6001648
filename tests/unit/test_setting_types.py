"""A setting's value of the wrong type, where a lenient parse would hide it (review 8).

Before: ``pool_size = true`` in the settings file was a pool of 1, ``request_timeout =
"30"`` 30 s, ``allow_admin_commands = 1`` the admin switch on; ``Pool(size=True)`` a pool
of 1. The environment (text) stays lenient: ``SNAKEPOOL_POOL_SIZE=4``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from snakepool.config import load_settings
from snakepool.errors import ConfigError
from snakepool.pool import Pool


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pool_size = true", "s.toml:2: pool_size: expected an integer, not a boolean (true)"),
        ("pool_size = 4.0", "s.toml:2: pool_size: expected an integer, not a float (4.0)"),
        ("request_timeout = true",
         "s.toml:2: request_timeout: expected a number, not a boolean (true)"),
        ("request_timeout = \"30\"",
         "s.toml:2: request_timeout: expected a number, not a string ('30')"),
        ("shutdown_grace = \"40\"",
         "s.toml:2: shutdown_grace: expected a number, not a string ('40')"),
        ("allow_admin_commands = 1",
         "s.toml:2: allow_admin_commands: expected a boolean, not an integer (1)"),
        ("enable_chaos = \"no\"",
         "s.toml:2: enable_chaos: expected a boolean, not a string ('no')"),
        ("start_method = 1", "s.toml:2: start_method: expected a string, not an integer (1)"),
        ("redis_url = 6379", "s.toml:2: redis_url: expected a string, not an integer (6379)"),
    ],
)  # fmt: skip
def test_a_toml_value_of_another_type_names_file_line_and_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, message: str
) -> None:
    (tmp_path / "s.toml").write_text(f"# settings\n{line}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SNAKEPOOL_CONFIG", "s.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == message
    assert caught.value.setting == line.split(" ", 1)[0].upper()


def test_toml_values_of_their_types_and_the_environment_as_text_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s.toml").write_text(
        "request_timeout = 30\nqueue_timeout = 2.5\nallow_admin_commands = false\n"
        'start_method = "spawn"\n'
    )
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(tmp_path / "s.toml"))
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZE", "4")
    monkeypatch.setenv("SNAKEPOOL_ENABLE_CHAOS", "0")
    settings = load_settings()
    assert (settings.request_timeout, settings.queue_timeout, settings.pool_size) == (30.0, 2.5, 4)
    assert (settings.allow_admin_commands, settings.enable_chaos) == (False, False)
    assert settings.start_method == "spawn"


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"size": True}, "pool_size: must be a number, not a bool, got True"),
        ({"request_timeout": False}, "request_timeout: must be a number, not a bool, got False"),
        ({"allow_admin_commands": 1}, "allow_admin_commands: must be True or False, got 1"),
    ],
)
def test_a_pool_keyword_bool_for_a_number_or_back_is_refused(
    keywords: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Pool(**keywords)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pool_size: must be a number, not a bool"):
        load_settings(pool_size=True)


def test_pool_keywords_of_their_types_are_accepted() -> None:
    pool = Pool(size=2, request_timeout=5, allow_admin_commands=True, start_method="spawn")
    assert (pool.settings.pool_size, pool.settings.request_timeout) == (2, 5.0)
    assert pool.settings.allow_admin_commands is True
