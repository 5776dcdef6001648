"""Commands that leave processes behind in every way a user's code can (issue 8.7).

``start {"how", "then", "pid_file"}`` starts one ``sleep``-like process the way ``how``
names, writes the pids of everything it started to ``pid_file`` (one per line), then
``return``s ``{"pids": [...]}``, ``hang``s or ``exit``s (``os._exit(1)``, no reply):

* ``popen``: ``subprocess.Popen(["sleep", "60"])``, a plain child.
* ``session``: the same with ``start_new_session=True`` (``setsid``: out of the group).
* ``daemon``: a double fork and ``setsid``: orphaned at once.
* ``fork``: ``os.fork()`` without ``exec``: a copy of the interpreter that sleeps.
* ``ignore_term``: a child that ignores SIGTERM (and SIGHUP, SIGINT).
* ``new_group``: a grandchild that moves to its own process group (``setpgid``) under
  a child that stays.
* ``bare_env``: a plain child started with an empty environment.
* ``bare_env_session``: ``setsid`` and an empty environment.
* ``bare_env_daemon``: double fork, ``setsid``, empty environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from snakepool.pool.interpreter import command

HOWS = (
    "popen", "session", "daemon", "fork", "ignore_term", "new_group",
    "bare_env", "bare_env_session", "bare_env_daemon",
)  # fmt: skip
_kept: list[subprocess.Popen[bytes]] = []
SLEEP = shutil.which("sleep") or "/bin/sleep"


def _popen(argv: list[str], **kwargs: Any) -> int:
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **kwargs)
    _kept.append(process)
    return process.pid


def _double_fork(argv: list[str], env: dict[str, str] | None) -> int:
    read, write = os.pipe()
    first = os.fork()
    if first == 0:
        os.setsid()
        second = os.fork()
        if second == 0:
            os.close(read)
            os.write(write, str(os.getpid()).encode())
            os.close(write)
            if env is None:
                os.execv(argv[0], argv)
            os.execve(argv[0], argv, env)
        os._exit(0)
    os.close(write)
    data = os.read(read, 64)
    os.close(read)
    os.waitpid(first, 0)
    return int(data)


def _new_group() -> list[int]:
    """A child (stays in the group) whose grandchild calls setpgid(0, 0)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        grandchild = os.fork()
        if grandchild == 0:
            os.setpgid(0, 0)
            os.execv(SLEEP, [SLEEP, "60"])
        os.write(write, str(grandchild).encode())
        os.close(write)
        time.sleep(3600)
        os._exit(0)
    os.close(write)
    data = os.read(read, 64)
    os.close(read)
    return [child, int(data)]


def _fork() -> int:
    child = os.fork()
    if child == 0:
        try:
            time.sleep(3600)
        finally:
            os._exit(0)
    return child


_IGNORE_TERM = (
    "import signal, time\n"
    "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
    "    signal.signal(s, signal.SIG_IGN)\n"
    "time.sleep(3600)\n"
)


def _start(how: str) -> list[int]:
    argv = [SLEEP, "60"]
    if how == "popen":
        return [_popen(argv)]
    if how == "session":
        return [_popen(argv, start_new_session=True)]
    if how == "daemon":
        return [_double_fork(argv, None)]
    if how == "fork":
        return [_fork()]
    if how == "ignore_term":
        return [_popen([sys.executable, "-c", _IGNORE_TERM])]
    if how == "new_group":
        return _new_group()
    if how == "bare_env":
        return [_popen(argv, env={})]
    if how == "bare_env_session":
        return [_popen(argv, env={}, start_new_session=True)]
    if how == "bare_env_daemon":
        return [_double_fork(argv, {})]
    raise ValueError(f"unknown how {how!r}")


@command()
def start(args: dict[str, Any]) -> dict[str, list[int]]:
    """Start processes as ``how`` says, note their pids, then ``then``."""
    pids = _start(str(args.get("how", "popen")))
    pid_file = args.get("pid_file")
    if pid_file:
        tmp = f"{pid_file}.tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(map(str, pids)))
        os.replace(tmp, pid_file)
    then = args.get("then", "return")
    if then == "hang":
        while True:
            time.sleep(3600)
    if then == "exit":
        os._exit(1)
    if then == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pids": pids}
