-- Re-publish a dead letter under its task id and forget it and its deaths (a fresh
-- count: if it kills POISON_THRESHOLD more nodes, it is dead-lettered again).
-- KEYS[1] deadletter:<task id>   KEYS[2] deadletters (index)   KEYS[3] deadletters:unreported
-- KEYS[4] deaths:<task id>       KEYS[5..] the lists to publish onto (as kombu does: left)
-- ARGV[1] task id   ARGV[2] the message
-- Returns 1, or 0 when there is no such dead letter (any more).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
for i = 5, #KEYS do
  redis.call('LPUSH', KEYS[i], ARGV[2])
end
return 1
