"""compose.yaml and the Dockerfile: valid, and every command in them is one we really have.

No Docker engine is needed: the file is checked against the Compose Specification
(check-jsonschema's vendored schema, offline), and each service's command is parsed by
the very click command it names (``snakepool …`` by ``snakepool.tasks.cli.main``,
``celery … flower`` by Celery's CLI with Flower's options) — so a misspelt subcommand, an
unknown option or
a lane that does not exist fails here, not at ``docker compose up``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from ruamel.yaml import YAML

from snakepool.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
#: What the operator must export (compose refuses to start without them).
ENV = {"FLOWER_BASIC_AUTH": "admin:secret", "GRAFANA_ADMIN_PASSWORD": "secret"}
#: Compose variable syntax: $$, $NAME, ${NAME}, ${NAME:-default}, ${NAME:?error}, …
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with compose's variable interpolation applied (recursively).

    Raises:
        KeyError: a ``${NAME:?error}`` variable is missing from ``env``.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg, given = match["op"], match["arg"] or "", env.get(name)
        present = bool(given) if op and op.startswith(":") else given is not None
        if op in (":-", "-"):
            return given if present and given is not None else arg
        if op in (":?", "?"):
            if not present or given is None:
                raise KeyError(f"{name}: {arg}")
            return given
        if op in (":+", "+"):
            return arg if present else ""
        return given or ""

    return _VARIABLE.sub(substitute, value)


def _load(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


RAW = _load(COMPOSE)
SPEC = interpolate(RAW, ENV)
SERVICES: dict[str, dict[str, Any]] = SPEC["services"]


def argv(service: dict[str, Any]) -> list[str]:
    """The service's command as an argument vector (compose splits a string like a shell)."""
    command = service["command"]
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as a dict (compose accepts a list or a mapping)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _resolve(group: click.Group, name: str, args: list[str], parent: click.Context | None) -> Any:
    """Parse ``args`` as ``group`` would; return (context, subcommand name, subcommand, rest).

    Raises:
        click.ClickException: an unknown option, a bad value, or no such subcommand.
    """
    ctx = group.make_context(name, list(args), parent=parent)
    rest = ctx.args  # what follows the subcommand; the subcommand is the token before it
    position = len(args) - len(rest) - 1
    if position < 0 or args[position].startswith("-"):
        raise click.UsageError(f"{name}: no subcommand in {args}")
    sub = group.get_command(ctx, args[position])
    if sub is None:
        raise click.UsageError(f"{name}: no such command {args[position]!r}")
    return ctx, args[position], sub, list(rest)


