-- What a client missed after `since`, bounded: at most ARGV[2] entries, and only when the
-- answer is exact. Exact means the same epoch, `since` not in the future, nothing after
-- `since` ever deleted, and not too many entries. XDEL moves max-deleted-entry-id but trimming
-- does not (Redis 7.0): when entries were trimmed (entries-added > length), a `since` older than
-- the first entry still held may have lost what followed it.
-- Otherwise complete = 0 and no entries: the client is told plainly (`recovered:false`).
-- KEYS: 1 history, 2 epoch
-- ARGV: 1 since, 2 most entries, 3 the client's epoch ('' if none), 4 epoch for a class that
--       has none, 5 ttl ms
-- Returns {complete, epoch, last id, entries}
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
if older(last, since) then return {0, epoch, last, {}} end
if last == since then return {1, epoch, last, {}} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local field = {}
for i = 1, #info, 2 do field[info[i]] = info[i + 1] end
if field['max-deleted-entry-id'] and older(since, field['max-deleted-entry-id']) then
  return {0, epoch, last, {}}
end
local first = field['first-entry']
if tonumber(field['entries-added'] or 0) > tonumber(field['length'] or 0)
    and first and older(since, first[1]) then
  return {0, epoch, last, {}}
end
local most = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '(' .. since, '+', 'COUNT', most + 1)
if #entries > most then return {0, epoch, last, {}} end
return {1, epoch, last, entries}
