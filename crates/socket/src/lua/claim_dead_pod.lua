-- Takes the clean-up of a server whose heartbeat expired: exactly one survivor wins, and none
-- if the server is alive again. Keys of one server share its hash tag.
-- KEYS: 1 alive, 2 reaper lock; ARGV: 1 this server, 2 lock ttl ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
