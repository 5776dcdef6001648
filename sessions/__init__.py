"""Sessions on Redis: the SessionStore, key naming and connections."""

from config.keys import Keys, validate_session_id
from sessions.connection import redis_answers, redis_from_url
from sessions.store import SessionStore

__all__ = ["Keys", "SessionStore", "redis_answers", "redis_from_url", "validate_session_id"]
