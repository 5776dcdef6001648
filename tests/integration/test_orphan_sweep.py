"""The start-up sweep of a dead run, down to process groups and marked descendants,
with real processes; and the template side's group kill."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from snakepool.pool.interpreter.reaper import child_pids, kill_tree, process_name
from snakepool.pool.orphans import MARKER_ENV, kill_marked
from snakepool.pool.registry import ProcessRegistry

# A group leader that starts `sleep` in its group with an EMPTY environment (so no
# marker can find it: only the group can), prints the sleep's pid, then waits.
SLEEP = shutil.which("sleep") or "/bin/sleep"
LEADER = (
    "import subprocess, sys, time\n"
    f"child = subprocess.Popen([{SLEEP!r}, '60'], env={{}})\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(pid: int, timeout: float = 5.0) -> None:
    """Poll (another process's state: nothing to wait on) until ``pid`` is dead."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"pid {pid} still running")
        time.sleep(0.02)


class Started:
    """Processes to SIGKILL after the test, whatever happened (some carry no test
    marker for the leftover check to find); our own children are reaped too."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[Any]] = []
        self.others: list[psutil.Process] = []

    def add(self, process: subprocess.Popen[Any] | int) -> None:
        if isinstance(process, int):
            self.others.append(psutil.Process(process))  # create time kept: reuse-safe
        else:
            self.children.append(process)

    def kill_all(self) -> None:
        for other in self.others:
            with contextlib.suppress(psutil.Error):
                other.kill()
        for child in self.children:
            child.kill()
            child.wait()


@pytest.fixture
def processes() -> Iterator[Started]:
    started = Started()
    yield started
    started.kill_all()


def start_leader(run_id: str, processes: Started) -> tuple[subprocess.Popen[str], int]:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, "--run-id", run_id],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    processes.add(leader)
    assert leader.stdout is not None
    member = int(leader.stdout.readline())
    leader.stdout.close()
    processes.add(member)
    assert os.getpgid(member) == leader.pid and MARKER_ENV not in psutil.Process(member).environ()
    return leader, member


def write_record(registry_dir: str, run_id: str, pid: int, *, skew: float = 0.0) -> None:
    """A record of ``pid`` owned by a pool process that is gone."""
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    record = {
        "run_id": run_id,
        "role": "interpreter",
        "pid": pid,
        "create_time": psutil.Process(pid).create_time() + skew,
        "owner_pid": dead_owner.pid,
        "owner_create_time": 1.0,
        "pgid": pid,
    }
    (Path(registry_dir) / f"{run_id}.{pid}.json").write_text(json.dumps(record))


def test_sweep_kills_the_group_of_a_dead_runs_leader(registry_dir: str, processes: Started) -> None:
    leader, member = start_leader("deadrun", processes)
    write_record(registry_dir, "deadrun", leader.pid)
    assert ProcessRegistry(Path(registry_dir)).sweep() == [leader.pid]
    assert leader.wait(5) == -signal.SIGKILL
    wait_dead(member)  # maybe a zombie until init reaps it: dead all the same


def test_sweep_spares_the_group_of_a_reused_pid(registry_dir: str, processes: Started) -> None:
    leader, member = start_leader("reusedrun", processes)
    write_record(registry_dir, "reusedrun", leader.pid, skew=-100.0)  # another process
    assert ProcessRegistry(Path(registry_dir)).sweep() == []
    assert alive(leader.pid) and alive(member)
    assert ProcessRegistry(Path(registry_dir)).records() == []  # the stale record is gone


def test_sweep_kills_exactly_the_dead_runs_marked_processes(
    registry_dir: str, processes: Started
) -> None:
    def sleeper(marker: str | None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        if marker is not None:
            env[MARKER_ENV] = marker
        process = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        processes.add(process)
        return process

    template = sleeper("deadrun/aaaa")  # the recorded one, already marked
    escaped = sleeper("deadrun/bbbb")  # a second template of the run: same run, no record
    other_run = sleeper("deadrunner/aaaa")  # a run whose id merely starts alike
    unmarked = sleeper(None)
    write_record(registry_dir, "deadrun", template.pid)
    # Without the cmdline marker the recorded pid itself is spared; its env marker is not.
    killed = ProcessRegistry(Path(registry_dir)).sweep()
    assert sorted(killed) == sorted([template.pid, escaped.pid])
    assert template.wait(5) == escaped.wait(5) == -signal.SIGKILL
    assert other_run.poll() is None and unmarked.poll() is None


def test_kill_marked_never_kills_older_processes(processes: Started) -> None:
    env = {**os.environ, MARKER_ENV: "oldrun/cccc"}
    old = subprocess.Popen(["sleep", "60"], env=env)
    processes.add(old)
    since = psutil.Process(old.pid).create_time() + 1.0  # the run started after it
    assert kill_marked(lambda marker: marker == "oldrun/cccc", since=since) == []
    assert old.poll() is None


def test_kill_tree_takes_the_group_a_child_leads(processes: Started) -> None:
    leader, member = start_leader("anyrun", processes)
    assert leader.pid in child_pids() and member not in child_pids()
    assert process_name(leader.pid) is not None
    kill_tree(leader.pid)
    assert leader.wait(5) == -signal.SIGKILL
    wait_dead(member)
    assert leader.pid not in child_pids() and process_name(leader.pid) is None
