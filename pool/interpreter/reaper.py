"""Whatever an interpreter starts dies with it: the process-tree rules of the template side.

Three kernel features, Linux first, and how we use them:

* **One process group per interpreter.** Right after the fork (and before the ``exec``
  in spawn mode) an interpreter calls :func:`become_group_leader`, so its pid is also
  the id of a new session and process group that everything it starts joins by
  default. The template kills that whole group (:func:`kill_group`) when the
  interpreter exits or is killed — *before* reaping it: an unreaped zombie keeps its
  pid, and so the group id, from being reused, so the kill can never hit a stranger.
* **The template is a child subreaper** (:func:`become_subreaper`,
  ``PR_SET_CHILD_SUBREAPER``). A descendant that left the group (``setsid()``, a
  double fork) is re-parented to the template, not to init, once its own parent is
  gone; the template finds such adopted processes (:func:`child_pids`) and kills them.
* **Parent-death signal** (:func:`die_with_parent`, ``PR_SET_PDEATHSIG``): an
  interpreter gets SIGKILL when the template dies, whatever killed the template.

Every kill here is of a process we are the parent of and have not reaped (or of the
group such a process leads), which is what makes it reuse-safe without pidfds.
Standard library only: this runs inside interpreters, possibly under another Python.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

__all__ = [
    "become_group_leader",
    "become_subreaper",
    "child_pids",
    "die_with_parent",
    "kill_group",
    "kill_tree",
    "parse_stat_ppid",
    "process_name",
]

# Loaded at import — in the template, before any fork — not in each new interpreter:
# importing ctypes after the fork was half of a replacement's start time.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
#: prctl(2) options (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: As a plain int: the enum member would be one more object a new interpreter reads.
_SIGKILL = int(signal.SIGKILL)


def die_with_parent() -> None:
    """Arm ``PR_SET_PDEATHSIG`` = SIGKILL (Linux; elsewhere a no-op: pipe EOF remains)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)


def become_group_leader() -> None:
    """Lead a new session and process group (no-op if this process already does).

    ``setsid()`` rather than ``setpgid(0, 0)``: it also drops any controlling terminal,
    so a terminal's job control can neither stop nor hang up an interpreter.
    """
    pid = os.getpid()
    if os.getpgid(0) == pid:
        return  # spawn mode: the fork already did it before exec
    try:
        os.setsid()
    except OSError:
        os.setpgid(0, 0)


def become_subreaper() -> bool:
    """Adopt orphaned descendants (``PR_SET_CHILD_SUBREAPER``); False where unsupported."""
    if _libc is None:
        return False
    return bool(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``, if it exists.

    Only call this while the group's leader is an unreaped child of ours (alive or a
    zombie): then the id cannot have been reused.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_tree(pid: int) -> None:
    """SIGKILL an unreaped child of ours and, if it leads one, its process group.

    The group check matters for a child killed before it ran ``setsid()``: its pid is
    then no group id at all, or (never) someone else's.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            kill_group(pid)


def parse_stat_ppid(stat: bytes) -> int:
    """The parent pid from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself contain spaces and
    ``)``, so the fields are read after its *last* ``)``.

    Raises:
        ValueError: not a stat line.
    """
    _, paren, rest = stat.rpartition(b")")
    fields = rest.split()
    if not paren or len(fields) < 2:
        raise ValueError("not a /proc/<pid>/stat line")
    return int(fields[1])


def process_name(pid: int) -> str | None:
    """The command name of a live process, None if it is gone or a zombie (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    name, _, rest = stat.partition(b"(")[2].rpartition(b")")
    return None if rest.split()[:1] == [b"Z"] else name.decode(errors="replace")


def child_pids() -> set[int]:
    """Pids of this process's children (any thread's), zombies included; Linux ``/proc``.

    Uses ``/proc/self/task/*/children`` when the kernel has it (CONFIG_PROC_CHILDREN),
    else reads the parent of every process (about 1.5 ms per 100 processes).
    """
    tasks = f"/proc/{os.getpid()}/task"
    found: set[int] = set()
    try:
        tids = os.listdir(tasks)
    except OSError:
        return found  # no /proc: nothing to adopt from either (no subreaper)
    if tids and os.path.exists(f"{tasks}/{tids[0]}/children"):
        for tid in tids:
            with contextlib.suppress(OSError), open(f"{tasks}/{tid}/children", "rb") as f:
                found.update(int(pid) for pid in f.read().split())
        return found
    me = os.getpid()
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    if parse_stat_ppid(f.read()) == me:
                        found.add(int(entry.name))
            except (OSError, ValueError):
                continue  # it exited while we looked
    return found
