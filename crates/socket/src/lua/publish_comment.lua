-- Stores a comment, gives it its id and publishes its frame in one step, so nothing is ever in
-- history but unpublished or the reverse. Refuses a resend of a `ref` already stored (the
-- client's retry after `unavailable`), a user over their budget and, in slow mode, a class
-- over its rate.
-- KEYS: 1 history, 2 epoch, 3 user budget, 4 class slow-mode bucket, 5 ref (optional)
-- ARGV: 1 history cap, 2 frame tail, 3 channel, 4 frame prefix, 5 history ttl ms,
--       6 user interval ms, 7 user burst, 8 class interval ms (0: off), 9 class burst,
--       10 dedupe window ms, 11 epoch for a class that has none
-- Returns {'ok', id} | {'duplicate', id} | {'rate_limited', wait ms} | {'slow_mode', wait ms}
local now = now_ms()
if KEYS[5] then
  local seen = redis.call('GET', KEYS[5])
  if seen then return {'duplicate', seen} end
end
local user_ok, user_tat = gcra(KEYS[3], tonumber(ARGV[6]), tonumber(ARGV[7]), now)
if not user_ok then return {'rate_limited', tostring(user_tat)} end
local class_ok, class_tat = gcra(KEYS[4], tonumber(ARGV[8]), tonumber(ARGV[9]), now)
if not class_ok then return {'slow_mode', tostring(class_tat)} end
gcra_commit(KEYS[3], user_tat, now)
gcra_commit(KEYS[4], class_tat, now)
if not redis.call('SET', KEYS[2], ARGV[11], 'NX', 'PX', ARGV[5]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'f', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[3], ARGV[4] .. id .. '",' .. ARGV[2])
if KEYS[5] then redis.call('SET', KEYS[5], id, 'PX', ARGV[10]) end
return {'ok', id}
