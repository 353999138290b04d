-- The school's backend removes a user from a class: they are kept out for a while (their
-- handshakes are refused with `kicked`), and every server holding one of their connections
-- is told to close it.
-- KEYS: 1 where, 2 kicked marker
-- ARGV: 1 user, 2 keep-out ms (0: none), 3 message, 4 pod channel prefix, 5 pod channel suffix
-- Returns the number of servers told
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
local told = {}
local n = 0
for _, e in ipairs(members(redis.call('HGET', KEYS[1], ARGV[1]))) do
  local pod = pod_of(e)
  if pod and not told[pod] then
    told[pod] = true
    redis.call('PUBLISH', ARGV[4] .. pod .. ARGV[5], ARGV[3])
    n = n + 1
  end
end
return n
