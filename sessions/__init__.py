"""Sessions on Redis: the SessionStore, key naming and connections."""

from snakepool.config.keys import Keys, validate_session_id
from snakepool.sessions.connection import redis_answers, redis_from_url
from snakepool.sessions.store import SessionStore

__all__ = ["Keys", "SessionStore", "redis_answers", "redis_from_url", "validate_session_id"]
