"""Runtime rollout flags, kept in Redis with a version and an audit trail.

The flags decide where traffic goes (see :func:`snakepool.tasks.rollout.routing.decide`):
the percentage sent to V3, a forced lane (kill switch), the commands allowed on V3, the
commands kept on V2-compat (exclusions), per-session overrides, shadowing, and whether
the migration is finalized (V3 only: then the only change accepted is un-finalizing).
They change at run time with no restart: every change bumps the version, and readers
(:class:`FlagCache`) poll that version at most ``max_age`` seconds apart, so a change is
seen everywhere within a second. Every change is appended to an audit stream: who, why,
old → new.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis

from snakepool.config.audit import as_text, audit_entry, bounded_details, cut, flags_summary
from snakepool.config.fence import Fence
from snakepool.config.flag_fields import parse_stored_flags, unreadable_flags
from snakepool.config.keys import DEFAULT_PREFIX, LANES, Keys
from snakepool.config.limits import (
    AUDIT_MAXLEN,
    MAX_OVERRIDES,
)
from snakepool.config.rollout_flags import DEFAULT_SCHEDULE, RolloutFlags, next_step, step_below
from snakepool.errors import ConfigError, InvalidArguments

__all__ = [
    "AUDIT_MAXLEN",
    "DEFAULT_SCHEDULE",
    "LANES",
    "MAX_OVERRIDES",
    "FlagCache",
    "FlagStore",
    "RolloutFlags",
    "next_step",
]

log = logging.getLogger("snakepool.flags")


class FlagStore:
    """Reads and changes the flags in Redis (atomically, with an audit entry each).

    Args:
        client: redis-py client.
        prefix: Key prefix.
        audit_maxlen: Audit entries kept (the oldest are trimmed, exactly).
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, audit_maxlen: int = AUDIT_MAXLEN
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.audit_maxlen = audit_maxlen

    def read(self) -> RolloutFlags:
        """The current flags (defaults: 0 % to V3, version 0, when never set).

        Raises:
            ConfigError: the stored flags cannot be read (not JSON, a field of the wrong
                type or out of range, a key of another type), naming the key.
        """
        return self._decode(_get(self.client, self.keys.rollout))

    def version(self) -> int:
        """The current version (one cheap GET).

        Raises:
            ConfigError: the version key holds something else than a whole number.
        """
        raw = _get(self.client, self.keys.rollout_version)
        try:
            return int(raw or 0)
        except ValueError:
            raise unreadable_flags(self.keys.rollout_version, "not a whole number") from None

    def _decode(self, raw: bytes | str | None) -> RolloutFlags:
        if not raw:
            return RolloutFlags()
        try:
            return RolloutFlags.from_dict(parse_stored_flags(raw)).validate()
        except ValueError as exc:
            why = str(exc)
        except InvalidArguments as exc:
            why = exc.message
        raise unreadable_flags(self.keys.rollout, why)

    def update(
        self,
        change: Callable[[RolloutFlags], RolloutFlags],
        *,
        who: str,
        why: str,
        details: dict[str, Any] | None = None,
        fence: Fence | None = None,
    ) -> RolloutFlags:
        """Apply ``change`` to the current flags atomically; audit it; return the new flags.

        ``details`` (e.g. the metric snapshot behind a controller decision) is kept with
        the audit entry. Every entry is bounded: ``who`` and ``why`` are cut to
        ``MAX_AUDIT_TEXT_CHARS``, ``details`` over ``MAX_AUDIT_DETAILS_BYTES`` is replaced
        by its size (never refused: a rollback must not fail for a long reason).

        While the rollout is finalized, the only change accepted is un-finalizing it:
        routing is V3-only and its V2-compat nodes may be gone, so a percentage, a
        rollback or a forced lane would silently mean nothing (``rollout unfinalize``
        first).

        Flags that cannot be read (see :meth:`read`) are replaced: the change applies to
        the defaults (0 % to V3) at the stored version, and the audit entry's details say
        what was unreadable — so a rollback always works.

        With a ``fence`` (the rollout controller's lease and token), the change applies
        only if the fence's keys still hold its values, checked in the same ``WATCH``ed
        transaction as the write: a writer whose right ended — however long it paused —
        writes nothing. Without one, nothing changes for other writers.

        Raises:
            InvalidArguments: ``why`` is not non-blank text, the changed flags are
                invalid, or the rollout is finalized
                and the change does not un-finalize it (nothing is written).
            StaleFence: the ``fence`` no longer holds (nothing is written).
        """
        if not isinstance(why, str) or not why.strip():  # the audit trail says why
            raise InvalidArguments(
                f"say why: a reason (non-blank text) is kept in the audit trail, not {why!r:.40}"
            )
        who, why = cut(who), cut(why)
        while True:
            with self.client.pipeline() as pipe:
                try:
                    watched = [self.keys.rollout, self.keys.audit, *(fence.keys if fence else [])]
                    pipe.watch(*watched)  # type: ignore[no-untyped-call]
                    if fence is not None:
                        fence.check(pipe)  # raises StaleFence: nothing written
                    _check_audit_trail(pipe, self.keys.audit)  # before anything is written
                    noted = details
                    try:
                        old = self._decode(_get(pipe, self.keys.rollout))
                    except ConfigError as exc:
                        log.warning("%s; replacing them", exc.message)
                        old = RolloutFlags(version=_stored_version(pipe, self.keys.rollout_version))
                        noted = {**(details or {}), "replaced_unreadable_flags": exc.data["reason"]}
                    details_json = bounded_details(noted)
                    changed = change(old)
                    if old.finalized and changed.finalized:
                        raise _finalized_refusal()
                    new = replace(
                        changed,
                        version=old.version + 1,
                        updated_at=time.time(),
                        updated_by=who,
                        reason=why,
                    ).validate()
                    pipe.multi()
                    pipe.set(self.keys.rollout, json.dumps(new.to_dict()))
                    pipe.set(self.keys.rollout_version, new.version)
                    pipe.xadd(
                        self.keys.audit,
                        {
                            "version": new.version,
                            "who": who,
                            "why": why,
                            "at": new.updated_at,
                            "old": json.dumps(flags_summary(old)),
                            "new": json.dumps(flags_summary(new)),
                            "details": details_json,
                        },
                        maxlen=self.audit_maxlen,
                        # Exact: flag changes are rare, and the bound is then exact too.
                        approximate=False,
                    )
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # someone else changed it first: apply ours on top of theirs

    def note(self, *, who: str, why: str, details: dict[str, Any] | None = None) -> None:
        """Append an event that changes no flag (a lane lost or back) to the audit trail.

        The entry has the shape of a change (``version``, ``old``, ``new``) with the
        current flags on both sides, so every reader of :meth:`history` takes it as is;
        ``details`` says what happened. Bounded like :meth:`update`'s entries.
        """
        current = self.read()
        summary = json.dumps(flags_summary(current))
        self.client.xadd(
            self.keys.audit,
            {
                "version": current.version,
                "who": cut(who),
                "why": cut(why),
                "at": time.time(),
                "old": summary,
                "new": summary,
                "details": bounded_details(details),
            },
            maxlen=self.audit_maxlen,
            approximate=False,
        )

    def set_percent(self, percent: int, *, who: str, why: str) -> RolloutFlags:
        """Send ``percent`` % of keys to V3 (remembering the previous value for rollback)."""
        return self.update(
            lambda f: replace(f, percent=percent, previous_percent=f.percent), who=who, why=why
        )

    def rollback(
        self,
        *,
        who: str,
        why: str,
        to_previous: bool = False,
        details: dict[str, Any] | None = None,
    ) -> RolloutFlags:
        """Send everything back to V2-compat (or to the previous step) and pause.

        The audit entry's details say ``"action": "rollback"`` (what ``snakepool report``
        lists rollbacks by).
        """
        return self.update(
            lambda f: replace(
                f,
                percent=step_below(f) if to_previous else 0,
                previous_percent=f.percent,
                paused=True,
            ),
            who=who,
            why=why,
            details={**(details or {}), "action": "rollback"},
        )

    def step(self, *, who: str, why: str, details: dict[str, Any] | None = None) -> RolloutFlags:
        """Promote to the next step of the schedule (no-op at 100 %)."""
        return self.update(
            lambda f: replace(f, percent=next_step(f), previous_percent=f.percent),
            who=who,
            why=why,
            details=details,
        )

    def set_paused(self, paused: bool, *, who: str, why: str) -> RolloutFlags:
        """Pause or resume automatic promotion (rollbacks still happen)."""
        return self.update(lambda f: replace(f, paused=paused), who=who, why=why)

    def history(self, count: int = 50) -> list[dict[str, Any]]:
        """The newest audit entries, newest first.

        An entry that cannot be read (written by something else than :meth:`update`) is
        left out, with a warning naming it: the rest of the trail stays readable.
        """
        entries = self.client.xrevrange(self.keys.audit, count=count) or []
        history = []
        for entry_id, fields in entries:
            try:
                history.append(audit_entry(entry_id, fields))
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                log.warning("audit entry %s cannot be read (%s: %s): left out",
                            as_text(entry_id), type(exc).__name__, exc)  # fmt: skip
        return history


