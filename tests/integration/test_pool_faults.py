"""Crashes, hangs, garbage, memory growth and dead parents, with real processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from snakepool.errors import (
    PayloadTooLarge,
    PoolUnavailable,
    RequestTimeout,
    WorkerCrashed,
)
from tests.integration.conftest import PoolFactory

pytestmark = pytest.mark.chaos

CHAOS = "snakepool.pool.interpreter.chaos"


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that has no event to wait on (another process's state)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def replaced(pool_stats: Callable[[], dict], before: list[int], size: int) -> Callable[[], bool]:
    return lambda: (s := pool_stats())["live"] == size and set(s["pids"]) != set(before)


def test_kill_9_during_a_request(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2)
    with ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(pool.execute, "sleep", {"seconds": 30})
        wait_for(lambda: pool.stats()["busy"] == 1)
        victim = next(p for p in pool.interpreter_pids() if pool.execute("ping")["pid"] != p)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerCrashed) as caught:
            running.result(timeout=10)
    error = caught.value
    assert error.signal == signal.SIGKILL and error.signal_name == "SIGKILL"
    assert error.exit_code is None and error.pid == victim and error.retryable
    wait_for(lambda: pool.stats()["live"] == 2)
    assert victim not in pool.interpreter_pids()
    assert pool.execute("calculate", {"expression": "1+1"}) == {"result": 2}
    assert pool.stats()["crashes"] == 1 and pool.stats()["restarts"] == 1


@pytest.mark.parametrize(
    ("command", "args", "exit_code", "signum"),
    [
        ("crash", {}, None, signal.SIGKILL),
        ("crash", {"signal": signal.SIGSEGV}, None, signal.SIGSEGV),
        ("exit", {"code": 7}, 7, None),
        ("exit", {"code": 0}, 0, None),
    ],
)
def test_crash_table(
    make_pool: PoolFactory,
    chaos_env: None,
    command: str,
    args: dict,
    exit_code: int | None,
    signum: int | None,
) -> None:
    pool = make_pool(size=1, adapter=CHAOS)
    before = pool.interpreter_pids()
    with pytest.raises(WorkerCrashed) as caught:
        pool.execute(command, args)
    assert (caught.value.exit_code, caught.value.signal) == (exit_code, signum)
    wait_for(replaced(pool.stats, before, 1))
    assert pool.execute("ping")["pong"]


def test_idle_death_is_noticed_at_once(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2, health_check_interval=3600)  # no health ping will help
    before = pool.interpreter_pids()
    os.kill(before[0], signal.SIGKILL)
    started = time.monotonic()
    wait_for(replaced(pool.stats, before, 2), timeout=5)
    assert time.monotonic() - started < 2
    assert pool.stats()["health_checks"] == 0 and pool.stats()["crashes"] == 1
    # The next requests never see the dead one.
    assert {pool.execute("ping")["pid"] for _ in range(4)} <= set(pool.interpreter_pids())


def test_hung_command_is_timed_out_and_replaced(make_pool: PoolFactory, chaos_env: None) -> None:
    pool = make_pool(size=1, adapter=CHAOS, request_timeout=0.5)
    before = pool.interpreter_pids()
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as caught:
        pool.execute("hang")
    assert 0.5 <= time.monotonic() - started < 3
    assert caught.value.timeout == 0.5 and caught.value.pid == before[0]
    wait_for(lambda: not psutil.pid_exists(before[0]) or _is_zombie(before[0]))
    wait_for(replaced(pool.stats, before, 1))
    assert pool.execute("sleep", {"seconds": 0.1}, timeout=5)["slept"] >= 0.1
    with pytest.raises(RequestTimeout):
        pool.execute("sleep", {"seconds": 5}, timeout=0.2)  # per-call timeout
    assert pool.stats()["timeouts"] == 2


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_restart_intensity_backs_off_instead_of_fork_looping(
    make_pool: PoolFactory, chaos_env: None
) -> None:
    pool = make_pool(size=2, adapter=CHAOS, restart_intensity=3, restart_period=60)
    seen: set[int] = set(pool.interpreter_pids())
    unavailable = 0
    for _ in range(12):
        try:
            pool.execute("crash")
        except WorkerCrashed:
            pass
        except PoolUnavailable as exc:
            unavailable += 1
            assert exc.retry_after > 0
        seen.update(pool.interpreter_pids())
    assert unavailable > 0
    stats = pool.stats()
    assert stats["unavailable"] and "backing off" in stats["unavailable"]
    # 2 initial + at most `restart_intensity` restarts before the back-off kicks in.
    assert len(seen) <= 2 + 3 + 1
    # After the back-off the pool serves again.
    wait_for(lambda: pool.stats()["live"] == 2, timeout=10)
    assert pool.execute("ping")["pong"]


def test_stdout_garbage_cannot_corrupt_the_protocol(
    make_pool: PoolFactory, chaos_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="snakepool.interpreter")
    pool = make_pool(size=1, adapter=CHAOS)
    pid = pool.interpreter_pids()[0]
    assert pool.execute("stdout_noise", {"lines": 5000}) == {"lines": 5000}
    assert pool.execute("calculate", {"expression": "2*21"}) == {"result": 42}
    assert pool.interpreter_pids() == [pid] and pool.stats()["crashes"] == 0
    wait_for(lambda: any("and some on stderr" in r.getMessage() for r in caplog.records))
    stderr = [r for r in caplog.records if "and some on stderr" in r.getMessage()]
    assert stderr[0].levelno == logging.WARNING
    assert f"interpreter 1 (pid {pid}) stderr" in stderr[0].getMessage()
    assert any(f"(pid {pid}) stdout] noise 4999" in r.getMessage() for r in caplog.records)


def test_protocol_corruption_is_a_crash_not_a_hang(make_pool: PoolFactory, chaos_env: None) -> None:
    pool = make_pool(size=1, adapter=CHAOS, max_message_bytes=1 << 20)
    before = pool.interpreter_pids()
    with pytest.raises(WorkerCrashed, match="protocol violation"):
        pool.execute("corrupt_protocol", timeout=5)
    wait_for(replaced(pool.stats, before, 1))
    assert pool.execute("ping")["pong"]


def test_payload_limits(make_pool: PoolFactory, chaos_env: None) -> None:
    pool = make_pool(size=1, adapter=CHAOS, max_message_bytes=64 * 1024)
    pid = pool.interpreter_pids()[0]
    with pytest.raises(PayloadTooLarge) as request_error:
        pool.execute("echo", {"blob": "x" * 100_000})
    assert request_error.value.direction == "request" and request_error.value.limit == 65536
    with pytest.raises(PayloadTooLarge) as result_error:
        pool.execute("huge_result", {"bytes": 200_000})
    assert result_error.value.direction == "result"
    assert len(pool.execute("huge_result", {"bytes": 60_000})) == 60_000
    assert pool.interpreter_pids() == [pid]  # nobody had to die for that


def test_large_messages_within_the_limit(make_pool: PoolFactory, chaos_env: None) -> None:
    pool = make_pool(size=1, adapter=CHAOS, max_message_bytes=32 << 20)
    blob = "y" * (8 << 20)
    assert pool.execute("echo", {"blob": blob})["blob"] == blob
    assert len(pool.execute("huge_result", {"bytes": 12 << 20})) == 12 << 20


def test_recycle_after_max_requests(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, max_requests_per_worker=3)
    pids = [pool.execute("ping")["pid"] for _ in range(7)]
    assert pids[0] == pids[1] == pids[2] and pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3
    stats = pool.stats()
    assert stats["recycled"] == 2 and stats["crashes"] == 0


def test_recycle_on_rss(make_pool: PoolFactory, chaos_env: None) -> None:
    pool = make_pool(size=1, adapter=CHAOS, max_worker_rss_mb=120)
    pid = pool.interpreter_pids()[0]
    pool.execute("allocate", {"mb": 20})
    assert pool.interpreter_pids() == [pid]  # still under the limit
    pool.execute("allocate", {"mb": 150})  # the reply arrives; then it is recycled
    wait_for(lambda: pool.stats()["live"] == 1 and pool.interpreter_pids() != [pid])
    assert pool.stats()["recycled"] == 1 and pool.stats()["crashes"] == 0
    assert pool.execute("get_stats")["rss_bytes"] < 120 * 2**20


def test_recycle_by_age(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, max_worker_age=0.3, health_check_interval=0.1)
    pid = pool.interpreter_pids()[0]
    wait_for(lambda: pool.stats()["recycled"] >= 1 and pool.interpreter_pids() not in ([], [pid]))
    assert pool.execute("ping")["pid"] != pid


def test_health_pings_never_wait_behind_a_request(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2, health_check_interval=0.1)
    with ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(pool.execute, "sleep", {"seconds": 1.5})
        wait_for(lambda: pool.stats()["busy"] >= 1)
        # While one interpreter sleeps, the other keeps being pinged.
        wait_for(lambda: pool.stats()["health_checks"] >= 3, timeout=1.4)
        assert not running.done()
        assert running.result(timeout=5)["slept"] >= 1.5
    assert pool.stats()["crashes"] == 0


def test_hung_idle_interpreter_fails_its_health_check(
    make_pool: PoolFactory, chaos_env: None
) -> None:
    pool = make_pool(size=1, adapter=CHAOS, health_check_interval=0.2, request_timeout=0.5)
    pid = pool.interpreter_pids()[0]
    os.kill(pid, signal.SIGSTOP)  # frozen: alive, but answers nothing
    try:
        wait_for(lambda: pool.interpreter_pids() not in ([], [pid]), timeout=10)
    finally:
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGCONT)
    assert pool.stats()["crashes"] == 1
    assert pool.execute("ping")["pong"]


def test_interpreters_die_with_a_sigkilled_parent(tmp_path: Path, registry_dir: str) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, threading
        from snakepool.pool import Pool
        pool = Pool(size=3, registry_dir={registry_dir!r})
        pool.start()
        threading.Thread(target=pool.execute, args=("sleep", {{"seconds": 60}})).start()
        while pool.stats()["busy"] == 0:
            pass
        print(" ".join(map(str, pool.interpreter_pids())), flush=True)
        threading.Event().wait()
        """)
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    children = psutil.Process(parent.pid).children(recursive=True)
    assert len(pids) == 3 and len(children) == 4  # template + 3 interpreters
    parent.kill()
    parent.wait(5)
    parent.stdout.close()
    killed_at = time.monotonic()
    wait_for(lambda: not any(c.is_running() and not _is_zombie(c.pid) for c in children), 2.0)
    assert time.monotonic() - killed_at < 2.0


