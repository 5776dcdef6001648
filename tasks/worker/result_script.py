"""The script that stores a task's outcome in Redis under Celery's rule (a stored
SUCCESS is kept), in the transaction that carries a node's lane figures: used by
:class:`~snakepool.tasks.worker.results.ResilientRedisBackend`."""

from __future__ import annotations

import hashlib

__all__ = ["SCRIPTED_STORE_MAX_BYTES", "STORE_SHA", "STORE_UNLESS_SUCCESS"]

#: Celery's rule for storing a task's outcome, checked by Redis in the transaction that
#: stores it: a stored SUCCESS is kept (``BaseKeyValueStoreBackend._store_result`` reads
#: the key first, a round trip of its own, so that a lost worker's duplicate never
#: overwrites a success). KEYS[1] the result key; ARGV[1] the encoded meta; ARGV[2]
#: seconds to live, '' for none. Returns 1 (stored and published) or 0 (a success was
#: there: nothing written). The stored status is read from the value's first bytes
#: (Celery writes ``{"status": "…"`` first), whatever its size; a value that does not
#: start so is decoded whole (JSON; one that does not decode is not a success).
STORE_UNLESS_SUCCESS = """
local head = redis.call('GETRANGE', KEYS[1], 0, 63)
if head ~= '' then
  local status = string.match(head, '^{"status": ?"(%u+)"')
  if status == nil then
    local decoded, meta = pcall(cjson.decode, redis.call('GET', KEYS[1]))
    if decoded and type(meta) == 'table' then
      status = meta['status']
    end
  end
  if status == 'SUCCESS' then
    return 0
  end
end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
#: Outcomes larger than this (bytes of Celery's JSON, which is ASCII) are stored Celery's
#: way, read first: a script's arguments are copied into Lua and back (~3 ms per MB, all
#: of Redis blocked meanwhile).
SCRIPTED_STORE_MAX_BYTES = 32 * 1024
#: Its SHA-1, which ``EVALSHA`` names it by.
STORE_SHA = hashlib.sha1(STORE_UNLESS_SUCCESS.encode(), usedforsecurity=False).hexdigest()
