-- Accepts a message: gives it the room's next offset, stores it in the room's history and
-- publishes it, in one step. The frame stored and the frame published are the same bytes.
-- KEYS[1] the room's meta hash (epoch, offset), KEYS[2] its stream.
-- ARGV[1] the room's channel, ARGV[2] the frame without its place and closing brace,
-- ARGV[3] an epoch for a room without one, ARGV[4] messages kept, ARGV[5] how long (ms).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = ARGV[2] .. ',"epoch":"' .. epoch .. '","offset":' .. offset .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 'f', frame)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], 'm ' .. offset .. ' ' .. epoch .. '\n' .. frame)
return offset
