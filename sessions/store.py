"""The SessionStore: sessions and their programs, in Redis (the source of truth).

A session is a hash (created, last_access, ttl, metadata, V2 binding) plus a hash of its
programs, one field per program, so two writers adding different programs never clobber
each other. Both keys expire natively after the session's TTL, pushed out on every
access. The index of sessions is a sorted set scored by each session's expiry (on the
Redis server's clock): every write moves a session's score and drops the ids whose
expiry has passed, so the index holds the live sessions and no more (DESIGN.md §8).
The V3 lane is stateless and reads program definitions from here; the V2-compat
lane keeps programs in interpreter memory and writes every one here too, so a session
can move to V3 or be rebuilt when its node is lost.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

from snakepool.config.ids import (
    SESSION_ID,
    is_valid,
    validate_node_name,
    validate_program_id,
    validate_session_id,
)
from snakepool.config.json_values import check_json
from snakepool.config.keys import DEFAULT_PREFIX, Keys
from snakepool.config.limits import (
    MAX_METADATA_BYTES,
    MAX_PROGRAM_BYTES,
    MAX_PROGRAMS_PER_SESSION,
    MAX_SESSION_TTL,
)
from snakepool.errors import InvalidArguments, SessionNotFound
from snakepool.sessions.scripts import lua

__all__ = [
    "DEFAULT_TTL",
    "MAX_METADATA_BYTES",
    "MAX_PROGRAMS_PER_SESSION",
    "MAX_PROGRAM_BYTES",
    "SessionStore",
]

#: Seconds a session lives after its last access, unless created with another TTL.
DEFAULT_TTL = 3600
#: Longest TTL accepted (30 days).
MAX_TTL = MAX_SESSION_TTL


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encoded_metadata(metadata: object) -> str:
    """``metadata`` as the JSON text stored, once it is a JSON object every reader parses.

    Checked value by value first: ``json.dumps`` alone would raise a raw ``TypeError``
    (a set) or ``RecursionError``, and would write an integer of more than 4300 digits
    in a process that lifted Python's limit, for every other reader to fail on.

    Raises:
        InvalidArguments: see :meth:`SessionStore.create`.
    """
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise InvalidArguments(f"metadata must be a JSON object, not {type(metadata).__name__}")
    check_json(metadata, "metadata")
    try:
        encoded = json.dumps(metadata)
    except (TypeError, ValueError, RecursionError) as exc:  # a circular reference
        raise InvalidArguments(f"metadata cannot be written as JSON: {exc}") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidArguments(
            f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
        )
    return encoded


class SessionStore:
    """Sessions on Redis.

    Args:
        client: A redis-py client (or fakeredis); passed in, never global.
        prefix: Key prefix (``KEY_PREFIX``).
        default_ttl: Seconds a session lives after its last access.
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, default_ttl: int = DEFAULT_TTL
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.default_ttl = default_ttl
        self._create = client.register_script(lua("create"))
        self._put_program = client.register_script(lua("put_program"))
        self._touch = client.register_script(lua("touch"))
        self._bind = client.register_script(lua("bind"))
        self._prune = client.register_script(lua("prune_index"))

    def create(
        self,
        *,
        ttl: int | None = None,
        metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> str:
        """Create a session and return its id.

        Args:
            ttl: Seconds it lives after its last access (default ``SESSION_TTL``).
            metadata: A JSON object kept with it: dicts with string keys, lists, strings,
                numbers (integers of at most 4300 digits), booleans, None — what every
                reader parses back exactly (:mod:`~snakepool.config.json_values`).
            session_id: Its id (default: a new random one).

        Raises:
            InvalidArguments: bad id or TTL; metadata that is not a dict, holds a value
                JSON cannot carry (named with its path: ``metadata['a']: set is not
                JSON-able``), nests deeper than 256 levels, or is over
                ``MAX_METADATA_BYTES`` as JSON.
        """
        if session_id is None:
            session_id = uuid.uuid4().hex
        validate_session_id(session_id)
        ttl = self.default_ttl if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
            raise InvalidArguments(f"ttl must be whole seconds from 1 to {MAX_TTL}")
        encoded = _encoded_metadata(metadata)
        keys = [self.keys.session(session_id), self.keys.session_index]
        self._create(keys=keys, args=[session_id, ttl, encoded, time.time()])
        return session_id

    def get(self, session_id: str) -> dict[str, Any] | None:
        """The session (and its program ids), refreshing its TTL; None if absent."""
        flat = self._touch_session(session_id)
        if not flat:
            return None
        fields = {_as_str(k): _as_str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        program_ids = sorted(_as_str(p) for p in self.client.hkeys(self.keys.programs(session_id)))
        return {
            "id": session_id,
            "created": float(fields["created"]),
            "last_access": float(fields["last_access"]),
            "ttl": int(fields["ttl"]),
            "metadata": json.loads(fields.get("metadata") or "{}"),
            "programs": program_ids,
            "v2_node": fields.get("v2_node") or None,
        }

    def exists(self, session_id: str) -> bool:
        """Whether the session exists (no TTL refresh)."""
        return bool(self.client.exists(self.keys.session(session_id)))

    def touch(self, session_id: str) -> bool:
        """Refresh the TTL; False if the session does not exist."""
        return bool(self._touch_session(session_id))

    def _touch_session(self, session_id: str) -> list[Any]:
        keys = [
            self.keys.session(session_id),
            self.keys.programs(session_id),
            self.keys.session_index,
        ]
        flat: list[Any] = self._touch(keys=keys, args=[time.time(), session_id])
        return flat

    def delete(self, session_id: str) -> bool:
        """Delete the session and its programs; False if it did not exist."""
        validate_session_id(session_id)
        with self.client.pipeline() as pipe:
            pipe.delete(self.keys.session(session_id), self.keys.programs(session_id))
            pipe.zrem(self.keys.session_index, session_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def count(self) -> int:
        """How many sessions are live (drops the expired ids from the index first)."""
        return int(self._prune(keys=[self.keys.session_index]))

    def list(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The live sessions that expire last (the most recently used) first.

        Expired ids are dropped from the index first; ids found without their session
        (deleted behind the store's back) or malformed (written by an older version)
        are dropped as they are met.
        """
        self.count()
        ids = [_as_str(i) for i in self.client.zrevrange(self.keys.session_index, 0, limit * 2)]
        found = []
        for session_id in ids:
            if not is_valid(SESSION_ID, session_id):
                self.client.zrem(self.keys.session_index, session_id)
                continue
            fields = self.client.hgetall(self.keys.session(session_id))
            if not fields:
                self.client.zrem(self.keys.session_index, session_id)
                continue
            decoded = {_as_str(k): _as_str(v) for k, v in fields.items()}
            found.append({
                "id": session_id,
                "created": float(decoded["created"]),
                "last_access": float(decoded["last_access"]),
                "ttl_left": self.client.ttl(self.keys.session(session_id)),
                "programs": self.client.hlen(self.keys.programs(session_id)),
                "v2_node": decoded.get("v2_node") or None,
            })  # fmt: skip
            if len(found) >= limit:
                break
        return found

    # ----------------------------------------------------------------- programs

    def put_program(self, session_id: str, program_id: str, definition: dict[str, Any]) -> None:
        """Store (or replace) one program definition of a session.

        Raises:
            SessionNotFound: no such session.
            InvalidArguments: a malformed id, a definition plain JSON cannot carry
                (bytes in a demo: naming the value), one over ``MAX_PROGRAM_BYTES``, or
                a new program for a session that already holds
                ``MAX_PROGRAMS_PER_SESSION``.
        """
        validate_session_id(session_id)
        validate_program_id(program_id)
        # A value Celery's JSON carries but plain JSON does not (bytes in a demo) must be
        # the caller's InvalidArguments, not a raw TypeError from json.dumps.
        check_json(definition, "program")
        encoded = json.dumps(definition, sort_keys=True)
        if len(encoded) > MAX_PROGRAM_BYTES:
            raise InvalidArguments(f"program definition larger than {MAX_PROGRAM_BYTES} bytes")
        keys = [self.keys.session(session_id), self.keys.programs(session_id)]
        args: list[str | float] = [program_id, encoded, time.time(), session_id,
                                   MAX_PROGRAMS_PER_SESSION, self.default_ttl]  # fmt: skip
        stored = int(self._put_program(keys=[*keys, self.keys.session_index], args=args))
        if stored == 0:
            raise SessionNotFound(f"no session {session_id!r} (expired or never created)")
        if stored < 0:
            raise InvalidArguments(
                f"session {session_id!r} already holds {MAX_PROGRAMS_PER_SESSION} programs: "
                "delete one first"
            )

    def get_program(self, session_id: str, program_id: str) -> dict[str, Any] | None:
        """One program's definition, or None."""
        key = self.keys.programs(session_id)
        raw = self.client.hget(key, validate_program_id(program_id))
        return json.loads(raw) if raw is not None else None

    def programs(self, session_id: str) -> dict[str, dict[str, Any]]:
        """Every program of a session: id → definition."""
        raw = self.client.hgetall(self.keys.programs(session_id))
        return {_as_str(k): json.loads(v) for k, v in raw.items()}

    def delete_program(self, session_id: str, program_id: str) -> bool:
        """Forget one program; False if it was not there."""
        key = self.keys.programs(session_id)
        return bool(self.client.hdel(key, validate_program_id(program_id)))

    # ------------------------------------------------------ V2-compat affinity

    def bind(self, session_id: str, node: str) -> bool:
        """Bind a session to a worker node (V2-compat affinity); False if it is gone.

        Raises:
            InvalidArguments: a malformed session id or node name.
        """
        key = self.keys.session(session_id)
        return bool(self._bind(keys=[key], args=[validate_node_name(node)]))

    def binding(self, session_id: str) -> str | None:
        """The node a session is bound to, if any."""
        raw = self.client.hget(self.keys.session(session_id), "v2_node")
        return _as_str(raw) if raw else None
