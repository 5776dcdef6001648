"""Whatever an interpreter started dies with it: on timeout, recycle, crash, failed
health check, stop, template death and death of the pool's own process.

Every test starts real ``sleep`` processes through the chaos adapter's ``spawn_child``
and asserts that those very pids are gone (a zombie waiting for init counts as gone).
Modes: ``child`` stays in the interpreter's process group, ``session`` ``setsid``s out
of it, ``daemon`` double-forks out of it and is orphaned at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from snakepool.errors import RequestTimeout, WorkerCrashed
from snakepool.pool import Pool
from snakepool.pool.orphans import kill_sessions
from tests.integration.conftest import PoolFactory

pytestmark = pytest.mark.chaos

CHAOS = "snakepool.pool.interpreter.chaos"
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Running (a zombie is dead: it only waits for its reaper)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    """Poll until every pid is dead (another process's state: nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while left := [pid for pid in pids if alive(pid)]:
        if time.monotonic() > deadline:
            raise AssertionError(f"still running after {timeout:g}s: {left}")
        time.sleep(0.02)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that has no event to wait on (another process's state)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def spawn(pool: Pool, mode: str = "child") -> int:
    pid: int = pool.execute("spawn_child", {"mode": mode})["pid"]
    return pid


@pytest.fixture
def chaos_pool(make_pool: PoolFactory, chaos_env: None) -> PoolFactory:
    def factory(**settings: object) -> Pool:
        return make_pool(adapter=CHAOS, enable_chaos=True, **settings)

    return factory


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("start_method", "mode"),
    [("forkserver", "child"), ("forkserver", "session"), ("spawn", "child")],
)
def test_request_timeout_kills_what_the_command_started(
    chaos_pool: PoolFactory, tmp_path: Path, start_method: str, mode: str
) -> None:
    # The reported input: a command starts `sleep 60`, then hangs; request_timeout=2.
    pool = chaos_pool(size=1, request_timeout=2, start_method=start_method)
    interpreter = pool.interpreter_pids()[0]
    pid_file = tmp_path / "pid"
    args = {"mode": mode, "then": "hang", "pid_file": str(pid_file)}
    with pytest.raises(RequestTimeout):
        pool.execute("spawn_child", args)
    sleeper = int(pid_file.read_text())
    wait_gone([interpreter, sleeper], timeout=3)
    assert pool.execute("ping")["pong"]


def test_children_live_as_long_as_their_interpreter_then_die_on_stop(
    chaos_pool: PoolFactory,
) -> None:
    pool = chaos_pool(size=1)
    interpreter = pool.interpreter_pids()[0]
    sleepers = [spawn(pool, "child"), spawn(pool, "session")]
    assert all(alive(pid) for pid in sleepers)  # a live interpreter keeps what it started
    assert psutil.Process(sleepers[0]).ppid() == interpreter
    assert os.getpgid(sleepers[0]) == interpreter  # its group is the interpreter's
    assert os.getsid(sleepers[1]) == sleepers[1]  # this one left it
    pool.stop(grace=1)
    # stop() returns once the template has killed and reaped everything.
    assert not any(alive(pid) for pid in [interpreter, *sleepers])


@pytest.mark.parametrize("mode", ["child", "session"])
def test_recycling_kills_what_the_interpreter_started(chaos_pool: PoolFactory, mode: str) -> None:
    pool = chaos_pool(size=1, max_requests_per_worker=1)
    first = pool.interpreter_pids()[0]
    sleeper = spawn(pool, mode)  # its reply is the interpreter's last request
    wait_gone([first, sleeper])
    assert pool.stats()["recycled"] == 1 and pool.stats()["crashes"] == 0
    assert pool.execute("ping")["pid"] != first


@pytest.mark.parametrize("mode", ["child", "session"])
def test_a_crash_kills_what_the_interpreter_started(
    chaos_pool: PoolFactory, tmp_path: Path, mode: str
) -> None:
    pool = chaos_pool(size=1)
    pid_file = tmp_path / "pid"
    with pytest.raises(WorkerCrashed) as caught:
        pool.execute("spawn_child", {"mode": mode, "then": "crash", "pid_file": str(pid_file)})
    assert caught.value.signal == signal.SIGKILL
    wait_gone([int(pid_file.read_text())])


def test_a_failed_health_check_kills_what_the_interpreter_started(
    chaos_pool: PoolFactory,
) -> None:
    pool = chaos_pool(size=1, health_check_interval=0.2, request_timeout=0.5)
    interpreter = pool.interpreter_pids()[0]
    sleepers = [spawn(pool, "child"), spawn(pool, "session")]
    os.kill(interpreter, signal.SIGSTOP)  # alive, but answers no ping
    try:
        wait_gone([interpreter, *sleepers], timeout=10)
    finally:
        if alive(interpreter):
            os.kill(interpreter, signal.SIGCONT)
    assert pool.stats()["crashes"] == 1


def test_a_detached_daemon_is_killed_once_orphaned(chaos_pool: PoolFactory) -> None:
    pool = chaos_pool(size=1)
    interpreter = pool.interpreter_pids()[0]
    daemon = spawn(pool, "daemon")
    wait_gone([daemon], timeout=5)  # adopted by the template, which kills it
    # ... while the interpreter that started it lives on and serves.
    assert pool.interpreter_pids() == [interpreter] and alive(interpreter)
    assert pool.execute("ping")["pid"] == interpreter


def _open_pidfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            continue
    return count


@pytest.mark.parametrize("phase", ["timeout", "health"])
def test_killing_works_without_pidfd(
    chaos_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    monkeypatch.delattr(os, "pidfd_open")  # as on a kernel or Python without pidfds
    pool = chaos_pool(size=1, request_timeout=0.5, health_check_interval=0.2)
    interpreter = pool.interpreter_pids()[0]
    assert _open_pidfds() == 0  # the pool holds no pidfd: kills go through the template
    sleeper = spawn(pool, "child")
    if phase == "timeout":
        with pytest.raises(RequestTimeout):
            pool.execute("hang")
        wait_gone([interpreter, sleeper], timeout=3)
    else:
        os.kill(interpreter, signal.SIGSTOP)
        try:
            wait_gone([interpreter, sleeper], timeout=10)
        finally:
            if alive(interpreter):
                os.kill(interpreter, signal.SIGCONT)
    assert pool.execute("ping")["pid"] != interpreter


def test_template_death_takes_what_interpreters_started(chaos_pool: PoolFactory) -> None:
    pool = chaos_pool(size=1)
    interpreter = pool.interpreter_pids()[0]
    template = psutil.Process(interpreter).ppid()
    sleepers = [spawn(pool, "child"), spawn(pool, "session")]
    os.kill(template, signal.SIGKILL)  # no chance to clean up: the pool sweeps its marker
    wait_gone([interpreter, *sleepers])
    wait_for(lambda: pool.stats()["live"] == 1)
    assert pool.execute("ping")["pid"] != interpreter


@contextmanager
def pool_host(
    tmp_path: Path, registry_dir: str
) -> Iterator[tuple[subprocess.Popen[str], int, list[int], list[int]]]:
    """A plain script hosting a pool of 2 whose interpreters started 3 sleeps (one
    under a request still in flight); yields it with the template, interpreter and
    sleep pids."""
    pid_file = tmp_path / "hanging.pid"
    script = tmp_path / "host.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, threading, time
        import psutil
        from snakepool.pool import Pool
        pool = Pool(size=2, adapter={CHAOS!r}, enable_chaos=True, registry_dir={registry_dir!r})
        pool.start()
        sleepers = [pool.execute("spawn_child", {{"mode": m}})["pid"] for m in ("child", "session")]
        args = {{"then": "hang", "pid_file": {str(pid_file)!r}}}
        threading.Thread(target=pool.execute, args=("spawn_child", args), daemon=True).start()
        while not os.path.exists({str(pid_file)!r}):
            time.sleep(0.01)
        sleepers.append(int(open({str(pid_file)!r}).read()))
        interpreters = pool.interpreter_pids()
        template = psutil.Process(interpreters[0]).ppid()
        print(template, *interpreters, *sleepers, flush=True)
        threading.Event().wait()
        """)
    )
    host = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert host.stdout is not None
        template, *rest = map(int, host.stdout.readline().split())
        yield host, template, rest[:2], rest[2:]
    finally:
        host.kill()
        host.wait(5)
        assert host.stdout is not None
        host.stdout.close()


@pytest.mark.timeout(60)
def test_death_of_the_pools_process_kills_everything_below_it(
    tmp_path: Path, registry_dir: str, chaos_env: None
) -> None:
    with pool_host(tmp_path, registry_dir) as (host, template, interpreters, sleepers):
        assert len(sleepers) == 3 and all(alive(pid) for pid in sleepers)
        host.kill()  # SIGKILL: no finally, no atexit; the template sees its socket close
        host.wait(5)
        wait_gone([template, *interpreters, *sleepers], timeout=5)


@pytest.mark.timeout(60)
def test_sweep_kills_what_a_dead_runs_interpreters_left(
    tmp_path: Path, registry_dir: str, chaos_env: None, make_pool: PoolFactory
) -> None:
    with pool_host(tmp_path, registry_dir) as (host, template, interpreters, sleepers):
        # Pool process and template die together, so nobody cleans up (as under an
        # OOM kill of both): the template is frozen first so it cannot see the EOF.
        os.kill(template, signal.SIGSTOP)
        host.kill()
        host.wait(5)
        os.kill(template, signal.SIGKILL)
        wait_gone([template, *interpreters])  # by their parent-death signal
        assert all(alive(pid) for pid in sleepers)  # orphans of init now
        make_pool(size=1, adapter=CHAOS, enable_chaos=True)  # start() sweeps the registry
        wait_gone(sleepers, timeout=2)


MAKERS = "tests.adapters.orphan_makers"
#: Every way user code can start something (tests/adapters/orphan_makers.py) ...
HOWS = ("popen", "session", "daemon", "fork", "ignore_term", "new_group", "bare_env")
#: ... and every way its interpreter can end.
ENDS = ("timeout", "crash", "recycle", "health", "stop", "template_kill")


def _started(pid_file: Path) -> list[int]:
    wait_for(pid_file.exists)
    return [int(pid) for pid in pid_file.read_text().split()]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("how", HOWS)
def test_whatever_an_interpreter_started_dies_with_it(
    make_pool: PoolFactory, tmp_path: Path, how: str, end: str
) -> None:
    """Each way of starting a process, each way of ending: the very pids are gone.

    ``bare_env`` (a child with an empty environment: no marker) after the template's
    SIGKILL was left running with parent 1; it is now found by its session.
    """
    settings: dict[str, object] = {"size": 1, "adapter": MAKERS}
    if end == "timeout":
        settings["request_timeout"] = 1
    if end == "recycle":
        settings["max_requests_per_worker"] = 1
    if end == "health":
        settings.update(health_check_interval=0.2, request_timeout=0.5)
    pool = make_pool(**settings)
    interpreter = pool.interpreter_pids()[0]
    template = psutil.Process(interpreter).ppid()
    pid_file = tmp_path / "pids"
    args = {"how": how, "pid_file": str(pid_file)}
    if end in ("timeout", "crash"):
        with pytest.raises(RequestTimeout if end == "timeout" else WorkerCrashed):
            pool.execute("start", {**args, "then": "hang" if end == "timeout" else "exit"})
    else:
        pool.execute("start", args)
    started = _started(pid_file)
    if end == "health":
        os.kill(interpreter, signal.SIGSTOP)  # alive, but answers no ping
    elif end == "stop":
        pool.stop(grace=1)
    elif end == "template_kill":
        os.kill(template, signal.SIGKILL)
    try:
        wait_gone(started, timeout=10)
    finally:
        if alive(interpreter):
            os.kill(interpreter, signal.SIGCONT)


@pytest.mark.timeout(30)
def test_a_session_is_killed_only_while_its_leader_pid_is_not_someone_elses() -> None:
    script = "import subprocess, sys, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        wait_for(lambda: len(psutil.Process(leader.pid).children()) == 1)
        member = psutil.Process(leader.pid).children()[0].pid
        created = psutil.Process(leader.pid).create_time()
        # The pid now names another process than the leader we knew: a stranger's session.
        assert kill_sessions({leader.pid: created - 60}) == []
        assert alive(leader.pid) and alive(member)
        assert sorted(kill_sessions({leader.pid: created})) == sorted([leader.pid, member])
        wait_gone([leader.pid, member])
    finally:
        leader.kill()
        leader.wait(5)
