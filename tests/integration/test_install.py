"""snakepool as a user installs it: one import package, and another Python for interpreters.

- A non-editable wheel in a fresh virtual environment, used from an application folder
  that has its own ``tasks.py`` and ``config/`` package (what Celery and Django projects
  have): ``from snakepool import Client, Pool`` works, a Pool runs, a request goes through
  a worker node started from that environment, and the application's own ``tasks`` and
  ``config`` are the ones imported. ``import tasks|config|pool|sessions`` fails there.
- The ``PYTHON`` setting: interpreters under a second virtual environment that has only
  msgpack (no celery, no snakepool) still run, with ``spawn`` and with the template.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from snakepool.config.keys import Keys
from tests.integration.conftest import PoolFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def _deps_pth(venv: Path, entries: list[str]) -> None:
    """Make ``entries`` importable in ``venv`` (our dependencies, without reinstalling them)."""
    (site_dir,) = (venv / "lib").glob("python3*/site-packages")
    (site_dir / "_test_deps.pth").write_text("\n".join(entries) + "\n")


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with snakepool installed from a wheel (deps from ours, by path)."""
    workdir = tmp_path_factory.mktemp("wheel")
    # Build from a copy: an in-tree build leaves build/ behind, whose stale files would
    # end up in later wheels.
    source = workdir / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(workdir), str(source)],
        timeout=240,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = workdir.glob("snakepool-*.whl")
    venv = workdir / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert made.returncode == 0, made.stderr
    # Celery, redis-py, … come from our environment's site-packages; snakepool does not
    # (it is installed editable there, through a finder this venv never loads).
    _deps_pth(venv, site.getsitepackages())
    installed = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        timeout=240,
    )
    assert installed.returncode == 0, installed.stderr
    return venv


def test_old_top_level_names_are_not_importable(wheel_venv: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import importlib, json
        found = {}
        for name in ("tasks", "config", "pool", "sessions"):
            try:
                importlib.import_module(name)
                found[name] = "importable"
            except ModuleNotFoundError as exc:
                found[name] = exc.name
        import snakepool.tasks.client, snakepool.pool, snakepool.config, snakepool.sessions
        found["snakepool"] = snakepool.__file__
        # The profile presets are package data: read from the installed wheel.
        found["prod"] = snakepool.config.load_settings(profile="prod").pool_size
        print(json.dumps(found))
        """
    )
    done = _run([str(wheel_venv / "bin" / "python"), "-c", script], cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert {k: found[k] for k in ("tasks", "config", "pool", "sessions")} == {
        "tasks": "tasks",
        "config": "config",
        "pool": "pool",
        "sessions": "sessions",
    }
    assert found["snakepool"].startswith(str(wheel_venv))
    assert found["prod"] == 8


def test_the_wheel_holds_one_package_its_data_and_its_type_marker(wheel_venv: Path) -> None:
    (record,) = (wheel_venv / "lib").glob("python3*/site-packages/snakepool-*.dist-info/RECORD")
    installed = {line.split(",")[0] for line in record.read_text().splitlines() if line}
    top = {name.split("/")[0] for name in installed if not name.startswith("../")}
    assert {t for t in top if not t.endswith(".dist-info")} == {"snakepool"}
    # Every data file of the product's folders ships (Lua scripts, presets, demo answers),
    # and py.typed: mypy users of `from snakepool import Client` get our annotations.
    data = {
        f"snakepool/{path.relative_to(ROOT).as_posix()}"
        for package in ("config", "pool", "sessions", "tasks")
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix in (".lua", ".json", ".toml")
    }
    assert len(data) > 15
    assert data | {"snakepool/py.typed"} <= installed


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "tasks.py").write_text("def hello():\n    return 'the app tasks module'\n")
    (app / "config" / "__init__.py").write_text("NAME = 'the app config package'\n")
    return app


def _wait_heartbeat(url: str, hostname: str, node: subprocess.Popen[bytes], log: Path) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    try:
        while not client.exists(Keys().node(hostname)):
            assert node.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        client.close()


@pytest.mark.timeout(180)
def test_an_app_with_its_own_tasks_and_config_uses_snakepool(
    wheel_venv: Path, app_dir: Path, redis_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "SNAKEPOOL_REDIS_URL": redis_url,
        "SNAKEPOOL_POOL_SIZE": "1",
        "SNAKEPOOL_REGISTRY_DIR": str(tmp_path / "registry"),
    }
    env.pop("PYTHONPATH", None)
    name = f"install-{os.getpid()}"
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen(
            [str(wheel_venv / "bin" / "snakepool"), "worker", "--lane", "all", "--name", name],
            cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_heartbeat(redis_url, f"{name}@{socket.gethostname()}", node, log)
        script = textwrap.dedent(
            """
            import json, tasks, config
            from snakepool import Client, Pool
            with Pool(size=1) as pool:
                local = pool.execute("calculate", {"expression": "6 * 7"})
            client = Client()
            remote = client.execute("calculate", {"expression": "2 + 3 * 4"}, timeout=60)
            print(json.dumps({"tasks": tasks.hello(), "config": config.NAME,
                              "local": local, "remote": remote}))
            """
        )
        done = _run(
            [str(wheel_venv / "bin" / "python"), "-c", script], cwd=app_dir, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr + log.read_text()
        assert json.loads(done.stdout) == {
            "tasks": "the app tasks module",
            "config": "the app config package",
            "local": {"result": 42},
            "remote": {"result": 14},
        }
        # Celery's own command line, by the documented app path, from the app's folder.
        celery = [str(wheel_venv / "bin" / "python"), "-m", "celery"]
        inspect = ["-A", "snakepool.tasks.worker.celery_app", "inspect", "ping", "--timeout", "10"]
        pinged = _run(
            [*celery, *inspect, "-d", f"{name}@{socket.gethostname()}"],
            cwd=app_dir,
            env=env,
            timeout=60,
        )
        assert pinged.returncode == 0, pinged.stdout + pinged.stderr
        assert "pong" in pinged.stdout
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(10)


@pytest.fixture(scope="module")
def other_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A second venv holding msgpack only: no celery, no pydantic, no snakepool."""
    import msgpack

    workdir = tmp_path_factory.mktemp("other-python")
    venv = workdir / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    assert made.returncode == 0, made.stderr
    only = workdir / "only-msgpack"
    only.mkdir()
    (only / "msgpack").symlink_to(Path(msgpack.__file__).parent)
    _deps_pth(venv, [str(only)])
    yield venv / "bin" / "python"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_interpreters_run_under_another_python(
    other_python: Path, make_pool: PoolFactory, start_method: str
) -> None:
    pool = make_pool(
        size=2,
        python=str(other_python),
        start_method=start_method,
        adapter="tests.adapters.whereami",
    )
    where = pool.execute("whereami")
    assert where["prefix"] == str(other_python.parent.parent)
    assert where["has_celery"] is False
    assert "site-packages" not in where["errors_file"]  # the interpreter-side subset
    assert pool.execute("calculate" if False else "ping")["pong"] is True
    with pytest.raises(Exception) as raised:
        pool.execute("no_such_command")
    assert type(raised.value).__name__ == "UnknownCommand"
