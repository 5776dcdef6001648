-- Drop the entries of messages this node no longer holds (acknowledged, or restored by
-- kombu): those whose unacked_index score is gone or is another delivery's.
-- KEYS[1] inflight:<incarnation>   KEYS[2] kombu's unacked_index
-- Returns the delivery tags dropped.
local dropped = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local tag, value = fields[i], fields[i + 1]
  if tag ~= '~node' then
    local score = redis.call('ZSCORE', KEYS[2], tag)
    if not score or string.sub(value, 1, #score + 1) ~= score .. ' ' then
      redis.call('HDEL', KEYS[1], tag)
      dropped[#dropped + 1] = tag
    end
  end
end
return dropped