class FlagCache:
    """The flags as a hot path reads them: at most one GET per ``max_age`` seconds.

    Safe for concurrent callers (a router node serves several requests at once): no
    caller ever gets flags that were not read from the store. Until the first read has
    succeeded every caller waits for it (the defaults — 0 %, no kill switch, no
    overrides — would route as if nothing were set); after that one caller refreshes
    while the others go on with the flags it is replacing.
    Flags that cannot be read (:meth:`FlagStore.read` raises ``ConfigError``) never
    replace good ones: the cache keeps serving the last flags it read, logging the
    problem once. Only a cache that has never read any raises.

    Args:
        store: Where the flags live.
        max_age: Seconds between version checks (a change is seen within this).
    """

    def __init__(self, store: FlagStore, *, max_age: float = 0.5) -> None:
        self.store = store
        self.max_age = max_age
        self._flags = RolloutFlags()
        self._loaded = False
        self._checked = float("-inf")
        self._refreshing = threading.Lock()
        self._problem: ConfigError | None = None

    def get(self) -> RolloutFlags:
        """The current flags, as of at most ``max_age`` seconds ago (plus one read).

        Raises:
            redis.RedisError: the flags have never been read and Redis did not answer.
            ConfigError: the stored flags cannot be read and none were read before.
        """
        if self._loaded and time.monotonic() - self._checked < self.max_age:
            return self._flags
        if not self._refreshing.acquire(blocking=not self._loaded):
            return self._flags  # another caller is refreshing them
        try:
            now = time.monotonic()
            if not self._loaded or now - self._checked >= self.max_age:
                # Once loaded, a refresh that fails leaves the old flags for max_age.
                self._checked = now
                try:
                    if not self._loaded or self.store.version() != self._flags.version:
                        self._flags = self.store.read()
                except ConfigError as exc:
                    if self._problem is None or self._problem.message != exc.message:
                        log.warning(
                            "%s (serving flags version %d)", exc.message, self._flags.version
                        )
                    self._problem = exc
                    if not self._loaded:
                        raise
                else:
                    self._problem = None
                self._loaded = True
        finally:
            self._refreshing.release()
        return self._flags

    def version_in_use(self) -> int:
        """The version of the flags :meth:`get` serves (0 before any could be read);
        never raises (a heartbeat reports it)."""
        try:
            return self.get().version
        except (ConfigError, redis.RedisError):
            return self._flags.version


