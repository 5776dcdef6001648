"""Where settings come from: keywords, ``SNAKEPOOL_*`` env vars, a TOML file.

Each source is read strictly, so nothing a user wrote is silently ignored:

- an env var with the ``SNAKEPOOL_`` prefix must name a setting, or be one of the
  variables snakepool reads on purpose for something else (:data:`NOT_SETTINGS`);
- a TOML key must name a setting;
- a keyword must name a setting;

and an unknown name is a :class:`~snakepool.errors.ConfigError` with the closest valid
name (``did you mean SNAKEPOOL_POOL_SIZE?``). A TOML file that cannot be read or parsed
is a ``ConfigError`` naming the file and the line, never a raw traceback.

Every value remembers where it came from (:class:`Layers`), so an invalid value is
reported as the user wrote it: ``SNAKEPOOL_POOL_SIZE: ...`` for the environment,
``snakepool.toml:3: pool_size: ...`` for the file.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snakepool.errors import ConfigError

__all__ = [
    "CONFIG_FILE_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "Layers",
    "check_names",
    "config_file",
    "read_environment",
    "read_layers",
    "read_toml",
]

ENV_PREFIX = "SNAKEPOOL_"
#: Env var naming a TOML settings file.
CONFIG_FILE_ENV = "SNAKEPOOL_CONFIG"
#: Read when present and ``SNAKEPOOL_CONFIG`` is unset.
DEFAULT_CONFIG_FILE = "snakepool.toml"

#: ``SNAKEPOOL_*`` env vars that are not settings but are read on purpose (name after
#: the prefix → who reads it). Any other ``SNAKEPOOL_*`` name must be a setting.
NOT_SETTINGS: Mapping[str, str] = {
    "CONFIG": "names the TOML settings file (config.sources)",
    "OPERATOR": "who the audit trail names (tasks.client.operator_name)",
    "TEST_RUN": "marks processes a test run started (tests/conftest.py)",
    "RUN_MARKER": "marks a pool's template and everything below it (pool.orphans)",
    "TEST_CLUSTER": "marks a test cluster's processes (tests/integration/cluster.py)",
    "BENCH_PLAIN_URL": "the plain-Celery benchmark's broker (benchmarks/plain_app.py)",
    "CHAOS_SCALE": "short or full runs of the chaos tests (tests/chaos, make chaos)",
}

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_KEY_AT_LINE_START = re.compile(
    r"\s*(?:\[\[?\s*)?(?P<key>[A-Za-z0-9_-]+|\"[^\"\n]*\"|'[^'\n]*')\s*(?:=|\.|\])"
)


def _config_error(message: str, setting: str) -> ConfigError:
    return ConfigError(message, setting=setting)


def _suggestion(name: str, candidates: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _unknown(shown: str, suggestion: str | None) -> str:
    if suggestion is None:
        return f"unknown setting {shown} (see the settings table in the README)"
    return f"unknown setting {shown}: did you mean {suggestion}?"


@dataclass
class Layers:
    """The values of every source, merged by precedence, each with its origin.

    ``origins`` maps a field to how its value was written: ``snakepool.toml:3: pool_size``
    for the file, else the setting's env name ``SNAKEPOOL_POOL_SIZE`` (for the
    environment and for keywords, which are the same settings).
    """

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def check_names(names: Iterable[str], fields: Iterable[str], *, what: str = "setting") -> None:
    """Refuse keyword names that are not fields.

    Raises:
        ConfigError: naming the first unknown name and the closest field.
    """
    known = sorted(fields)
    unknown = sorted(set(names) - set(known))
    if unknown:
        problems = [_unknown(n, _suggestion(n, known)) for n in unknown]
        message = "; ".join(problems).replace("unknown setting", f"unknown {what}")
        raise _config_error(message, unknown[0].upper())


def read_environment(environ: Mapping[str, str], fields: Iterable[str]) -> dict[str, str]:
    """The settings among ``environ``'s ``SNAKEPOOL_*`` variables (field → raw value).

    Names match case-insensitively, as pydantic-settings does.

    Raises:
        ConfigError: a ``SNAKEPOOL_*`` name that is neither a setting nor one of
            :data:`NOT_SETTINGS`, with the closest setting's name.
    """
    known = {f.upper() for f in fields}
    found: dict[str, str] = {}
    unknown: list[str] = []
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        setting = upper[len(ENV_PREFIX) :]
        if setting in known:
            found[setting.lower()] = value
        elif setting not in NOT_SETTINGS:
            unknown.append(name)
    if unknown:
        # Compare the names after the prefix: the shared prefix would make anything "close".
        candidates = sorted(known | set(NOT_SETTINGS))
        problems = []
        for name in sorted(unknown):
            suggestion = _suggestion(name.upper()[len(ENV_PREFIX) :], candidates)
            problems.append(_unknown(name, suggestion and f"{ENV_PREFIX}{suggestion}"))
        raise _config_error("; ".join(problems), sorted(unknown)[0].upper()[len(ENV_PREFIX) :])
    return found


def config_file(environ: Mapping[str, str]) -> str | None:
    """The TOML file to read: ``SNAKEPOOL_CONFIG``, else ``./snakepool.toml`` if present.

    Raises:
        ConfigError: ``SNAKEPOOL_CONFIG`` names no file.
    """
    path = environ.get(CONFIG_FILE_ENV)
    if path:
        if not Path(path).is_file():
            raise _config_error(f"{CONFIG_FILE_ENV}: no such file {path!r}", "CONFIG")
        return path
    return DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key (or table) name → the first line (1-based) it appears on."""
    lines: dict[str, int] = {}
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:  # inside a multi-line string: no keys here
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if match := _KEY_AT_LINE_START.match(line):
            key = match["key"].strip("\"'").lower()
            lines.setdefault(key, number)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_multiline = quote
                break
    return lines


