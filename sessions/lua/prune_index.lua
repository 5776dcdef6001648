-- Drop the ids whose expiry has passed from the session index; return how many remain.
-- KEYS[1] session index (sorted set: id -> expiry time on the server clock)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZCARD', KEYS[1])