def console_script(name: str) -> Any:
    """The object ``[project.scripts] name`` points at (what the executable runs)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attribute = scripts[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def check_snakepool(command: list[str]) -> click.Command:
    """Parse ``command`` exactly as the ``snakepool`` executable would, running nothing.

    Every group on the way and the final command parse their part, so unknown
    subcommands or options, bad choices (``--lane``), missing required options and
    stray arguments all raise. Returns the command that would run.
    """
    assert command[0] == "snakepool", command
    current: click.Command = console_script("snakepool")
    name, args, parent = "snakepool", command[1:], None
    while isinstance(current, click.Group):
        parent, name, current, args = _resolve(current, name, args, parent)
    current.make_context(name, args, parent=parent)
    return current


def check_celery_flower(command: list[str]) -> dict[str, str]:
    """Parse ``celery [global options] flower [flower options]``; returns Flower's options.

    Celery's global options are parsed by Celery's own click group; Flower's are tornado
    options, checked by name against the ones Flower defines.
    """
    assert command[0] == "celery", command
    assert importlib.util.find_spec("flower") is not None, "flower is not installed"
    from celery.bin.celery import celery as celery_cli

    ctx, name, sub, rest = _resolve(celery_cli, "celery", command[1:], None)
    if name != "flower":
        raise click.UsageError(f"expected `celery … flower`, got subcommand {name!r}")
    assert sub is not None
    import flower.options  # noqa: F401 - defines Flower's options on tornado's parser
    from tornado.options import options as tornado_options

    known = tornado_options.as_dict()  # names with "_", as tornado normalises them
    parsed = {}
    for token in rest:
        if not token.startswith("--"):
            raise click.UsageError(f"flower takes only --name=value options, got {token!r}")
        option, equals, value = token[2:].partition("=")
        name = option.replace("-", "_")
        if name not in known:
            raise click.NoSuchOption(option, ctx=ctx)
        if not equals and not isinstance(known[name], bool):  # only flags go without a value
            raise click.BadOptionUsage(option, f"--{option} needs =value", ctx=ctx)
        parsed[name] = value
    parsed["broker"] = ctx.params["broker"]
    return parsed


def check_celery(command: list[str]) -> None:
    """Parse any ``celery …`` command line (Flower's options as above), running nothing."""
    from celery.bin.celery import celery as celery_cli

    ctx, name, sub, rest = _resolve(celery_cli, "celery", command[1:], None)
    if name == "flower":
        check_celery_flower(command)
    else:
        sub.make_context(name, rest, parent=ctx)


def _commands(program: str) -> list[str]:
    return [name for name, svc in SERVICES.items() if "command" in svc and argv(svc)[0] == program]


# ------------------------------------------------------------------ the file itself


def test_compose_yaml_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_obsolete_version_key_and_the_expected_services() -> None:
    assert "version" not in RAW
    assert set(SERVICES) >= {
        "redis",
        "router",
        "worker-v3",
        "worker-v2compat",
        "controller",
        "flower",
    }


def test_every_command_is_a_program_we_check() -> None:
    """A new service must run snakepool or celery (or be an image with its own command)."""
    for name, service in SERVICES.items():
        if "build" in service:
            assert "command" in service, f"{name} runs our image without a command"
            assert argv(service)[0] in ("snakepool", "celery"), name
    assert _commands("snakepool") and _commands("celery")


# ------------------------------------------------------------------ commands


@pytest.mark.parametrize("name", _commands("snakepool"))
def test_snakepool_commands_exist_with_these_options(name: str) -> None:
    command = argv(SERVICES[name])
    check_snakepool(command)
    if "--lane" in command:
        lane = command[command.index("--lane") + 1]
        assert name == lane or name.endswith(f"-{lane}"), f"{name} serves lane {lane}"


@pytest.mark.parametrize("name", _commands("celery"))
def test_celery_commands_run_flower_with_options_it_has(name: str) -> None:
    check_celery_flower(argv(SERVICES[name]))


@pytest.mark.parametrize(
    "command",
    [
        ["snakepool", "wroker", "--lane", "v3"],  # no such subcommand
        ["snakepool", "worker", "--lane", "v4"],  # no such lane
        ["snakepool", "worker", "--lane", "v3", "--nmae", "x"],  # no such option
        ["snakepool", "worker"],  # --lane is required
        ["snakepool", "worker", "--lane", "v3", "--pool-size", "four"],  # not a number
        ["snakepool", "rollout", "set", "150", "--reason", "x"],  # out of range
        ["snakepool", "rollout", "sett", "50", "--reason", "x"],  # no such subcommand
        ["snakepool", "--lane", "v3"],  # no subcommand
    ],
)
def test_the_snakepool_check_refuses_what_the_cli_refuses(command: list[str]) -> None:
    with pytest.raises(click.ClickException):
        check_snakepool(command)


@pytest.mark.parametrize(
    "command",
    [
        ["celery", "--broker", "redis://redis:6379/0", "flowr"],  # no such subcommand
        ["celery", "--broker", "redis://redis:6379/0", "worker"],  # not flower
        ["celery", "--brokr", "redis://redis:6379/0", "flower"],  # no such global option
        ["celery", "--broker", "redis://redis:6379/0", "flower", "--basic-oauth=a:b"],
        ["celery", "--broker", "redis://redis:6379/0", "flower", "--port", "5555"],
    ],
)
def test_the_flower_check_refuses_what_celery_and_flower_refuse(command: list[str]) -> None:
    with pytest.raises(click.ClickException):
        check_celery_flower(command)


def test_the_checks_accept_the_documented_commands() -> None:
    assert check_snakepool(["snakepool", "-v", "status", "--json"]).name == "status"
    check_snakepool(["snakepool", "rollout", "set", "5", "--reason", "canary"])
    check_snakepool(["snakepool", "worker", "--lane", "all", "--pool-size", "2"])
    check_celery_flower(["celery", "-b", "redis://r:6379/0", "flower", "--persistent"])


# ------------------------------------------------------------------ settings and wiring


def test_environment_names_real_settings_with_valid_defaults() -> None:
    """A misspelt SNAKEPOOL_ variable would be ignored silently by the settings model."""
    fields = set(Settings.model_fields)
    for name, service in SERVICES.items():
        values = {}
        for key, value in environment(service).items():
            if key.startswith("SNAKEPOOL_"):
                setting = key.removeprefix("SNAKEPOOL_").lower()
                assert setting in fields, f"{name}: {key} is not a setting"
                values[setting] = value
        if "build" not in service:
            continue
        settings = load_settings(**values)  # the defaults compose fills in must validate
        assert adapter_exists(settings.adapter), f"{name}: no adapter {settings.adapter}"


def _seconds(duration: str) -> float:
    """A compose duration (``45s``, ``1m30s``, ``1h``, ``500ms``) in seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?", duration)
    assert match and duration, f"not a compose duration: {duration!r}"
    hours, minutes, seconds, millis = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def test_docker_waits_for_the_warm_shutdown_as_snakepool_up_does() -> None:
    """SIGKILL must not cut a warm shutdown short (issue 9 item 2): compose's
    stop_grace_period and `snakepool up` both allow SHUTDOWN_GRACE + the same margin."""
    from snakepool.tasks.local.launcher import STOP_GRACE, STOP_MARGIN, stop_grace_for

    assert _seconds("1m30s") == 90 and _seconds("45s") == 45 and _seconds("500ms") == 0.5
    for name, service in SERVICES.items():
        if "build" not in service:
            continue
        values = {
            key.removeprefix("SNAKEPOOL_").lower(): value
            for key, value in environment(service).items()
            if key.startswith("SNAKEPOOL_")
        }
        settings = load_settings(**values)
        assert settings.shutdown_grace is not None
        assert settings.shutdown_grace >= settings.request_timeout, name
        period = _seconds(str(service["stop_grace_period"]))
        assert period >= settings.shutdown_grace + STOP_MARGIN, (name, period)
        assert stop_grace_for(settings.shutdown_grace) == settings.shutdown_grace + STOP_MARGIN
        assert period == stop_grace_for(settings.shutdown_grace) == STOP_GRACE, name


def adapter_exists(path: str) -> bool:
    """A module (found, not imported: DSPy is heavy) or ``module.AdapterClass``."""
    try:
        if importlib.util.find_spec(path) is not None:
            return True
    except ModuleNotFoundError:  # a parent package is missing
        return False
    module, _, attribute = path.rpartition(".")
    try:
        return bool(module) and hasattr(importlib.import_module(module), attribute)
    except ImportError:
        return False


@pytest.mark.parametrize(
    ("path", "exists"),
    [
        ("snakepool.pool.interpreter.builtin", True),
        ("snakepool.pool.interpreter.Adapter", True),
        ("snakepool.pool.interpreter.dspy_program", False),
        ("pool.interpreterr.builtin", False),
    ],
)
def test_the_adapter_check(path: str, exists: bool) -> None:
    assert adapter_exists(path) is exists


def test_every_url_points_at_a_service_that_exists() -> None:
    for name, service in SERVICES.items():
        urls = [v for k, v in environment(service).items() if k.endswith("_URL")]
        if "command" in service and argv(service)[0] == "celery":
            assert check_celery_flower(argv(service)).get("broker") is None  # env only
        for url in urls:
            assert urlsplit(url).hostname in SERVICES, f"{name}: {url}"
            assert "redis" in service.get("depends_on", {}), f"{name} must wait for redis"


def test_redis_is_persistent_and_healthchecked() -> None:
    redis = SERVICES["redis"]
    command = argv(redis)
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, _target = next(v for v in redis["volumes"] if v.endswith(":/data")).partition(":")
    assert volume in SPEC["volumes"], "/data must be a named volume"
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    for name, service in SERVICES.items():
        if "build" in service:
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
