-- Removes a reaped server from the list of servers, unless it renewed its deadline meanwhile.
-- KEYS: 1 pods; ARGV: 1 pod, 2 now ms
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if deadline and tonumber(deadline) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
