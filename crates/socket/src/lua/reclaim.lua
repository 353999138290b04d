-- Re-records connections Redis forgot (it restarted, or survivors reaped this live server),
-- without replacing anyone.
-- KEYS: 1 where; ARGV: user, member, user, member, ...
-- Returns how many were missing.
local added = 0
for i = 1, #ARGV, 2 do
  local user, member = ARGV[i], ARGV[i + 1]
  local list = redis.call('HGET', KEYS[1], user)
  local present = false
  for _, e in ipairs(members(list)) do
    if e == member then present = true end
  end
  if not present then
    if list and list ~= '' then list = list .. ' ' .. member else list = member end
    redis.call('HSET', KEYS[1], user, list)
    added = added + 1
  end
end
return added
