-- What a client missed after `since`, bounded: at most ARGV[2] entries, and only when the
-- answer is exact. Exact means the same epoch, `since` held by the stream (or known lost, see
-- below), nothing after `since` ever deleted or lost, and not too many entries. XDEL moves
-- max-deleted-entry-id but trimming does not (Redis 7.0): when entries were trimmed
-- (entries-added > length), a `since` older than the first entry still held may have lost what
-- followed it.
-- A failover to a replica that had not yet received the newest comments leaves a stream without
-- some that were delivered. The server that delivered them notices when it catches its rooms up
-- (ARGV[6] = '1': it vouches that `since`, of the epoch ARGV[3], was in the stream) and records the newest such id in
-- KEYS[3]: a `since` before it may have missed one the stream no longer has, so it is not exact;
-- `since` equal to it saw everything up to it. A client's own `since` that the stream does not
-- hold is never taken as proof of a loss.
-- Otherwise complete = 0 and no entries: the client is told plainly (`recovered:false`).
-- KEYS: 1 history, 2 epoch, 3 newest id known lost
-- ARGV: 1 since, 2 most entries, 3 the client's epoch ('' if none), 4 epoch for a class that
--       has none, 5 ttl ms, 6 '1' when this server delivered `since` itself
-- Returns {complete (1, 0, or -1: not, because of a recorded loss), epoch, last id, entries};
-- last id is never older than a complete `since`
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[2], epoch, 'PX', ARGV[5])
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last = '0-0'
if #newest > 0 then last = newest[1][1] end
local since = ARGV[1]
if ARGV[3] ~= '' and ARGV[3] ~= epoch then return {0, epoch, last, {}} end
local lost = redis.call('GET', KEYS[3])
if lost and older(since, lost) then return {-1, epoch, last, {}} end

local info = nil
if last ~= '0-0' then
  local reply = redis.call('XINFO', 'STREAM', KEYS[1])
  info = {}
  for i = 1, #reply, 2 do info[reply[i]] = reply[i + 1] end
end
if info and tonumber(info['entries-added'] or 0) > tonumber(info['length'] or 0)
    and info['first-entry'] and older(since, info['first-entry'][1]) then
  return {0, epoch, last, {}}
end
if since ~= '0-0' and since ~= lost and #redis.call('XRANGE', KEYS[1], since, since) == 0 then
  -- Only a `since` of this epoch can be vouched for: an empty restart also makes a new epoch.
  if ARGV[6] ~= '1' or ARGV[3] == '' then return {0, epoch, last, {}} end
  redis.call('SET', KEYS[3], since, 'PX', ARGV[5])
end
if not older(since, last) then return {1, epoch, since, {}} end
if info['max-deleted-entry-id'] and older(since, info['max-deleted-entry-id']) then
  return {0, epoch, last, {}}
end
local most = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '(' .. since, '+', 'COUNT', most + 1)
if #entries > most then return {0, epoch, last, {}} end
return {1, epoch, last, entries}
