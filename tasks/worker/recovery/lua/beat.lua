-- A node's in-flight heartbeat: its incarnation scored by when it counts as dead (the
-- Redis server's clock, the one every survivor compares against).
-- KEYS[1] inflight (index)   KEYS[2] inflight:<incarnation>   KEYS[3] processing:<incarnation>
-- ARGV[1] incarnation   ARGV[2] seconds until it counts as dead
-- ARGV[3] seconds the in-flight hash lives   ARGV[4] node name
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], '~node', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
-- The reliable pop's list exists only while it holds a message (created by BLMOVE).
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 1
