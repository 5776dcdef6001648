"""The pool's normal behaviour, with real interpreter processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from snakepool.errors import (
    CommandFailed,
    ConfigError,
    InvalidArguments,
    PoolUnavailable,
    QueueFull,
    QueueTimeout,
    UnknownCommand,
)
from snakepool.pool import Pool
from tests.integration.conftest import PoolFactory


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_start_execute_stats_stop(make_pool: PoolFactory, start_method: str) -> None:
    pool = make_pool(size=4, start_method=start_method)
    assert pool.execute("calculate", {"expression": "2 + 3 * 4"}) == {"result": 14}
    assert pool.execute("echo", {"a": [1, 2], "b": None}) == {"a": [1, 2], "b": None}
    assert pool.execute("ping")["pong"] is True
    stats = pool.execute("get_stats")
    assert {"pid", "requests", "uptime_s", "rss_bytes"} <= set(stats)
    assert stats["rss_bytes"] > 1_000_000
    pids = pool.interpreter_pids()
    assert len(pids) == 4 and all(psutil.pid_exists(pid) for pid in pids)
    summary = pool.stats()
    assert summary["size"] == 4 and summary["idle"] == 4 and summary["busy"] == 0
    assert summary["requests"] == 4 and summary["errors"] == 0
    assert summary["p50_ms"] is not None and summary["p99_ms"] >= summary["p50_ms"]
    pool.stop()
    assert not any(psutil.pid_exists(pid) for pid in pids)
    with pytest.raises(PoolUnavailable):
        pool.execute("ping")


def test_hundred_concurrent_calculations_on_four(make_pool: PoolFactory) -> None:
    pool = make_pool(size=4)
    expressions = [(f"{i} * {i} + {i % 7}", i * i + i % 7) for i in range(100)]
    with ThreadPoolExecutor(max_workers=100) as executor:
        results = list(
            executor.map(lambda e: pool.execute("calculate", {"expression": e[0]}), expressions)
        )
    assert [r["result"] for r in results] == [expected for _, expected in expressions]
    assert pool.stats()["requests"] == 100
    served_by = {pool.execute("get_stats")["pid"] for _ in range(8)}
    assert served_by <= set(pool.interpreter_pids())


def test_concurrent_start_is_concurrent(make_pool: PoolFactory) -> None:
    pool = make_pool(size=4)
    started = [pool.execute("get_stats")["uptime_s"] for _ in range(1)]
    # All four come from one template: every pid's parent is the same process.
    parents = {psutil.Process(pid).ppid() for pid in pool.interpreter_pids()}
    assert len(parents) == 1 and started


def test_command_errors_keep_the_interpreter(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1)
    pid = pool.interpreter_pids()[0]
    with pytest.raises(UnknownCommand, match="unknown command 'nope'"):
        pool.execute("nope")
    with pytest.raises(InvalidArguments, match="too large"):
        pool.execute("calculate", {"expression": "9**9**9"})
    with pytest.raises(InvalidArguments, match="division by zero"):
        pool.execute("calculate", {"expression": "1/0"})
    with pytest.raises(InvalidArguments, match="must be a dict"):
        pool.execute("echo", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert pool.interpreter_pids() == [pid]
    assert pool.stats()["errors"] == 4 and pool.stats()["crashes"] == 0


def test_command_failed_carries_remote_traceback(make_pool: PoolFactory, chaos_env: None) -> None:
    pool = make_pool(size=1, adapter="snakepool.pool.interpreter.chaos")
    pid = pool.interpreter_pids()[0]
    with pytest.raises(CommandFailed) as caught:
        pool.execute("fail", {"message": "bad input 42"})
    error = caught.value
    assert error.remote_type == "ValueError"
    assert "bad input 42" in error.message
    assert "Traceback" in error.remote_traceback and "chaos.py" in error.remote_traceback
    assert pool.execute("ping")["pid"] == pid  # still the same interpreter


def test_user_adapters(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2, adapter="tests.adapters.greeter")
    assert pool.execute("greet", {"name": "ada"}) == {"greeting": "hello ada"}
    assert pool.execute("shout", {"text": "hi"}) == "HI"
    assert pool.execute("ping")["pong"] is True
    with pytest.raises(UnknownCommand):
        pool.execute("calculate", {"expression": "1"})  # not in this adapter
    with pytest.raises(InvalidArguments, match="needs 'name'"):
        pool.execute("greet", {})


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_class_adapter_state_is_per_interpreter(make_pool: PoolFactory, start_method: str) -> None:
    # spawn: the template checks "module.Class" without importing it (find_spec raised).
    pool = make_pool(size=1, adapter="tests.adapters.counter.Counter", start_method=start_method)
    first = pool.execute("incr")
    second = pool.execute("incr", {"by": 5})
    assert (first["count"], second["count"]) == (1, 6)
    assert first["setup_pid"] == first["pid"]  # setup() ran in the interpreter itself


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_broken_adapter_fails_start_with_cause(make_pool: PoolFactory, start_method: str) -> None:
    pool = make_pool(size=2, adapter="tests.adapters.broken", start=False,
                     start_method=start_method)  # fmt: skip
    with pytest.raises((ConfigError, PoolUnavailable), match="cannot be imported"):
        pool.start()
    with pytest.raises(PoolUnavailable):
        pool.execute("ping")


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_missing_adapter_is_config_error(make_pool: PoolFactory, start_method: str) -> None:
    pool = make_pool(size=1, adapter="no_such_package.adapter", start=False,
                     start_method=start_method)  # fmt: skip
    with pytest.raises(ConfigError, match="No module named") as caught:
        pool.start()
    assert caught.value.setting == "ADAPTER"


def test_several_pools_with_different_adapters(make_pool: PoolFactory) -> None:
    builtin = make_pool(size=2)
    greeter = make_pool(size=2, adapter="tests.adapters.greeter")
    spawned = make_pool(size=1, start_method="spawn", adapter="tests.adapters.greeter")
    assert builtin.execute("calculate", {"expression": "6*7"}) == {"result": 42}
    assert greeter.execute("greet", {"name": "x"}) == {"greeting": "hello x"}
    assert spawned.execute("greet", {"name": "y"}) == {"greeting": "hello y"}
    assert set(builtin.interpreter_pids()).isdisjoint(greeter.interpreter_pids())


def test_queue_full_at_once_and_queue_timeout(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, max_queue=1, queue_timeout=0.3)
    busy = threading.Thread(target=pool.execute, args=("sleep", {"seconds": 1.5}))
    busy.start()
    while pool.stats()["busy"] == 0:
        time.sleep(0.01)
    with ThreadPoolExecutor(max_workers=1) as executor:
        waiting = executor.submit(pool.execute, "ping")
        while pool.stats()["queued"] == 0:
            time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(QueueFull):
            pool.execute("ping")
        assert time.monotonic() - started < 0.2  # refused at once, not after a wait
        with pytest.raises(QueueTimeout):
            waiting.result(timeout=5)
    busy.join(5)
    assert pool.execute("ping")["pong"]


def test_waiters_are_served_in_fifo_order(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1, queue_timeout=10)
    order: list[int] = []
    gate = threading.Thread(target=pool.execute, args=("sleep", {"seconds": 0.3}))
    gate.start()
    while pool.stats()["busy"] == 0:
        time.sleep(0.005)
    threads = []
    for i in range(5):
        thread = threading.Thread(
            target=lambda i=i: (pool.execute("echo", {"i": i}), order.append(i))
        )
        thread.start()
        threads.append(thread)
        while pool.stats()["queued"] < i + 1:  # enqueue strictly one after another
            time.sleep(0.005)
    for thread in [gate, *threads]:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_stop_finishes_in_flight_work(make_pool: PoolFactory) -> None:
    pool = make_pool(size=2)
    pids = pool.interpreter_pids()
    with ThreadPoolExecutor(max_workers=2) as executor:
        running = executor.submit(pool.execute, "sleep", {"seconds": 0.5})
        while pool.stats()["busy"] == 0:
            time.sleep(0.01)
        pool.stop(grace=5)
        assert running.result(timeout=1)["slept"] >= 0.5
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_stop_after_grace_kills_and_leaves_nothing(make_pool: PoolFactory) -> None:
    pool = make_pool(size=1)
    pids = pool.interpreter_pids()
    with ThreadPoolExecutor(max_workers=1) as executor:
        running = executor.submit(pool.execute, "sleep", {"seconds": 30})
        while pool.stats()["busy"] == 0:
            time.sleep(0.01)
        started = time.monotonic()
        pool.stop(grace=0.3)
        assert time.monotonic() - started < 5
        with pytest.raises(Exception):  # the request did not get to finish
            running.result(timeout=5)
    assert not any(psutil.pid_exists(pid) for pid in pids)


def test_context_manager(registry_dir: str) -> None:
    with Pool(size=1, registry_dir=registry_dir) as pool:
        pid = pool.interpreter_pids()[0]
        assert pool.execute("ping")["pid"] == pid
    assert not psutil.pid_exists(pid)


def test_works_from_a_plain_script_without_main_guard(tmp_path: Path, registry_dir: str) -> None:
    script = tmp_path / "plain.py"
    script.write_text(
        textwrap.dedent(f"""
        from snakepool.pool import Pool
        pool = Pool(size=2, registry_dir={registry_dir!r})
        pool.start()
        print("RESULT", pool.execute("calculate", {{"expression": "40 + 2"}})["result"])
        pool.stop()
        """)
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("RESULT 42") == 1  # the script ran once: no re-import


def test_affinity_sticks_to_one_interpreter(make_pool: PoolFactory) -> None:
    pool = make_pool(size=3)
    with ThreadPoolExecutor(max_workers=6) as executor:
        pids = list(
            executor.map(
                lambda i: pool.execute("get_stats", affinity=f"s{i % 2}")["pid"], range(30)
            )
        )
    assert len(set(pids[0::2])) == 1 and len(set(pids[1::2])) == 1
    assert pool.affinity_of("s0") == pids[0] and pool.affinity_of("unknown") is None


def test_affinity_waits_for_its_interpreter_then_moves_when_it_dies(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(size=2)
    bound = pool.execute("get_stats", affinity="s")["pid"]
    with ThreadPoolExecutor(max_workers=2) as executor:
        busy = executor.submit(pool.execute, "sleep", {"seconds": 0.5}, affinity="s")
        while pool.stats()["busy"] == 0:
            time.sleep(0.005)
        # The other interpreter is idle, but "s" waits for its own.
        assert pool.execute("get_stats", affinity="s")["pid"] == bound
        assert busy.result(5)["slept"] >= 0.5
    os.kill(bound, 9)
    deadline = time.monotonic() + 5
    while bound in pool.interpreter_pids() and time.monotonic() < deadline:
        time.sleep(0.005)  # the supervisor hears of the exit from the template
    moved = pool.execute("get_stats", affinity="s")["pid"]
    assert moved != bound and pool.affinity_of("s") == moved


def test_a_pool_never_started_leaks_no_fds(registry_dir: str) -> None:
    import gc

    me = psutil.Process()
    gc.collect()  # earlier tests' garbage must not close fds during the measurement
    before = me.num_fds()
    for _ in range(5):
        Pool(size=1, registry_dir=registry_dir).stop()
    for _ in range(5):
        Pool(size=1, registry_dir=registry_dir)  # dropped without start or stop
    gc.collect()
    assert me.num_fds() == before
