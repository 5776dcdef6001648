"""Test-only adapter that misbehaves on request: crash, hang, exit, noise, huge results,
and ``kill_node`` (SIGKILL the worker node hosting the interpreter: a poison request).

Refuses to load unless ``SNAKEPOOL_ENABLE_CHAOS=1`` (the ``ENABLE_CHAOS`` setting), so
it can never be enabled by accident in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from snakepool.errors import InvalidArguments
from snakepool.pool.interpreter.core import get_stats, ping
from snakepool.pool.interpreter.marks import command
from snakepool.pool.interpreter.standard import calculate, echo, sleep

if os.environ.get("SNAKEPOOL_ENABLE_CHAOS") != "1":
    raise ImportError(
        "the chaos adapter is for tests only: set SNAKEPOOL_ENABLE_CHAOS=1 to enable it"
    )

__all__ = [
    "allocate", "calculate", "corrupt_protocol", "crash", "echo", "exit", "fail",
    "get_stats", "hang", "huge_result", "kill_node", "node_pid", "ping", "sleep",
    "spawn_child", "stdout_noise",
]  # fmt: skip

_hoard: list[bytearray] = []
# Children of spawn_child: kept so they are not reaped (nor warned about) behind our back.
_children: list[subprocess.Popen[bytes]] = []
#: How spawn_child may start its ``sleep``.
SPAWN_MODES = ("child", "session", "daemon")
#: What spawn_child does once the ``sleep`` runs.
SPAWN_THEN = ("return", "hang", "crash")


def _choice(args: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = args.get(name, choices[0])
    if value not in choices:
        raise InvalidArguments(f"{name!r} must be one of {', '.join(choices)}")
    return str(value)


def _int(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArguments(f"{name!r} must be an integer from {low} to {high}")
    return value


@command()
def crash(args: dict[str, Any]) -> None:
    """Die by a signal (default SIGKILL) without replying."""
    os.kill(os.getpid(), _int(args, "signal", signal.SIGKILL, 1, 64))
    time.sleep(10)


@command()
def exit(args: dict[str, Any]) -> None:
    """Exit at once with ``{"code": n}`` (default 1), skipping cleanup."""
    sys.stdout.flush()
    os._exit(_int(args, "code", 1, 0, 255))


@command()
def hang(args: dict[str, Any]) -> None:
    """Never return (until killed)."""
    while True:
        time.sleep(3600)


@command()
def fail(args: dict[str, Any]) -> None:
    """Raise ``ValueError(message)`` inside the interpreter."""
    raise ValueError(str(args.get("message", "chaos says no")))


@command(read_only=True)
def stdout_noise(args: dict[str, Any]) -> dict[str, int]:
    """Write ``lines`` lines to sys.stdout, fd 1 and stderr, then reply normally."""
    lines = _int(args, "lines", 100, 0, 1_000_000)
    for i in range(lines):
        print(f"noise {i} \x00\xff not a frame")
    sys.stdout.flush()
    os.write(1, b"\x00\x00\x00\x10raw bytes on fd 1\n")
    print("and some on stderr", file=sys.stderr)
    return {"lines": lines}


@command(read_only=True)
def huge_result(args: dict[str, Any]) -> str:
    """Return a string of ``{"bytes": n}`` bytes."""
    return "x" * _int(args, "bytes", 1 << 20, 0, 1 << 30)


@command()
def allocate(args: dict[str, Any]) -> dict[str, int]:
    """Allocate and keep ``{"mb": n}`` MiB (touched, so it counts in RSS)."""
    mb = _int(args, "mb", 10, 0, 4096)
    block = bytearray(mb * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    _hoard.append(block)
    return {"held_mb": sum(len(b) for b in _hoard) // (1024 * 1024)}


@command()
def corrupt_protocol(args: dict[str, Any]) -> None:
    """Write garbage straight into the reply pipe, as a buggy C extension might."""
    from snakepool.pool.interpreter.server import current_reply_fd

    os.write(current_reply_fd(), b"\xff\xff\xff\xffgarbage")
    time.sleep(10)


def node_pid(pid: int | None = None) -> int:
    """The pid of the worker node hosting interpreter ``pid`` (default: this one).

    An interpreter is a child of its pool's template (forked, or forked then exec'd in
    spawn mode), and the template a child of the pool's process: the node.

    Raises:
        InvalidArguments: the chain is not there (the template was orphaned, or this is
            not Linux, whose ``/proc`` gives a process's parent).
    """
    template = os.getppid() if pid is None else _parent(pid)
    node = _parent(template)
    if node <= 1:
        raise InvalidArguments(f"the template ({template}) has no node above it")
    return node


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise InvalidArguments(f"cannot find the parent of process {pid}: {exc}") from None
    # The command name (2nd field) is in parentheses and may hold spaces or ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


@command()
def kill_node(args: dict[str, Any]) -> dict[str, Any]:
    """SIGKILL the worker node hosting this interpreter (the template's parent): a
    poison request. Its template and interpreters die with it (parent-death checks).

    ``{"spare_if": path}``: when that file exists, kill nothing and return
    ``{"spared": true, "node": pid}`` instead (so a test can let a retry succeed).
    """
    spare_if = args.get("spare_if")
    if spare_if is not None and not isinstance(spare_if, str):
        raise InvalidArguments("'spare_if' must be a path")
    node = node_pid()
    if spare_if is not None and Path(spare_if).exists():
        return {"spared": True, "node": node}
    os.kill(node, signal.SIGKILL)
    hang({})  # killed with the node: never replies
    return {"spared": False, "node": node}  # unreachable


@command()
def spawn_child(args: dict[str, Any]) -> dict[str, int]:
    """Start ``sleep {"seconds"}`` (default 60) and report its pid; then ``"then"``.

    ``"mode"``: ``child`` (a plain child, in the interpreter's process group),
    ``session`` (a child that ``setsid``s out of the group) or ``daemon`` (double fork +
    ``setsid``: orphaned at once). ``"then"``: ``return`` ``{"pid": n}``, ``hang`` or
    ``crash`` (SIGKILL itself); the last two never reply, so ``"pid_file"`` names a file
    that gets the pid first.
    """
    seconds = _int(args, "seconds", 60, 1, 3600)
    mode = _choice(args, "mode", SPAWN_MODES)
    then = _choice(args, "then", SPAWN_THEN)
    pid_file = args.get("pid_file")
    if pid_file is not None and not isinstance(pid_file, str):
        raise InvalidArguments("'pid_file' must be a path")
    argv = [shutil.which("sleep") or "/bin/sleep", str(seconds)]
    pid = _daemon(argv) if mode == "daemon" else _child(argv, session=mode == "session")
    if pid_file is not None:
        tmp = Path(pid_file + ".tmp")
        tmp.write_text(str(pid))
        tmp.replace(pid_file)  # whole or absent: the test may be polling for it
    if then == "hang":
        hang({})
    elif then == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": pid}


def _child(argv: list[str], *, session: bool) -> int:
    process = subprocess.Popen(argv, start_new_session=session)
    _children.append(process)
    return process.pid


def _daemon(argv: list[str]) -> int:
    """Double fork: the middle process leaves the group and exits at once."""
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            os.close(read_fd)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.execv(argv[0], argv)
            os.write(write_fd, str(grandchild).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as reader:
        data = reader.read()
    os.waitpid(middle, 0)
    if not data:
        raise RuntimeError("the daemon did not start")
    return int(data)
