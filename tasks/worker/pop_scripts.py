"""The reliable pop's Lua scripts (how they are used: :mod:`~snakepool.tasks.worker.pop`).

Every key a script touches is passed in ``KEYS`` (the processing list and the lists it
consumes); each runs atomically, so a message is always on exactly one list or hash.
"""

from __future__ import annotations

import hashlib

__all__ = ["ACCEPT", "GIVE_BACK", "RESTORE", "SHA", "TAKE", "TAKE_62", "has_blmove", "take_script"]

_FIRST_LMPOP = (7, 0)
_FIRST_BLMOVE = (6, 2)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return (0,)


def has_blmove(redis_version: str) -> bool:
    """Whether a Redis of this version (``INFO server``'s ``redis_version``) has
    ``BLMOVE``/``LMOVE`` (6.2+), which the reliable pop needs."""
    return _version(redis_version) >= _FIRST_BLMOVE


def take_script(redis_version: str) -> str:
    """The name (a key of :data:`SHA`) of the take script this Redis runs: ``take``
    (``LMPOP``, 7.0+) or ``take_62``."""
    return "take" if _version(redis_version) >= _FIRST_LMPOP else "take_62"


#: Move up to ARGV[1] messages of the first non-empty list of KEYS[2..] (in that order)
#: onto KEYS[1], the processing list, from ARGV[2]'s end (RIGHT: the oldest first, as
#: kombu pushes on the left; LEFT: the newest, for shadow copies): one LMPOP, one LPUSH
#: (Redis 7.0+). Returns {list, message, …} or false.
TAKE = """
local args = {'LMPOP', #KEYS - 1}
for i = 2, #KEYS do
  args[#args + 1] = KEYS[i]
end
args[#args + 1] = ARGV[2]
args[#args + 1] = 'COUNT'
args[#args + 1] = ARGV[1]
local found = redis.call(unpack(args))
if not found then
  return false
end
redis.call('LPUSH', KEYS[1], unpack(found[2]))
return {found[1], unpack(found[2])}
"""
#: The same for Redis 6.2 (no LMPOP): one LMOVE per list tried and per message moved.
TAKE_62 = """
for i = 2, #KEYS do
  local item = redis.call('LMOVE', KEYS[i], KEYS[1], ARGV[2], 'LEFT')
  if item then
    local reply = {KEYS[i], item}
    for _ = 2, tonumber(ARGV[1]) do
      item = redis.call('LMOVE', KEYS[i], KEYS[1], ARGV[2], 'LEFT')
      if not item then
        break
      end
      reply[#reply + 1] = item
    end
    return reply
  end
end
return false
"""
#: kombu's QoS.append (ZADD unacked_index, HSET unacked) and the message off the
#: processing list, atomically: as many commands as kombu's MULTI ZADD HSET EXEC. With a
#: fourth key, the node's in-flight record, also its entry ("<score> <json>", the score
#: as Redis keeps it: what recovery compares), so the record costs no command of its own.
#: KEYS: unacked_index, unacked, processing[, inflight record]
#: ARGV: tag, receipt time, unacked value, item[, entry JSON]
#: Returns 1, or with the record the score.
ACCEPT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('LREM', KEYS[3], -1, ARGV[4])
if KEYS[4] then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], score .. ' ' .. ARGV[5])
  return score
end
return 1
"""
#: Give a message back: off KEYS[1] (the processing list), onto the end of KEYS[2] it is
#: taken from next: ARGV[2] RIGHT (the head for kombu's consumers) or LEFT (the newest
#: end, where shadow copies are taken). 1 if moved, 0 if it was no longer there.
GIVE_BACK = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) > 0 then
  if ARGV[2] == 'LEFT' then
    redis.call('LPUSH', KEYS[2], ARGV[1])
  else
    redis.call('RPUSH', KEYS[2], ARGV[1])
  end
  return 1
end
return 0
"""
#: An ACCEPT whose reply was lost may have run: if KEYS[1] (unacked) holds ARGV[1] (its
#: delivery tag), out of it and its index KEYS[2] (and the in-flight record KEYS[4], if
#: given), and ARGV[2] (the message as taken) back onto the head of KEYS[3], its list.
#: 1 if moved, 0 if the ACCEPT never ran.
RESTORE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if KEYS[4] then
    redis.call('HDEL', KEYS[4], ARGV[1])
  end
  redis.call('RPUSH', KEYS[3], ARGV[2])
  return 1
end
return 0
"""
SHA = {
    name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
    for name, source in (("take", TAKE), ("take_62", TAKE_62), ("accept", ACCEPT))
}
