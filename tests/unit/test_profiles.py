"""Settings profiles (SNAKEPOOL_PROFILE) and the operations settings (METRICS_PORT,
ROLLOUT_*): presets shipped as package data, explicit settings over them, values checked."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakepool.config import Settings, load_settings
from snakepool.config.flags import DEFAULT_SCHEDULE
from snakepool.config.operations import DEFAULT_ROLLOUT_SCHEDULE, PROFILE_NAMES
from snakepool.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SNAKEPOOL_* setting and no ./snakepool.toml from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.startswith("SNAKEPOOL_") and name not in ("SNAKEPOOL_TEST_RUN",):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def preset(name: str) -> dict[str, object]:
    text = resources.files("snakepool.config").joinpath(f"presets/{name}.toml").read_text()
    return tomllib.loads(text)


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_each_profile_loads_its_preset_exactly(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAKEPOOL_PROFILE", name)
    loaded = load_settings()
    values = preset(name)
    assert loaded.profile == name
    assert {"pool_size", "request_timeout", "metrics_port", "rollout_bake_seconds"} <= set(values)
    for key, value in values.items():
        got = getattr(loaded, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key


def test_the_profiles_differ_where_the_docs_say() -> None:
    dev, staging, prod = (load_settings(profile=name) for name in PROFILE_NAMES)
    assert dev.pool_size < staging.pool_size < prod.pool_size
    assert dev.request_timeout < staging.request_timeout < prod.request_timeout
    assert dev.metrics_port == 0 and staging.metrics_port == prod.metrics_port == 9808
    assert dev.rollout_bake_seconds < staging.rollout_bake_seconds < prod.rollout_bake_seconds
    assert dev.rollout_min_samples < staging.rollout_min_samples < prod.rollout_min_samples
    assert prod.rollout_max_error_rate < staging.rollout_max_error_rate
    assert dev.rollout_rollback_to == "previous" and prod.rollout_rollback_to == "zero"
    assert prod.max_worker_rss_mb and prod.max_worker_age and prod.max_requests_per_worker
    # No profile: the documented defaults, untouched.
    assert load_settings().rollout_bake_seconds == 300 and load_settings().metrics_port == 0


def test_explicit_settings_beat_the_preset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SNAKEPOOL_PROFILE", "prod")
    monkeypatch.setenv("SNAKEPOOL_POOL_SIZE", "3")
    (tmp_path / "snakepool.toml").write_text("request_timeout = 45\nmetrics_port = 9999\n")
    loaded = load_settings(rollout_bake_seconds=600)
    assert (loaded.pool_size, loaded.request_timeout, loaded.metrics_port) == (3, 45.0, 9999)
    assert loaded.rollout_bake_seconds == 600
    assert loaded.rollout_min_samples == preset("prod")["rollout_min_samples"]  # from the preset


def test_the_profile_may_be_named_in_the_file_or_as_a_keyword(tmp_path: Path) -> None:
    (tmp_path / "snakepool.toml").write_text('profile = "dev"\npool_size = 5\n')
    loaded = load_settings()
    assert (loaded.profile, loaded.pool_size, loaded.request_timeout) == ("dev", 5, 10.0)
    assert load_settings(profile="prod").pool_size == 5  # the file still beats the preset


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("prd", "did you mean 'prod'"),
        ("production", "one of dev, staging, prod"),
        ("dev\n", "unknown profile"),
    ],
)
def test_an_unknown_profile_is_named(
    value: str, fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAKEPOOL_PROFILE", value)
    with pytest.raises(ConfigError, match="SNAKEPOOL_PROFILE") as caught:
        load_settings()
    assert fragment in caught.value.message and caught.value.data["setting"] == "PROFILE"


def test_a_contradiction_with_a_preset_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAKEPOOL_PROFILE", "prod")  # request_timeout 60 there
    monkeypatch.setenv("SNAKEPOOL_VISIBILITY_TIMEOUT", "50")
    with pytest.raises(ConfigError, match="SNAKEPOOL_VISIBILITY_TIMEOUT"):
        load_settings()


def test_presets_ship_as_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = data["package-data"]["*"]
    for name in PROFILE_NAMES:
        assert (ROOT / "config" / "presets" / f"{name}.toml").is_file()
        assert any(fnmatch.fnmatch(f"presets/{name}.toml", p) for p in patterns), patterns


def test_the_readme_documents_every_preset_value() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in PROFILE_NAMES:
        for key in preset(name):
            assert f"`{key.upper()}`" in readme, f"README: {key.upper()} ({name} preset)"


# ------------------------------------------------------------------ operations settings


def test_the_controller_schedule_default_is_the_flags_default() -> None:
    assert DEFAULT_ROLLOUT_SCHEDULE == DEFAULT_SCHEDULE


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.integers(1, 100), min_size=1, max_size=12, unique=True))
def test_an_ascending_schedule_is_read_in_every_spelling(steps: list[int]) -> None:
    ordered = sorted(steps)
    for written in (",".join(map(str, ordered)), str(ordered), ordered):
        assert load_settings(rollout_schedule=written).rollout_schedule == tuple(ordered)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(st.integers(-5, 150), min_size=0, max_size=8).filter(
        lambda s: not (s and all(1 <= p <= 100 for p in s) and s == sorted(set(s)))
    )
)
def test_any_other_schedule_is_refused_naming_the_setting(steps: list[int]) -> None:
    with pytest.raises(ConfigError, match="SNAKEPOOL_ROLLOUT_SCHEDULE"):
        load_settings(rollout_schedule=",".join(map(str, steps)))


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"metrics_port": 70000}, "SNAKEPOOL_METRICS_PORT"),
        ({"metrics_port": -1}, "SNAKEPOOL_METRICS_PORT"),
        ({"metrics_address": "localhost"}, "SNAKEPOOL_METRICS_ADDRESS"),
        ({"metrics_address": "0.0.0.0:9808"}, "SNAKEPOOL_METRICS_ADDRESS"),
        ({"metrics_address": ""}, "SNAKEPOOL_METRICS_ADDRESS"),
        ({"rollout_rollback_to": "half"}, "SNAKEPOOL_ROLLOUT_ROLLBACK_TO"),
        ({"rollout_max_error_rate": 1.5}, "SNAKEPOOL_ROLLOUT_MAX_ERROR_RATE"),
        ({"rollout_window": 601}, "SNAKEPOOL_ROLLOUT_WINDOW"),
        ({"rollout_lease_ttl": 0}, "SNAKEPOOL_ROLLOUT_LEASE_TTL"),
        ({"rollout_bake_seconds": 10, "rollout_window": 60}, "SNAKEPOOL_ROLLOUT_BAKE_SECONDS"),
    ],
)
def test_operations_settings_are_checked(values: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        load_settings(**values)


def test_operations_settings_are_settings() -> None:
    fields = set(Settings.model_fields)
    assert {"profile", "metrics_port", "rollout_interval", "rollout_lease_ttl"} <= fields
