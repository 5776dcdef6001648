-- Create (or overwrite) a session, index it by its expiry and drop expired ids.
-- KEYS[1] session hash, KEYS[2] session index (sorted set: id -> expiry time)
-- ARGV[1] session id, ARGV[2] ttl seconds, ARGV[3] metadata JSON, ARGV[4] now (caller's
-- clock, kept as created / last_access)
-- Index scores use the SERVER clock, the one Redis expires keys by: a caller whose clock
-- runs ahead can never drop a live session from the index.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('HSET', KEYS[1], 'created', ARGV[4], 'last_access', ARGV[4], 'ttl', ARGV[2],
           'metadata', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
