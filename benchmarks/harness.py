"""Everything a benchmark run starts, owned in one place so that nothing outlives it.

:class:`Harness` makes pools with a private registry directory, starts bare child
processes (cold interpreters, the raw echo child), adopts the services a benchmark
starts itself (redis-server, Celery workers), remembers every pid it ever saw with its
create time, and on :meth:`Harness.close` stops and kills all of it — also after an
exception or Ctrl-C. :meth:`Harness.leftovers` then checks that none of those processes
is still alive.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from snakepool.pool import Pool, PoolObserver
from snakepool.pool.interpreter import wire

__all__ = ["Harness", "TrackingObserver", "child_env", "read_frame"]

#: Startup timeout for every pool and cold interpreter (the heavy import is ~1 s).
STARTUP_TIMEOUT = 60.0
#: ``--max-message-bytes`` of cold interpreters (the pool's default).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def child_env() -> dict[str, str]:
    """The environment a pool gives its template: ours, with ``PYTHONPATH`` = ``sys.path``.

    Cold interpreters get the same, so both sides of a comparison search the same paths.
    """
    env = dict(os.environ)
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def read_frame(fd: int, buffer: bytearray, deadline: float | None = None) -> bytes:
    """Read one length-prefixed frame's payload from ``fd`` (blocking, or until ``deadline``).

    ``buffer`` keeps bytes read past the frame for the next call.

    Raises:
        EOFError: the writer closed the pipe first.
        TimeoutError: ``deadline`` (``time.monotonic``) passed.
    """
    header = wire.HEADER.size
    while True:
        if len(buffer) >= header:
            (size,) = wire.HEADER.unpack_from(buffer)
            end = header + size
            if len(buffer) >= end:
                payload = bytes(buffer[header:end])
                del buffer[:end]
                return payload
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("no frame before the deadline")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError("pipe closed")
        buffer += chunk


class TrackingObserver(PoolObserver):
    """Tells the harness about every interpreter that becomes ready (subclass it)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def on_interpreter_ready(self, pid: int, seq: int, startup_seconds: float) -> None:
        """Remember the pid for the leftover check."""
        self.harness.track(pid)


