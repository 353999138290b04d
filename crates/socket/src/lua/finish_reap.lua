-- Ends a clean-up: the dead server's class list goes, unless it came back meanwhile (then it
-- has re-recorded it).
-- KEYS: 1 alive, 2 classes, 3 reaper lock
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
redis.call('DEL', KEYS[3])
return 1
