"""Where settings come from: keywords, ``SNAKEPOOL_*`` env vars, a TOML file.

Each source is read strictly, so nothing a user wrote is silently ignored:

- an env var with the ``SNAKEPOOL_`` prefix must name a setting, or be one of the
  variables snakepool reads on purpose for something else (:data:`NOT_SETTINGS`);
  names match case-insensitively, so two of them differing only in case
  (``SNAKEPOOL_POOL_SIZE=3`` and ``snakepool_pool_size=7``) must agree, or neither wins;
- a TOML key must name a setting (two keys differing only in case must agree too);
- a keyword must name a setting;
- ``profile`` (``SNAKEPOOL_PROFILE=dev|staging|prod``) must name a shipped preset,
  whose values then sit under every value written explicitly;

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
from importlib import resources
from pathlib import Path
from typing import Any

from snakepool.config.operations import PROFILE_NAMES
from snakepool.config.secrets import redact_text
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
    "read_preset",
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
    "CONFIG": "names the TOML settings file (snakepool.config.sources)",
    "OPERATOR": "who the audit trail names (snakepool.tasks.client.operator_name)",
    "TEST_RUN": "marks processes a test run started (tests/conftest.py)",
    "RUN_MARKER": "marks a pool's template and everything below it (snakepool.pool.orphans)",
    "TEST_CLUSTER": "marks a test cluster's processes (tests/integration/cluster.py)",
    "BENCH_PLAIN_URL": "the plain-Celery benchmark's broker (benchmarks/plain_app.py)",
    "CHAOS_SCALE": "short or full chaos tests (`make chaos`: full; tests/integration)",
    "CHAOS_REPORT": "where a chaos test writes its report (tests/integration)",
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


def _shown(value: object) -> str:
    """An env or TOML value as an error message may quote it (no URL password): text
    quoted, a number or a boolean as it is."""
    if isinstance(value, str):
        return repr(redact_text(value)[:60])
    return redact_text(str(value))[:60]


def read_environment(environ: Mapping[str, str], fields: Iterable[str]) -> dict[str, str]:
    """The settings among ``environ``'s ``SNAKEPOOL_*`` variables (field → raw value).

    Names match case-insensitively, as pydantic-settings does.

    Raises:
        ConfigError: a ``SNAKEPOOL_*`` name that is neither a setting nor one of
            :data:`NOT_SETTINGS`, with the closest setting's name; or two names that
            differ only in case with different values (which would win is an accident
            of the environment's order).
    """
    known = {f.upper() for f in fields}
    found: dict[str, str] = {}
    spelled: dict[str, str] = {}  # upper-case name → the first spelling seen
    unknown: list[str] = []
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX):
            continue
        first = spelled.setdefault(upper, name)
        if first != name and environ[first] != value:
            raise _config_error(
                f"{first}={_shown(environ[first])} and {name}={_shown(value)} name the same "
                "setting (names are not case-sensitive) with different values: unset one",
                upper[len(ENV_PREFIX) :],
            )
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

    ``SNAKEPOOL_CONFIG`` is found whatever the case of its name, like every setting.

    Raises:
        ConfigError: ``SNAKEPOOL_CONFIG`` names a directory, something else that is not
            a regular file (a FIFO, a device), or nothing.
    """
    named = [value for name, value in environ.items() if name.upper() == CONFIG_FILE_ENV]
    path = named[0] if named else None
    if path:
        if not Path(path).is_file():
            raise _config_error(f"{CONFIG_FILE_ENV}: {_not_a_file(path)}", "CONFIG")
        return path
    return DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None


def _not_a_file(path: str) -> str:
    """Why ``path`` (which is not a regular file) cannot be the settings file."""
    where = Path(path)
    try:
        if where.is_dir():
            return f"{path!r} is a directory, not a settings file (name the .toml file in it)"
        if where.exists():
            return f"{path!r} is not a regular file"
        if where.is_symlink():
            return f"{path!r} is a broken symbolic link"
    except (OSError, ValueError):  # a name too long, a NUL byte
        return f"{path[:80]!r} cannot be a file name"
    return f"no such file {path!r}"


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key (or table) name, as written, → the first line (1-based) it is on."""
    lines: dict[str, int] = {}
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:  # inside a multi-line string: no keys here
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if match := _KEY_AT_LINE_START.match(line):
            lines.setdefault(match["key"].strip("\"'"), number)
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 == 1:
                in_multiline = quote
                break
    return lines


def _where(path: str, key: str, lines: dict[str, int]) -> str:
    """``path:line`` of ``key`` (``path`` alone when its line is unknown). A key not found
    as written (a quoted key with escapes) is looked up in lower case, never the other
    way round: ``Pool_Size = 3`` then ``pool_size = 4`` are each on their own line."""
    at_line = lines.get(key)
    if at_line is None:
        at_line = next((n for k, n in lines.items() if k.lower() == key.lower()), None)
    return f"{path}:{at_line}" if at_line is not None else path


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
        where = _where(path, key, lines)
        if name in known:
            if name in values and values[name] != value:
                raise _config_error(
                    f"{origins[name]} = {_shown(values[name])} and {where}: {key} = "
                    f"{_shown(value)} name the same setting (keys are not case-sensitive) "
                    "with different values: keep one",
                    name.upper(),
                )
            values[name] = value
            origins.setdefault(name, f"{where}: {key}")
        else:
            unknown.append(key)
    if unknown:
        problems = []
        for key in unknown:
            where = _where(path, key, lines)
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
    """Every source merged: keywords > environment > TOML file > profile preset.

    The preset is the one ``profile`` names in any of the other sources
    (``SNAKEPOOL_PROFILE=prod``): its values sit under everything written explicitly.

    Raises:
        ConfigError: an unknown name in any source, an unreadable TOML file, or an
            unknown profile (with the closest one).
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
    profile = layers.values.get("profile")
    if profile is not None and "profile" in known:
        preset, where = read_preset(profile, known, layers.origins["profile"])
        layers.values = {**preset, **layers.values}
        layers.origins = {**where, **layers.origins}
    return layers


def read_preset(
    profile: object, fields: Iterable[str], origin: str = f"{ENV_PREFIX}PROFILE"
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings of a shipped profile preset (``config/presets/<profile>.toml``).

    Args:
        profile: The profile's name, as the user gave it.
        fields: The setting names.
        origin: Where the name was given (for the error message).

    Returns:
        The preset's values and where each is (``profile prod: prod.toml:3: pool_size``).

    Raises:
        ConfigError: not one of :data:`~snakepool.config.operations.PROFILE_NAMES`.
    """
    if profile not in PROFILE_NAMES:
        suggestion = _suggestion(str(profile), PROFILE_NAMES)
        hint = f"did you mean {suggestion!r}? " if suggestion else ""
        raise _config_error(
            f"{origin}: unknown profile {str(profile)[:40]!r}: {hint}"
            f"one of {', '.join(PROFILE_NAMES)}",
            "PROFILE",
        )
    preset = resources.files("snakepool.config").joinpath(f"presets/{profile}.toml")
    with resources.as_file(preset) as path:
        values, origins = read_toml(str(path), fields)
    values.pop("profile", None)  # a preset does not name another one
    shown = {
        name: f"profile {profile}: {where.rsplit('/', 1)[-1]}" for name, where in origins.items()
    }
    return values, shown
