-- Forgets one connection of a user (and the user, with their last connection).
-- KEYS: 1 where; ARGV: 1 user, 2 member
local kept = {}
local found = 0
for _, e in ipairs(members(redis.call('HGET', KEYS[1], ARGV[1]))) do
  if e == ARGV[2] then found = 1 else kept[#kept + 1] = e end
end
if #kept == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(kept, ' '))
end
return found
