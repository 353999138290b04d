-- Shared by the scripts below (prepended to each): the server's clock, stream id comparison
-- without floating point (ids are two u64s), a GCRA token bucket, and member lists.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function cmp_decimal(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

-- Whether stream id a is older than b.
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = cmp_decimal(am, bm)
  if c ~= 0 then return c < 0 end
  return cmp_decimal(as, bs) < 0
end

-- GCRA: may one more event happen now at `interval` ms apart with `burst` at once? Returns
-- (true, new state) or (false, ms to wait). An interval of 0 means no limit.
local function gcra(key, interval, burst, now)
  if interval <= 0 then return true, nil end
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local next_tat = tat + interval
  local over = next_tat - now - interval * burst
  if over > 0 then return false, math.ceil(over) end
  return true, next_tat
end

local function gcra_commit(key, next_tat, now)
  if next_tat then redis.call('SET', key, string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1) end
end

-- A `where` value is the user's connections, oldest first, separated by spaces.
local function members(list)
  local out = {}
  if list then
    for e in string.gmatch(list, '%S+') do out[#out + 1] = e end
  end
  return out
end

local function pod_of(member)
  return string.match(member, '^(.*)#%d+$')
end
