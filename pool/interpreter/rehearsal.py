"""An interpreter's start, rehearsed once in a throwaway fork, so the template can pack
the code it runs.

Every interpreter runs the same code between its fork and its first request: the
after-fork hooks (``threading``, ``logging``, ``random``), :func:`prepare_child`, the
readiness handshake, the request loop and a reply. Each of those code objects and the
functions running them lies on a template page of its own among code never run again,
so every interpreter copies those pages (~40 code objects on ~75 pages, measured on
the DSPy template). The adapter's warm-up cannot run them: they only run in a child.

:func:`start_code` forks one throwaway interpreter with a profiler set across the fork.
It starts exactly as the pool's interpreters do (the template's own code, passed in),
without the adapter's ``setup`` hook, answers one ``ping`` and sees EOF. It then sends
back the identities of the code objects it ran, which are the template's own objects
at the same addresses (a fork shares them). :func:`pack_start` packs them with
:func:`~snakepool.pool.interpreter.code_packing.pack`, with the module-level functions
running it; not the methods, since moving one resets the type version of its class and
every subclass (``Enum``, ``Thread``, ``socket`` …), and with it what the adapter's
warm-up specialised on them. Any failure (a timeout, a crash) only means nothing is packed: it
is an optimisation of the pages interpreters copy. Whatever the rehearsal started is
killed with it (its process group), within the same time budget.

It is one more fork of the template: an ``os.register_at_fork`` hook the adapter's
import registered runs once more in it, as in every interpreter.

Measured (issue 10, bench (h), DSPy template + 8 interpreters): ~45 code objects
packed, ~0.6 MB less in all; the rehearsal takes 10-30 ms of the template's start.
"""

from __future__ import annotations

import array
import contextlib
import gc
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable
from types import CodeType, FrameType, FunctionType
from typing import Any

from snakepool.pool.interpreter import code_packing, prefork, reaper, wire

__all__ = ["REHEARSAL_SECONDS", "pack_start", "start_code"]

#: The longest a rehearsal may take before it is killed and nothing is packed.
REHEARSAL_SECONDS = 5.0
#: ``max_message_bytes`` of the rehearsal: a ping and its reply.
_LIMIT = 1 << 16
#: The count of ids ahead of them.
_COUNT = struct.Struct("=Q")

#: ``become(fds, max_message_bytes)``: turn this (forked) process into an interpreter
#: serving ``(req_r, resp_w, out_w, err_w)`` until EOF, returning its exit code.
Become = Callable[[list[int], int], int]


def start_code(become: Become, *, timeout: float = REHEARSAL_SECONDS) -> list[CodeType]:
    """The code objects a new interpreter runs from its fork to its first reply, as
    this process holds them; [] when the rehearsal fails, takes longer than ``timeout``
    (seconds, all told) or a profiler is already set.

    ``become`` runs in the throwaway child only. Whatever the child started in its
    process group (it leads one, as every interpreter does) is killed with it.
    """
    if sys.getprofile() is not None:
        return []
    deadline = time.monotonic() + timeout
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    ids_r, ids_w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    child_fds = [req_r, resp_w, null, os.dup(null)]
    try:
        os.write(req_w, wire.framed_request(1, "ping", {}))
        os.close(req_w)  # the child sees the ping, then EOF
        ran: set[int] = set()

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            if event == "call":
                ran.add(id(frame.f_code))

        sys.setprofile(profile)  # set across the fork: the after-fork hooks are recorded
        try:
            pid = os.fork()
        except OSError:
            sys.setprofile(None)
            raise
        if pid == 0:
            _child(become, child_fds, ids_r, ids_w, ran)
        sys.setprofile(None)
        os.close(ids_w)
        ids_w = -1
        try:
            payload = _read_ids(ids_r, deadline)
        finally:
            _end(pid, deadline)
    finally:
        for fd in (*child_fds, resp_r, ids_r, ids_w, null):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    if payload is None:
        return []
    held = _held(array.array("Q", payload))
    prefork.release_free_pages()  # _held's list of every object
    return held


def _child(become: Become, fds: list[int], ids_r: int, ids_w: int, ran: set[int]) -> None:
    code = 1
    try:
        os.close(ids_r)
        become(fds, _LIMIT)
        sys.setprofile(None)
        ids = array.array("Q", ran)
        data = _COUNT.pack(len(ids)) + ids.tobytes()  # counted: no need for EOF
        while data:
            data = data[os.write(ids_w, data) :]
        code = 0
    finally:
        os._exit(code)


def _read_ids(fd: int, deadline: float) -> bytes | None:
    """The ids the child sent (a count, then as many 8-byte ids), or None if they are
    not all there by ``deadline``. Not read to EOF: a process the child started may
    hold the pipe open."""
    data = b""
    want = _COUNT.size
    while len(data) < want:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None  # it died before sending them all
        data += chunk
        if want == _COUNT.size and len(data) >= want:
            want += 8 * _COUNT.unpack_from(data)[0]
    return data[_COUNT.size : want]


def _end(pid: int, deadline: float) -> None:
    """Let the rehearsal exit (until ``deadline``), kill what is left of its process
    group, then reap it: unreaped, its pid — the group's id — cannot be reused."""
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.002)
    reaper.kill_group(pid)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _held(ids: array.array[int]) -> list[CodeType]:
    """The code objects among ``ids`` that functions here hold (or nest), by identity."""
    wanted = set(ids)
    found: dict[int, CodeType] = {}
    # No set of what was seen: a code object held twice is looked at twice, which costs
    # less than keeping an int per code object alive (pymalloc keeps pools it used).
    stack = [f.__code__ for f in gc.get_objects() if type(f) is FunctionType]
    while stack:
        code = stack.pop()
        if id(code) in wanted:
            found[id(code)] = code
        stack.extend(c for c in code.co_consts if type(c) is CodeType)
    return list(found.values())


def pack_start(become: Become) -> int:
    """Rehearse an interpreter's start (:func:`start_code`) and pack what it ran
    (:func:`~snakepool.pool.interpreter.code_packing.pack`). Returns the number of
    functions repointed. Call it in the template, before ``gc.freeze()``."""
    return code_packing.pack(start_code(become), methods=False)
