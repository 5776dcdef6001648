"""The process registry: every template and interpreter we start, on disk, so that
the leftovers of a run that died (a pool process lost to SIGKILL or OOM, say) can be
found and killed at the next start.

A record is one small JSON file: run id, role, pid, the process's create time, its
process group, and the owner (the pool process's pid and create time).
:meth:`ProcessRegistry.sweep` kills a recorded process only if all of these hold: its
owner is dead (or is a different process now), the pid is alive with the same create
time (so a reused pid is never hit), and its command line carries the run id marker
(``--run-id <id>``); it then kills the process group that process leads too (an
interpreter leads one holding everything it started). Last, it kills every process
that carries a dead run's marker in its environment (:mod:`snakepool.pool.orphans`):
what the run's interpreters started and moved out of their group. Records of live
owners — another pool, in this or another process — are left alone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from snakepool.pool.orphans import kill_marked, run_of

__all__ = ["ProcessRecord", "ProcessRegistry", "default_registry_dir"]

log = logging.getLogger("snakepool.pool.registry")

#: Create times are floats rounded by the kernel's clock tick; allow for that.
_CREATE_TIME_TOLERANCE = 0.05


def default_registry_dir() -> Path:
    """``$XDG_RUNTIME_DIR/snakepool/registry``, else a per-user directory under /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(tempfile.gettempdir()) / f"snakepool-{os.getuid()}"
    return base / "registry"


@dataclass(frozen=True)
class ProcessRecord:
    """One process we started."""

    run_id: str
    role: str  # "template" or "interpreter"
    pid: int
    create_time: float
    owner_pid: int
    owner_create_time: float
    #: Its process group (None in records written before groups were recorded).
    pgid: int | None = None


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) <= _CREATE_TIME_TOLERANCE:
            return process
    except psutil.Error:
        pass
    return None


def _of_run(run_id: str) -> Callable[[str], bool]:
    return lambda marker: run_of(marker) == run_id


class ProcessRegistry:
    """Records in ``directory``; safe to share between processes and pools.

    Args:
        directory: Where records live (created if missing, mode 0700).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        me = psutil.Process()
        self._owner = (me.pid, me.create_time())

    def _path(self, run_id: str, pid: int) -> Path:
        return self.directory / f"{run_id}.{pid}.json"

    def record(self, *, run_id: str, role: str, pid: int) -> None:
        """Write a record for ``pid`` (silently skipped if it already exited)."""
        try:
            create_time = psutil.Process(pid).create_time()
            pgid = os.getpgid(pid)
        except (psutil.Error, ProcessLookupError):
            return
        record = ProcessRecord(run_id, role, pid, create_time, *self._owner, pgid=pgid)
        path = self._path(run_id, pid)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(path)

    def forget(self, run_id: str, pid: int) -> None:
        """Drop the record of ``pid`` (it exited or was stopped)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(run_id, pid).unlink()

    def forget_run(self, run_id: str) -> None:
        """Drop every record of ``run_id``."""
        for path in self.directory.glob(f"{run_id}.*.json"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def records(self) -> list[ProcessRecord]:
        """Every readable record."""
        found = []
        for path in self.directory.glob("*.json"):
            try:
                found.append(ProcessRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return found

    def sweep(self) -> list[int]:
        """Kill the leftovers of dead runs, with their process groups and whatever else
        carries a dead run's marker; return the pids killed (group members not counted)."""
        killed = []
        dead_runs: dict[str, float] = {}  # run id → its oldest record's create time
        for record in self.records():
            if _same_process(record.owner_pid, record.owner_create_time) is not None:
                continue  # a live pool owns it
            since = dead_runs.get(record.run_id, math.inf)
            dead_runs[record.run_id] = min(since, record.create_time)
            process = _same_process(record.pid, record.create_time)
            if process is not None and self._has_marker(process, record.run_id):
                log.warning(
                    "killing leftover %s pid %d of dead run %s",
                    record.role,
                    record.pid,
                    record.run_id,
                )
                self._kill_group(process, record)
                with contextlib.suppress(psutil.Error):
                    process.kill()
                    killed.append(record.pid)
            self.forget(record.run_id, record.pid)
        for run_id, since in dead_runs.items():
            killed += kill_marked(_of_run(run_id), since=since)
        return killed

    @staticmethod
    def _kill_group(leader: psutil.Process, record: ProcessRecord) -> None:
        """Kill the group ``leader`` leads, just verified (create time, marker) as ours.

        Only a group whose id is the leader's own pid, while the leader still holds that
        pid: a group id cannot be reused while its leader's pid is taken.
        """
        if record.pgid != record.pid:
            return
        try:
            if os.getpgid(leader.pid) != record.pid or not leader.is_running():
                return
            os.killpg(record.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return

    @staticmethod
    def _has_marker(process: psutil.Process, run_id: str) -> bool:
        try:
            cmdline = process.cmdline()
        except psutil.Error:
            return False
        return any(
            arg == "--run-id" and value == run_id for arg, value in itertools.pairwise(cmdline)
        )
