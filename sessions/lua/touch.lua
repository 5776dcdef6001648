-- Mark a session used now and push its expiry out by its own TTL.
-- KEYS[1] session hash, KEYS[2] programs hash; ARGV[1] now
-- Returns the session's fields (flat), or an empty list when it does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
redis.call('HSET', KEYS[1], 'last_access', ARGV[1])
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
if ttl and ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return redis.call('HGETALL', KEYS[1])