def _finalized_refusal() -> Exception:
    return InvalidArguments(
        "the rollout is finalized (everything goes to V3): run `snakepool rollout "
        "unfinalize --reason …` first, with V2-compat nodes running again"
    )


def _get(client: Any, key: str) -> Any:
    """GET ``key``; a key of another type is unreadable flags, not a Redis error."""
    try:
        return client.get(key)
    except redis.ResponseError as exc:
        if not str(exc).startswith("WRONGTYPE"):
            raise
        raise unreadable_flags(key, "the key holds another type than a string") from None


def _stored_version(client: Any, key: str) -> int:
    try:
        return int(_get(client, key) or 0)
    except (ValueError, ConfigError):
        return 0


def _check_audit_trail(pipe: Any, key: str) -> None:
    """Refuse a change that could not be audited, before anything is written.

    Redis runs the rest of a ``MULTI`` when one command fails: with ``key`` holding
    anything but a stream, the flags changed, the ``XADD`` failed, and the caller was told
    the change had failed — a change applied, unaudited, reported as not made.

    Raises:
        ConfigError: ``key`` holds another type (nothing was changed).
    """
    kind = pipe.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind not in ("stream", "none"):
        raise ConfigError(
            f"the audit trail {key} holds a {kind}, not a stream: nothing was changed "
            "(every change is audited); rename or delete that key, then try again",
            setting="KEY_PREFIX",
            key=key,
        )
