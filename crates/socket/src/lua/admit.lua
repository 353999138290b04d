-- Before an upgrade: is the user kept out of the class, or over their handshake budget?
-- Counted in Redis, so reconnecting to another server resets nothing.
-- KEYS: 1 handshake counter, 2 kicked marker; ARGV: 1 window ms, 2 most handshakes per window
-- Returns 'ok' | 'kicked' | 'busy'
if redis.call('EXISTS', KEYS[2]) == 1 then return 'kicked' end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return 'busy' end
return 'ok'