def test_sweep_kills_only_leftovers_of_dead_runs(registry_dir: str, make_pool: PoolFactory) -> None:
    from snakepool.pool.registry import ProcessRegistry

    registry = ProcessRegistry(Path(registry_dir))
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    leftover = subprocess.Popen([*sleeper, "--run-id", "deadrun"])
    unmarked = subprocess.Popen([*sleeper, "--run-id", "otherrun"])
    live_owned = subprocess.Popen([*sleeper, "--run-id", "liverun"])
    reused = subprocess.Popen([*sleeper, "--run-id", "reusedrun"])
    try:
        me = psutil.Process()

        def write(run_id: str, process: subprocess.Popen, owner: tuple[int, float], skew=0.0):
            record = {
                "run_id": run_id,
                "role": "interpreter",
                "pid": process.pid,
                "create_time": psutil.Process(process.pid).create_time() + skew,
                "owner_pid": owner[0],
                "owner_create_time": owner[1],
            }
            import json

            (Path(registry_dir) / f"{run_id}.{process.pid}.json").write_text(json.dumps(record))

        gone = (dead_owner.pid, 1.0)
        write("deadrun", leftover, gone)
        write("mismatch", unmarked, gone)  # cmdline says otherrun: not ours to kill
        write("liverun", live_owned, (me.pid, me.create_time()))
        write("reusedrun", reused, gone, skew=-100.0)  # same pid, different process
        pool = make_pool(size=1, registry_dir=registry_dir)  # start() sweeps
        assert leftover.wait(5) == -signal.SIGKILL
        for survivor in (unmarked, live_owned, reused):
            assert survivor.poll() is None
        runs = {record.run_id for record in registry.records()}
        assert runs == {"liverun", pool.run_id}
    finally:
        for process in (leftover, unmarked, live_owned, reused):
            process.kill()
            process.wait()


def test_template_death_is_survived(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2)
    before = pool.interpreter_pids()
    template_pid = psutil.Process(before[0]).ppid()
    os.kill(template_pid, signal.SIGKILL)
    wait_for(lambda: (s := pool.stats())["live"] == 2 and not set(s["pids"]) & set(before))
    assert psutil.Process(pool.interpreter_pids()[0]).ppid() != template_pid
    assert pool.execute("calculate", {"expression": "3*3"}) == {"result": 9}


def test_concurrent_load_with_crashes_loses_nothing(
    make_pool: PoolFactory, chaos_env: None
) -> None:
    pool = make_pool(size=3, adapter=CHAOS, restart_intensity=100)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            if i % 10 == 0:
                pool.execute("crash")
            result = pool.execute("calculate", {"expression": f"{i}+1"})
            kind = "ok" if result == {"result": i + 1} else "wrong"
        except WorkerCrashed:
            kind = "crashed"
        with lock:
            outcomes.append(kind)

    with ThreadPoolExecutor(max_workers=12) as executor:
        list(executor.map(one, range(100)))
    assert len(outcomes) == 100 and "wrong" not in outcomes
    assert outcomes.count("crashed") == 10
    wait_for(lambda: pool.stats()["live"] == 3)
