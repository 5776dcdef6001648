"""Finding what a dead template's interpreters left behind, by the marker in its environment.

While a template lives it kills whatever its interpreters start (see
:mod:`snakepool.pool.interpreter.reaper`). When the template itself is killed (OOM
killer, ``kill -9``), its interpreters die by their parent-death signal, but what *they*
started is re-parented to init. Those processes are found here by the one thing they
all inherit: the environment variable :data:`MARKER_ENV`, set to
``"<run id>/<template token>"`` for the template and so for every interpreter and every
process they start without replacing their environment.

A marker is random per template, so finding it cannot hit a process that is not ours
(pid reuse cannot forge an environment); a creation time no older than the run is
checked as well.

A process started with an environment of its own (``subprocess.Popen(..., env={})``)
carries no marker. If it stayed in its interpreter's session (it did not ``setsid``),
it is found by that: every interpreter leads its own session, so its pid is the session
id of everything it started (:func:`kill_sessions`). What both cleared its environment
and left the session is beyond reach once the template is dead (while it lives, the
template adopts and kills it as its subreaper).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping

import psutil

__all__ = ["MARKER_ENV", "kill_marked", "kill_sessions", "new_marker", "run_of"]

log = logging.getLogger("snakepool.pool.orphans")

#: The environment variable every process of a template carries.
MARKER_ENV = "SNAKEPOOL_RUN_MARKER"
#: Kill rounds: a leftover that forks while being killed leaves a child to the next one.
_KILL_ROUNDS = 3
#: How long a kill round waits for its victims to die before looking again.
_ROUND_WAIT_SECONDS = 0.2
#: Create times are floats rounded by the kernel's clock tick; allow for that.
_CREATE_TIME_TOLERANCE = 0.05


def new_marker(run_id: str) -> str:
    """A fresh marker for one template of run ``run_id``."""
    return f"{run_id}/{secrets.token_hex(8)}"


def run_of(marker: str) -> str:
    """The run id a marker belongs to (everything before the first ``/``)."""
    return marker.partition("/")[0]


def _marked(match: Callable[[str], bool], since: float) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["create_time"]):
        try:
            if process.info["create_time"] < since - _CREATE_TIME_TOLERANCE:
                continue
            marker = process.environ().get(MARKER_ENV)
            if marker is not None and match(marker) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue  # gone, or another user's: not ours either way
    return found


def _in_sessions(leaders: Mapping[int, float]) -> list[psutil.Process]:
    """Live processes in the session of one of ``leaders`` (pid → psutil create time),
    created no earlier than that leader."""
    # A leader's pid alive as another process means its session is gone: a pid stays
    # taken while any process of the session it names exists, so none of ours is left.
    gone = {pid for pid, created in leaders.items() if _other_process(pid, created)}
    found = []
    for process in psutil.process_iter(["create_time"]):
        try:
            sid = os.getsid(process.pid)
            if sid not in leaders or sid in gone:
                continue
            if process.info["create_time"] < leaders[sid] - _CREATE_TIME_TOLERANCE:
                continue
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (OSError, psutil.Error):
            continue  # gone meanwhile
    return found


def _other_process(pid: int, created: float) -> bool:
    try:
        return bool(abs(psutil.Process(pid).create_time() - created) > _CREATE_TIME_TOLERANCE)
    except psutil.Error:
        return False


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_dead(processes: list[psutil.Process], timeout: float) -> None:
    """Poll until none runs (a zombie counts as dead). Not ``psutil.wait_procs``: that
    reaps our own children, stealing exit statuses their ``Popen`` objects wait for."""
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)


def kill_marked(match: Callable[[str], bool], *, since: float) -> list[int]:
    """SIGKILL every process whose marker satisfies ``match``, created at ``since`` or later.

    Args:
        match: Decides on the value of :data:`MARKER_ENV` (e.g. equal to one template's
            marker, or :func:`run_of` it equal to a dead run's id).
        since: A psutil create time (epoch seconds as psutil computes them: compare only
            with other psutil create times); older processes are never ours.

    Returns:
        The pids killed. The calling process is never among them.
    """
    killed = _kill_found(lambda: _marked(match, since))
    if killed:
        log.warning("killed %d process(es) left behind by a dead template: %s", len(killed), killed)
    return killed


def kill_sessions(leaders: Mapping[int, float]) -> list[int]:
    """SIGKILL every process left in the session of a dead interpreter.

    Call it right after the interpreters died with their template (the pool notices
    within a second): an interpreter's pid stays its session's id, and taken, while
    anything it started is left in that session, so no other process can hold it then.

    Args:
        leaders: The interpreters, pid → psutil create time; only processes created
            after their leader are considered.

    Returns:
        The pids killed. The calling process is never among them.
    """
    killed = _kill_found(lambda: _in_sessions(leaders))
    if killed:
        log.warning("killed %d process(es) left in interpreters' sessions: %s", len(killed), killed)
    return killed


def _kill_found(find: Callable[[], list[psutil.Process]]) -> list[int]:
    killed: list[int] = []
    me = psutil.Process().pid
    for _ in range(_KILL_ROUNDS):
        victims = [p for p in find() if p.pid != me and p.pid not in killed]
        if not victims:
            break
        for process in victims:
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed.append(process.pid)
        _wait_dead(victims, _ROUND_WAIT_SECONDS)
    return killed
