-- A node stopping cleanly withdraws its in-flight record, unless messages are still in
-- it (then survivors settle them once its heartbeat has expired, as for a death).
-- KEYS[1] inflight (index)   KEYS[2] inflight:<incarnation>   ARGV[1] incarnation
if redis.call('HLEN', KEYS[2]) > 1 then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
