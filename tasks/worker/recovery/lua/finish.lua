-- A survivor has settled a dead incarnation's messages: forget it — unless it beat
-- again meanwhile (it was not dead, only late), in which case it keeps its record.
-- KEYS[1] inflight (index)   KEYS[2] inflight:<incarnation>   ARGV[1] incarnation
-- KEYS[3] processing:<incarnation> (emptied by the survivor just before)
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
local t = redis.call('TIME')
if expires and tonumber(expires) > tonumber(t[1]) + tonumber(t[2]) / 1000000 then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
return 1
