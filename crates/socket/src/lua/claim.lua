-- Records a user's new connection; beyond the per-user limit the oldest connections are told
-- (on their server's channel, naming the connection) to close as replaced.
-- KEYS: 1 where
-- ARGV: 1 user, 2 member (pod#conn), 3 most connections per user, 4 class,
--       5 pod channel prefix, 6 pod channel suffix
-- Returns the number of connections replaced.
local entries = {}
for _, e in ipairs(members(redis.call('HGET', KEYS[1], ARGV[1]))) do
  if e ~= ARGV[2] then entries[#entries + 1] = e end
end
entries[#entries + 1] = ARGV[2]
local replaced = 0
while #entries > tonumber(ARGV[3]) do
  local old = table.remove(entries, 1)
  local pod = pod_of(old)
  if pod then
    redis.call('PUBLISH', ARGV[5] .. pod .. ARGV[6], cjson.encode({k = 'kick', class = ARGV[4], at = old}))
  end
  replaced = replaced + 1
end
redis.call('HSET', KEYS[1], ARGV[1], table.concat(entries, ' '))
return replaced
