-- Bind a session to a node, only if the session still exists (never resurrect one).
-- KEYS[1] session hash; ARGV[1] node name
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'v2_node', ARGV[1])
return 1
