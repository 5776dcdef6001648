-- Store one program of a session, only if the session exists; refresh its TTL.
-- KEYS[1] session hash, KEYS[2] programs hash
-- ARGV[1] program id, ARGV[2] definition JSON, ARGV[3] ttl seconds, ARGV[4] now
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'last_access', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
