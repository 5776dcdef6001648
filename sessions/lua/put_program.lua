-- Store one program of a session, only if the session exists and has room; refresh
-- its TTL and its index score.
-- KEYS[1] session hash, KEYS[2] programs hash, KEYS[3] session index
-- ARGV[1] program id, ARGV[2] definition JSON, ARGV[3] now (caller's clock),
-- ARGV[4] session id, ARGV[5] most programs per session, ARGV[6] TTL if none is stored
-- Returns 1 stored, 0 no such session, -1 the session already holds ARGV[5] programs.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl')) or tonumber(ARGV[6])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'last_access', ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[4])
return 1
