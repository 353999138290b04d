-- Removes every connection one server held in one class, and its connection count.
-- KEYS: 1 where, 2 pods; ARGV: 1 member prefix (`<pod>#`), 2 pod
-- Returns how many connections were removed.
local all = redis.call('HGETALL', KEYS[1])
local prefix = ARGV[1]
local removed = 0
for i = 1, #all, 2 do
  local kept = {}
  local changed = false
  for _, e in ipairs(members(all[i + 1])) do
    if string.sub(e, 1, #prefix) == prefix then
      changed = true
      removed = removed + 1
    else
      kept[#kept + 1] = e
    end
  end
  if changed then
    if #kept == 0 then
      redis.call('HDEL', KEYS[1], all[i])
    else
      redis.call('HSET', KEYS[1], all[i], table.concat(kept, ' '))
    end
  end
end
redis.call('HDEL', KEYS[2], ARGV[2])
return removed
