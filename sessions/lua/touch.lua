-- Mark a session used now, push its expiry (and its index score) out by its own TTL,
-- and drop expired ids from the index.
-- KEYS[1] session hash, KEYS[2] programs hash, KEYS[3] session index
-- ARGV[1] now (caller's clock, kept as last_access), ARGV[2] session id
-- Returns the session's fields (flat), or an empty list when it does not exist.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. now)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[2])
  return {}
end
redis.call('HSET', KEYS[1], 'last_access', ARGV[1])
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
if ttl and ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('ZADD', KEYS[3], now + ttl, ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
