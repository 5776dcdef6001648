-- Settle one message a dead node had received and not finished: back on its queue,
-- marked redelivered (as kombu's own restore does), or — when this was the
-- POISON_THRESHOLD-th of its deliveries to end with its node's death — into the
-- dead-letter list. One script, so two survivors can never both move it, and the count
-- and the move can never disagree.
-- KEYS[1] inflight:<incarnation> (the dead node's)   KEYS[2] kombu's unacked
-- KEYS[3] kombu's unacked_index   KEYS[4] deaths:<task id>   KEYS[5] deadletter:<task id>
-- KEYS[6] deadletters (index)     KEYS[7] deadletters:unreported
-- KEYS[8..] the lists to push the message onto (its queue, by priority)
-- ARGV[1] delivery tag   ARGV[2] the unacked_index score the dead node recorded
-- ARGV[3] the unacked value as read before (so nothing changed in between)
-- ARGV[4] the message to push back (marked redelivered)
-- ARGV[5] this delivery's death entry (JSON), '' if it had not started (not counted)
-- ARGV[6] POISON_THRESHOLD   ARGV[7] deaths kept   ARGV[8] seconds deaths are kept
-- ARGV[9] seconds a dead letter is kept   ARGV[10] dead letters kept
-- ARGV[11] the dead letter's meta (JSON)   ARGV[12] task id   ARGV[13] dead letter key prefix
-- Returns {outcome, deaths}: outcome 'skipped' (not that node's delivery any more),
-- 'restored' or 'deadlettered'; deaths counted so far, this one included.
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('ZSCORE', KEYS[3], ARGV[1]) ~= ARGV[2]
    or redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then
  return {'skipped', 0}
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local deaths = 0
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[4], ARGV[5])
  redis.call('LTRIM', KEYS[4], -tonumber(ARGV[7]), -1)
  redis.call('EXPIRE', KEYS[4], ARGV[8])
  deaths = redis.call('LLEN', KEYS[4])
end
if deaths == 0 or deaths < tonumber(ARGV[6]) then
  for i = 8, #KEYS do
    -- The right end is where consumers pop: the restored message runs next.
    redis.call('RPUSH', KEYS[i], ARGV[4])
  end
  return {'restored', deaths}
end
local now = tonumber(redis.call('TIME')[1])
local history = redis.call('LRANGE', KEYS[4], 0, -1)
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[5], 'message', ARGV[3], 'meta', ARGV[11],
  'deliveries', '[' .. table.concat(history, ',') .. ']', 'at', now)
redis.call('EXPIRE', KEYS[5], ARGV[9])
-- The index: expired entries out, this one in, then the oldest beyond the cap out.
for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)) do
  redis.call('SREM', KEYS[7], old)
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
redis.call('ZADD', KEYS[6], now + tonumber(ARGV[9]), ARGV[12])
redis.call('SADD', KEYS[7], ARGV[12])
local excess = redis.call('ZCARD', KEYS[6]) - tonumber(ARGV[10])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[6], excess)
  for i = 1, #popped, 2 do
    redis.call('DEL', ARGV[13] .. popped[i])
    redis.call('SREM', KEYS[7], popped[i])
  end
end
return {'deadlettered', deaths}
