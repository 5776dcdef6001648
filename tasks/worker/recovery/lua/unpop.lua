-- Put back one message a dead incarnation's reliable pop had moved onto its processing
-- list and not yet recorded as unacknowledged: it never started, so it is not counted
-- and not marked redelivered — unless the incarnation beat again meanwhile (it was only
-- late, and may be delivering it right now).
-- KEYS[1] inflight (index)   KEYS[2] processing:<incarnation>
-- KEYS[3..] the lists to push it onto (its queue)
-- ARGV[1] incarnation   ARGV[2] the message exactly as on the processing list
-- Returns 1 if moved, 0 if it was no longer there, -1 if the incarnation is alive.
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
local t = redis.call('TIME')
if expires and tonumber(expires) > tonumber(t[1]) + tonumber(t[2]) / 1000000 then
  return -1
end
if redis.call('LREM', KEYS[2], -1, ARGV[2]) == 0 then
  return 0
end
for i = 3, #KEYS do
  -- The right end is where consumers pop: it runs next.
  redis.call('RPUSH', KEYS[i], ARGV[2])
end
return 1
