-- The incarnations whose in-flight heartbeat has expired (Redis server clock).
-- KEYS[1] inflight (index)   ARGV[1] at most this many
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