class Harness:
    """Owns the pools and child processes of one benchmark run."""

    def __init__(self) -> None:
        self.registry_dir = tempfile.mkdtemp(prefix="snakepool-bench-")
        self.env = child_env()
        self._pools: list[Pool] = []
        self._children: list[subprocess.Popen[bytes]] = []
        self._seen: dict[int, float] = {}  # pid → create time

    # ------------------------------------------------------------------ pools

    def pool(self, observer: TrackingObserver | None = None, **settings: Any) -> Pool:
        """A new (not started) pool with the private registry; stopped by :meth:`close`."""
        settings.setdefault("registry_dir", self.registry_dir)
        settings.setdefault("startup_timeout", STARTUP_TIMEOUT)
        pool = Pool(observer=observer or TrackingObserver(self), **settings)
        self._pools.append(pool)
        return pool

    def stop_pool(self, pool: Pool) -> None:
        """Stop one pool now (idempotent), after noting its processes' pids."""
        with contextlib.suppress(Exception):
            self.track_pool(pool)
        pool.stop(grace=2.0)
        if pool in self._pools:
            self._pools.remove(pool)

    def template_pid(self, pool: Pool) -> int | None:
        """The pid of ``pool``'s template: our child whose command line has its run id."""
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if pool.run_id in child.cmdline():
                    return int(child.pid)
        return None

    def track_pool(self, pool: Pool) -> None:
        """Remember the template's and the interpreters' pids."""
        template = self.template_pid(pool)
        for pid in [*pool.interpreter_pids(), *([template] if template else [])]:
            self.track(pid)

    # ------------------------------------------------------------- bare children

    def popen(
        self, argv: list[str], pass_fds: tuple[int, ...] = (), *, capture: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start a child (stdout discarded unless ``capture``, stderr shown); killed by
        :meth:`close`."""
        process = subprocess.Popen(
            argv,
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
            env=self.env,
        )
        self._children.append(process)
        self.track(process.pid)
        return process

    def timed_run(self, argv: list[str], timeout: float = STARTUP_TIMEOUT) -> tuple[float, bytes]:
        """Run a child to its exit; returns (seconds from launch to exit, its stdout).

        Raises:
            RuntimeError: it exited with a non-zero status.
        """
        started = time.perf_counter()
        process = self.popen(argv, capture=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        finally:
            status = self.reap(process)
        elapsed = time.perf_counter() - started
        if status != 0:
            raise RuntimeError(f"{argv[:3]} exited with status {status}")
        return elapsed, output

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        """Own a child a benchmark started itself: tracked, and killed by :meth:`close`
        if the benchmark has not stopped it by then."""
        self._children.append(process)
        self.track(process.pid)

    def reap(self, process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
        """Wait for a child to exit (killing it after ``timeout``); returns its status."""
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        if process in self._children:
            self._children.remove(process)
        return status

    def cold_spawn(self, adapter: str) -> float:
        """Seconds from launching one fresh ``python -m snakepool.pool.interpreter.server`` with
        ``adapter`` to reading its Ready frame. The child is then told to exit (EOF)."""
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        argv = [
            sys.executable, "-m", "snakepool.pool.interpreter.server",
            "--req-fd", str(req_r), "--resp-fd", str(resp_w),
            "--adapter", adapter, "--max-message-bytes", str(MAX_MESSAGE_BYTES),
        ]  # fmt: skip
        process = None
        try:
            started = time.perf_counter()
            process = self.popen(argv, pass_fds=(req_r, resp_w))
            os.close(req_r)
            os.close(resp_w)
            req_r = resp_w = -1
            payload = read_frame(resp_r, bytearray(), time.monotonic() + STARTUP_TIMEOUT)
            elapsed = time.perf_counter() - started
            if not isinstance(wire.decode(payload), wire.Ready):
                raise RuntimeError("cold interpreter sent something other than Ready")
            return elapsed
        finally:
            for fd in (req_r, resp_w, req_w, resp_r):
                if fd >= 0:
                    os.close(fd)
            if process is not None:  # EOF on its request pipe: it exits 0
                self.reap(process)

    # --------------------------------------------------------------- bookkeeping

    def track(self, pid: int) -> None:
        """Remember a pid (with its create time) for the leftover check."""
        with contextlib.suppress(psutil.Error):
            self._seen.setdefault(pid, psutil.Process(pid).create_time())

    def track_tree(self, pid: int) -> None:
        """Remember a process and all its descendants (a worker node's template and
        interpreters are its grandchildren: the leftover check must know them too)."""
        self.track(pid)
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children(recursive=True):
                self.track(child.pid)

    def close(self) -> None:
        """Stop every pool, kill every child, remove the registry directory."""
        while self._pools:
            pool = self._pools.pop()
            try:
                self.track_pool(pool)
            finally:
                pool.stop(grace=2.0)
        while self._children:
            process = self._children.pop()
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5.0)
        shutil.rmtree(self.registry_dir, ignore_errors=True)

    def leftovers(self, wait: float = 3.0) -> list[int]:
        """Pids we started that are still alive, after up to ``wait`` seconds for them to go.

        Covers interpreters too: they are the template's children, so once it has gone
        they would be orphans that ``psutil.Process().children()`` no longer shows.
        """
        deadline = time.monotonic() + wait
        while True:
            alive = [pid for pid, created in self._seen.items() if _alive(pid, created)]
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.05)

    @property
    def tracked(self) -> int:
        """How many distinct processes were started and checked."""
        return len(self._seen)


def _alive(pid: int, created: float) -> bool:
    try:
        process = psutil.Process(pid)
        same = abs(process.create_time() - created) < 0.05
        return bool(same and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
