-- Move a gone node's direct-queue backlog to its lane, at the head of the line and in
-- its own order (kombu pushes on the left and consumers pop on the right).
-- KEYS[1] <node>.dq2 (one priority list)   KEYS[2] the lane's list of that priority
-- ARGV[1] at most this many
local moved = 0
while moved < tonumber(ARGV[1]) do
  local message = redis.call('LPOP', KEYS[1])
  if not message then
    break
  end
  redis.call('RPUSH', KEYS[2], message)
  moved = moved + 1
end
return moved
