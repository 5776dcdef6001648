"""The SessionStore: sessions and their programs, in Redis (the source of truth).

A session is a hash (created, last_access, ttl, metadata, V2 binding) plus a hash of its
programs, one field per program, so two writers adding different programs never clobber
each other. Both keys expire natively after the session's TTL, pushed out on every
access. The V3 lane is stateless and reads program definitions from here; the V2-compat
lane keeps programs in interpreter memory and writes every one here too, so a session
can move to V3 or be rebuilt when its node is lost.
"""

from __future__ import annotations

import json
import time
import uuid
from functools import cache
from importlib import resources
from typing import Any

import redis

from snakepool.config.keys import DEFAULT_PREFIX, Keys, validate_session_id
from snakepool.errors import InvalidArguments, SessionNotFound

__all__ = ["DEFAULT_TTL", "MAX_METADATA_BYTES", "MAX_PROGRAM_BYTES", "SessionStore"]

#: Seconds a session lives after its last access, unless created with another TTL.
DEFAULT_TTL = 3600
#: Longest TTL accepted (30 days).
MAX_TTL = 30 * 24 * 3600
#: Largest metadata object, as JSON.
MAX_METADATA_BYTES = 64 * 1024
#: Largest program definition, as JSON.
MAX_PROGRAM_BYTES = 256 * 1024


@cache
def _lua(name: str) -> str:
    return resources.files("snakepool.sessions").joinpath(f"lua/{name}.lua").read_text()


def _as_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        self._put_program = client.register_script(_lua("put_program"))
        self._touch = client.register_script(_lua("touch"))
        self._bind = client.register_script(_lua("bind"))

    def create(
        self,
        *,
        ttl: int | None = None,
        metadata: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> str:
        """Create a session and return its id.

        Raises:
            InvalidArguments: bad id, TTL or metadata (too large, not a JSON object).
        """
        if session_id is None:
            session_id = uuid.uuid4().hex
        validate_session_id(session_id)
        ttl = self.default_ttl if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
            raise InvalidArguments(f"ttl must be whole seconds from 1 to {MAX_TTL}")
        encoded = json.dumps(metadata or {})
        if not isinstance(metadata or {}, dict) or len(encoded) > MAX_METADATA_BYTES:
            raise InvalidArguments(
                f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
            )
        now = time.time()
        key = self.keys.session(session_id)
        with self.client.pipeline() as pipe:  # MULTI: all or nothing
            pipe.hset(key, mapping={"created": now, "last_access": now, "ttl": ttl,
                                    "metadata": encoded})  # fmt: skip
            pipe.expire(key, ttl)
            pipe.zadd(self.keys.session_index, {session_id: now})
            pipe.execute()
        return session_id

    def get(self, session_id: str) -> dict[str, Any] | None:
        """The session (and its program ids), refreshing its TTL; None if absent."""
        validate_session_id(session_id)
        keys = [self.keys.session(session_id), self.keys.programs(session_id)]
        flat = self._touch(keys=keys, args=[time.time()])
        if not flat:
            return None
        fields = {_as_str(k): _as_str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        program_ids = sorted(_as_str(p) for p in self.client.hkeys(keys[1]))
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
        return bool(self.client.exists(self.keys.session(validate_session_id(session_id))))

    def touch(self, session_id: str) -> bool:
        """Refresh the TTL; False if the session does not exist."""
        keys = [self.keys.session(validate_session_id(session_id)), self.keys.programs(session_id)]
        return bool(self._touch(keys=keys, args=[time.time()]))

    def delete(self, session_id: str) -> bool:
        """Delete the session and its programs; False if it did not exist."""
        validate_session_id(session_id)
        with self.client.pipeline() as pipe:
            pipe.delete(self.keys.session(session_id), self.keys.programs(session_id))
            pipe.zrem(self.keys.session_index, session_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def list(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest sessions (expired ones are dropped from the index as they are met)."""
        ids = [_as_str(i) for i in self.client.zrevrange(self.keys.session_index, 0, limit * 2)]
        found = []
        for session_id in ids:
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
            InvalidArguments: the definition is too large.
        """
        validate_session_id(session_id)
        encoded = json.dumps(definition, sort_keys=True)
        if len(encoded) > MAX_PROGRAM_BYTES:
            raise InvalidArguments(f"program definition larger than {MAX_PROGRAM_BYTES} bytes")
        keys = [self.keys.session(session_id), self.keys.programs(session_id)]
        ttl = self.client.hget(keys[0], "ttl") or self.default_ttl
        if not self._put_program(keys=keys, args=[program_id, encoded, int(ttl), time.time()]):
            raise SessionNotFound(f"no session {session_id!r} (expired or never created)")

    def get_program(self, session_id: str, program_id: str) -> dict[str, Any] | None:
        """One program's definition, or None."""
        raw = self.client.hget(self.keys.programs(validate_session_id(session_id)), program_id)
        return json.loads(raw) if raw is not None else None

    def programs(self, session_id: str) -> dict[str, dict[str, Any]]:
        """Every program of a session: id → definition."""
        raw = self.client.hgetall(self.keys.programs(validate_session_id(session_id)))
        return {_as_str(k): json.loads(v) for k, v in raw.items()}

    def delete_program(self, session_id: str, program_id: str) -> bool:
        """Forget one program; False if it was not there."""
        key = self.keys.programs(validate_session_id(session_id))
        return bool(self.client.hdel(key, program_id))

    # ------------------------------------------------------ V2-compat affinity

    def bind(self, session_id: str, node: str) -> bool:
        """Bind a session to a worker node (V2-compat affinity); False if it is gone."""
        key = self.keys.session(validate_session_id(session_id))
        return bool(self._bind(keys=[key], args=[node]))

    def binding(self, session_id: str) -> str | None:
        """The node a session is bound to, if any."""
        raw = self.client.hget(self.keys.session(validate_session_id(session_id)), "v2_node")
        return _as_str(raw) if raw else None
