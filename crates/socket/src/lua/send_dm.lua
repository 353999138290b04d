-- A direct message: charged to the sender's budget, then published once to each server that
-- holds one of the recipient's connections.
-- KEYS: 1 where, 2 sender's budget
-- ARGV: 1 recipient, 2 message, 3 pod channel prefix, 4 pod channel suffix,
--       5 sender interval ms, 6 sender burst
-- Returns {'ok', servers reached} | {'rate_limited', wait ms}
local now = now_ms()
local ok, tat = gcra(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]), now)
if not ok then return {'rate_limited', tostring(tat)} end
gcra_commit(KEYS[2], tat, now)
local reached = {}
local n = 0
for _, e in ipairs(members(redis.call('HGET', KEYS[1], ARGV[1]))) do
  local pod = pod_of(e)
  if pod and not reached[pod] then
    reached[pod] = true
    redis.call('PUBLISH', ARGV[3] .. pod .. ARGV[4], ARGV[2])
    n = n + 1
  end
end
return {'ok', tostring(n)}
