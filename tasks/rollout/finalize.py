"""The end of the migration: ``rollout finalize`` (V3 only) and ``rollout unfinalize``.

Finalizing is refused, with every reason at once, unless all of these hold:

1. the rollout is at 100 % to V3,
2. it is not paused (a paused rollout is one somebody is still looking at),
3. no lane is forced (the kill switch is an emergency, not an end state),
4. nothing is queued or in flight on V2-compat (its shared queue and the nodes'
   worker-direct queues), and
5. every session's programs are in the SessionStore: no live V2-compat interpreter
   holds a program that no session bound to it has in the store (what V3, being
   stateless, could never serve).

The flag conditions (1-3) are checked again inside the atomic flag update, so a
rollback racing the finalize wins; 4 and 5 are gathered just before by the caller
(:mod:`snakepool.tasks.worker.retirement`, which asks the nodes), as a
:class:`Readiness`.

Once finalized, :func:`~snakepool.tasks.rollout.routing.decide` sends everything to V3
(overrides, exclusions and a forced lane included), nothing is shadowed, the controller
holds, and every other flag change is refused until ``rollout unfinalize`` — the
V2-compat nodes can be stopped (``docs/runbook-retirement.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from snakepool.config.flags import FlagStore, RolloutFlags
from snakepool.errors import InvalidArguments

__all__ = ["Readiness", "blockers", "finalize", "unfinalize"]

#: Sessions named in a refusal (the rest are counted).
SHOWN_SESSIONS = 5


@dataclass(frozen=True)
class Readiness:
    """What finalizing needs to know beyond the flags (gathered from Redis and nodes).

    Attributes:
        queued: Messages waiting on V2-compat (its queue and worker-direct queues).
        in_flight: V2-compat messages delivered and not yet acknowledged.
        unstored: Session id → program ids held by its V2-compat interpreter and not in
            the store.
        silent_nodes: Live V2-compat nodes that did not report their programs in time.
    """

    queued: int = 0
    in_flight: int = 0
    unstored: dict[str, list[str]] = field(default_factory=dict)
    silent_nodes: list[str] = field(default_factory=list)


def blockers(flags: RolloutFlags, readiness: Readiness | None = None) -> list[str]:
    """Every reason the rollout cannot be finalized now (empty: it can).

    Args:
        flags: The current flags.
        readiness: The V2-compat backlog and program inventory (None: flags only).
    """
    reasons = []
    if flags.finalized:
        reasons.append("the rollout is already finalized")
        return reasons
    if flags.percent != 100:
        reasons.append(f"the rollout is at {flags.percent} %, not 100 %: `rollout set 100` first")
    if flags.paused:
        reasons.append("the rollout is paused: `rollout resume --reason …` first")
    if flags.forced_lane:
        reasons.append(f"every request is forced to {flags.forced_lane}: `rollout force off` first")
    if flags.excluded_commands:
        # Finalizing would send them to V3 anyway: the operator said they are not ready.
        reasons.append(
            "commands are still kept on V2-compat: "
            + ", ".join(sorted(flags.excluded_commands)[:SHOWN_SESSIONS])
            + " (`rollout include COMMAND --reason …` each first)"
        )
    if flags.v3_commands is not None:
        reasons.append(
            "only some commands may go to V3 (the allow-list): `rollout only --all "
            "--reason …` first"
        )
    if readiness is None:
        return reasons
    if readiness.queued or readiness.in_flight:
        reasons.append(
            f"the v2compat queue is not empty: {readiness.queued} queued, "
            f"{readiness.in_flight} in flight (let V2-compat drain)"
        )
    if readiness.unstored:
        shown = sorted(readiness.unstored)[:SHOWN_SESSIONS]
        listed = "; ".join(f"{sid} ({', '.join(readiness.unstored[sid])})" for sid in shown)
        more = len(readiness.unstored) - len(shown)
        reasons.append(
            f"{len(readiness.unstored)} session(s) have programs that are not in the store, "
            f"only in V2-compat interpreters: {listed}{f' and {more} more' if more else ''} "
            "(create them again so they are stored)"
        )
    if readiness.silent_nodes:
        reasons.append(
            "V2-compat node(s) did not report their programs: "
            + ", ".join(sorted(readiness.silent_nodes))
        )
    return reasons


def finalize(store: FlagStore, readiness: Readiness, *, who: str, why: str) -> RolloutFlags:
    """Make routing V3-only, if nothing blocks it (checked atomically with the write).

    Raises:
        InvalidArguments: refused; ``message`` and ``data["blockers"]`` say why.
    """

    def change(flags: RolloutFlags) -> RolloutFlags:
        reasons = blockers(flags, readiness)
        if reasons:
            raise InvalidArguments("cannot finalize: " + "; ".join(reasons), blockers=reasons)
        return replace(flags, finalized=True)

    return store.update(change, who=who, why=why)


def unfinalize(store: FlagStore, *, who: str, why: str) -> RolloutFlags:
    """Undo :func:`finalize`: routing follows the flags again (at 100 %, unpaused).

    Raises:
        InvalidArguments: the rollout is not finalized.
    """

    def change(flags: RolloutFlags) -> RolloutFlags:
        if not flags.finalized:
            raise InvalidArguments("the rollout is not finalized")
        return replace(flags, finalized=False)

    return store.update(change, who=who, why=why)
