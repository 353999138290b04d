-- Where a class's stream stands: its epoch (created if it has none: Redis lost it or the class
-- is new) and its newest id ('0-0' when empty).
-- KEYS: 1 history, 2 epoch; ARGV: 1 epoch for a class that has none, 2 ttl ms
-- Returns {epoch, last id}
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch, 'PX', ARGV[2])
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = '0-0'
if #newest > 0 then last = newest[1][1] end
return {epoch, last}
