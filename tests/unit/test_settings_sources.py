"""Settings names and the TOML file (issue 8.10): nothing a user wrote is ignored.

An unknown ``SNAKEPOOL_*`` variable, TOML key or keyword is an error with the closest
valid name; a TOML file that cannot be parsed is an error naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config import Settings, load_pool_settings, load_settings
from snakepool.config.sources import NOT_SETTINGS
from snakepool.errors import ConfigError
from snakepool.pool import Pool
from tests.unit.test_settings import config_error as _error

# ------------------------------------------------- names: unknown ones are errors


def test_a_misspelt_env_var_is_an_error_with_the_closest_name() -> None:
    error = _error(POOL_SIZ="4")
    assert str(error) == "unknown setting SNAKEPOOL_POOL_SIZ: did you mean SNAKEPOOL_POOL_SIZE?"
    assert error.setting == "POOL_SIZ"
    error = _error(VISIBILTY_TIMEOUT="100")
    assert str(error) == (
        "unknown setting SNAKEPOOL_VISIBILTY_TIMEOUT: did you mean SNAKEPOOL_VISIBILITY_TIMEOUT?"
    )
    assert str(_error(FROBNICATE="1")) == (
        "unknown setting SNAKEPOOL_FROBNICATE (see the settings table in the README)"
    )


def test_env_names_match_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("snakepool_pool_size", "3")
    assert load_settings().pool_size == 3
    monkeypatch.setenv("snakepool_pool_siz", "3")
    with pytest.raises(ConfigError, match="unknown setting snakepool_pool_siz: did you mean"):
        load_settings()


def test_env_vars_read_on_purpose_are_not_settings_but_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in NOT_SETTINGS:
        if name != "CONFIG":
            monkeypatch.setenv(f"SNAKEPOOL_{name}", "x")
    assert load_settings().pool_size >= 1
    assert {"OPERATOR", "TEST_RUN", "TEST_CLUSTER", "BENCH_PLAIN_URL", "CONFIG"} <= set(
        NOT_SETTINGS
    )


def test_every_snakepool_env_var_the_repo_reads_is_a_setting_or_allowed() -> None:
    """The allow-list is complete: grep the sources for SNAKEPOOL_ names."""

    from snakepool.config import Settings

    root = Path(__file__).resolve().parents[2]
    found: set[str] = set()
    for folder in ("config", "pool", "sessions", "tasks", "tests", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            found |= set(re.findall(r"SNAKEPOOL_([A-Z][A-Z0-9_]*[A-Z0-9])", path.read_text()))
    for path in (root / "compose.yaml", root / "Dockerfile"):
        found |= set(re.findall(r"SNAKEPOOL_([A-Z][A-Z0-9_]*[A-Z0-9])", path.read_text()))
    known = {f.upper() for f in Settings.model_fields} | set(NOT_SETTINGS)
    assert {"POOL_SIZ", "VISIBILTY_TIMEOUT", "FROBNICATE"} & found  # this test's own names
    assert found - known == {"POOL_SIZ", "VISIBILTY_TIMEOUT", "FROBNICATE"}


def test_unknown_keywords_are_errors_with_the_closest_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(pool_siz=3)
    assert str(caught.value) == "unknown setting pool_siz: did you mean pool_size?"
    with pytest.raises(ConfigError) as caught:
        Pool(sise=3)
    assert str(caught.value) == "unknown pool setting sise: did you mean size?"
    assert caught.value.setting == "SISE"
    with pytest.raises(ConfigError) as caught:
        load_pool_settings(pool_sise=3)
    assert str(caught.value) == "unknown pool setting pool_sise: did you mean pool_size?"
    assert load_pool_settings(size=3).pool_size == 3


@settings(max_examples=30, deadline=None)
@given(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True))
def test_any_other_snakepool_name_is_refused(name: str) -> None:

    known = {f.upper() for f in Settings.model_fields} | set(NOT_SETTINGS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"SNAKEPOOL_{name}", "1")
        if name in known:
            return
        with pytest.raises(ConfigError, match=f"unknown setting SNAKEPOOL_{name}\\b"):
            load_settings()


# ------------------------------------------------- the TOML file: file and line


def _toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes) -> Path:
    path = tmp_path / "snakepool.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    monkeypatch.setenv("SNAKEPOOL_CONFIG", str(path))
    return path


def test_an_unknown_toml_key_names_file_line_and_the_closest_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, "# tuning\npool_size = 4\n\npool_siz = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"{path}:4: unknown setting 'pool_siz': did you mean 'pool_size'?"
    assert caught.value.setting == "POOL_SIZ"


def test_a_toml_table_is_an_unknown_key_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, 'pool_size = 4\ndoc = """\nlm = 1\n"""\n[redis]\nurl = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"{path}:2: unknown setting 'doc' (see the settings table in the README); "
        f"{path}:5: unknown setting 'redis': did you mean 'redis_url'?"
    )


def test_an_env_only_name_in_the_file_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, 'operator = "ada"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"{path}:1: 'operator' is read from the environment only (SNAKEPOOL_OPERATOR), "
        "not from the settings file"
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('pool_size = 4\nadapter "x"\n', "2:9", "Expected '=' after a key in a key/value pair"),
        ("pool_size = 4\npool_size = 5\n", "2:14", "Cannot overwrite a value"),
        ('lm = "dummy\n', "1:12", "Illegal character '\\n'"),
        ("[pool\n", "1:6", "Expected ']' at the end of a table declaration"),
    ],
)
def test_a_toml_syntax_error_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, where: str, message: str
) -> None:
    path = _toml(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"{path}:{where}: invalid TOML: {message}"
    assert caught.value.setting == "CONFIG"


def test_a_file_that_is_not_utf8_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, b'pool_size = 4\nlm = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == f"{path}:2: not UTF-8 text (byte 23)"


def test_an_invalid_value_in_the_file_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, "max_queue = 5\npool_size = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"invalid settings: {path}:2: pool_size: Input should be greater than or equal to 1 (got 0)"
    )
    assert caught.value.setting == "POOL_SIZE"
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZE", "2")  # the environment beats the file
    assert load_settings().pool_size == 2


def test_a_contradiction_from_the_file_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _toml(tmp_path, monkeypatch, "pool_size = 2\nvisibility_timeout = 20\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{path}:2: contradicting settings: ")
    assert caught.value.setting == "VISIBILITY_TIMEOUT"
