-- Record one lane's outcome of a shadowed request; the second to arrive gets both.
-- KEYS[1] shadow hash; ARGV[1] role ("primary" | "shadow"), ARGV[2] outcome JSON,
-- ARGV[3] seconds to keep a lone outcome waiting for its pair
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HLEN', KEYS[1]) < 2 then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {}
end
local both = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return both
