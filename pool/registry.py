"""The process registry: every template and interpreter we start, on disk, so that
the leftovers of a run that died (a pool process lost to SIGKILL or OOM, say) can be
found and killed at the next start.

A record is one small JSON file: run id, role, pid, the process's create time, and the
owner (the pool process's pid and create time). :meth:`ProcessRegistry.sweep` kills a
recorded process only if all of these hold: its owner is dead (or is a different process
now), the pid is alive with the same create time (so a reused pid is never hit), and its
command line carries the run id marker (``--run-id <id>``). Records of live owners —
another pool, in this or another process — are left alone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

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


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) <= _CREATE_TIME_TOLERANCE:
            return process
    except psutil.Error:
        pass
    return None


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
        except psutil.Error:
            return
        record = ProcessRecord(run_id, role, pid, create_time, *self._owner)
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
        """Kill the leftovers of dead runs; return the pids killed."""
        killed = []
        for record in self.records():
            if _same_process(record.owner_pid, record.owner_create_time) is not None:
                continue  # a live pool owns it
            process = _same_process(record.pid, record.create_time)
            if process is not None and self._has_marker(process, record.run_id):
                log.warning(
                    "killing leftover %s pid %d of dead run %s",
                    record.role,
                    record.pid,
                    record.run_id,
                )
                with contextlib.suppress(psutil.Error):
                    process.kill()
                    killed.append(record.pid)
            self.forget(record.run_id, record.pid)
        return killed

    @staticmethod
    def _has_marker(process: psutil.Process, run_id: str) -> bool:
        try:
            cmdline = process.cmdline()
        except psutil.Error:
            return False
        return any(
            arg == "--run-id" and value == run_id for arg, value in itertools.pairwise(cmdline)
        )
