-- A node received a message: note its delivery tag in the node's in-flight hash, with
-- the score kombu just gave it in unacked_index (its receipt time on this delivery), so
-- a survivor can tell this delivery from a later one of the same message elsewhere.
-- KEYS[1] inflight:<incarnation>   KEYS[2] kombu's unacked_index
-- ARGV[1] delivery tag   ARGV[2] entry JSON
-- No EXPIRE here (one command less per request): beat.lua gives the hash its TTL
-- every second; a hash made here without one (its TTL ran out) gets it at the next beat.
-- Returns the score, or false when the message is not (or no longer) unacknowledged.
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then
  return false
end
redis.call('HSET', KEYS[1], ARGV[1], score .. ' ' .. ARGV[2])
return score