def read_toml(path: str, fields: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings in a TOML file, and where each is (``path:line: key``).

    Raises:
        ConfigError: the file cannot be read, is not UTF-8, is not valid TOML, or has a
            key that is not a setting; each names the file and the line.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise _config_error(
            f"{path}: cannot read the settings file: {exc.strerror}", "CONFIG"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _config_error(f"{path}:{line}: not UTF-8 text (byte {exc.start})", "CONFIG") from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if position := _POSITION.search(message):
            where = f"{path}:{position[1]}:{position[2]}"
            message = message[: position.start()]
        else:
            where = path
        raise _config_error(f"{where}: invalid TOML: {message}", "CONFIG") from None
    lines = _key_lines(text)
    known = sorted(fields)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in parsed.items():
        name = key.lower()
        where = f"{path}:{lines[name]}" if name in lines else path
        if name in known:
            values[name] = value
            origins[name] = f"{where}: {key}"
        else:
            unknown.append(key)
    if unknown:
        problems = []
        for key in unknown:
            where = f"{path}:{lines[key.lower()]}" if key.lower() in lines else path
            if key.upper() in NOT_SETTINGS:
                problems.append(
                    f"{where}: {key!r} is read from the environment only "
                    f"({ENV_PREFIX}{key.upper()}), not from the settings file"
                )
                continue
            suggestion = _suggestion(key.lower(), known)
            shown = _unknown(repr(key), repr(suggestion) if suggestion else None)
            problems.append(f"{where}: {shown}")
        raise _config_error("; ".join(problems), unknown[0].upper())
    return values, origins


def read_layers(
    overrides: Mapping[str, Any],
    fields: Iterable[str],
    environ: Mapping[str, str] | None = None,
) -> Layers:
    """Every source merged: keywords > environment > TOML file.

    Raises:
        ConfigError: an unknown name in any source, or an unreadable TOML file.
    """
    environ = os.environ if environ is None else environ
    known = list(fields)
    check_names(overrides, known)
    layers = Layers()
    if path := config_file(environ):
        values, origins = read_toml(path, known)
        layers.values.update(values)
        layers.origins.update(origins)
    for name, value in read_environment(environ, known).items():
        layers.values[name] = value
        layers.origins[name] = f"{ENV_PREFIX}{name.upper()}"
    for name, value in overrides.items():
        layers.values[name] = value
        layers.origins[name] = f"{ENV_PREFIX}{name.upper()}"  # as the setting is documented
    return layers
