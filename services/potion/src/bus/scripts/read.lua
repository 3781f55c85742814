-- Where a room's history stands, and the messages asked for: those after ARGV[4] when ARGV[3]
-- is the room's epoch, otherwise the last ARGV[5]. A room without history gets an epoch.
-- KEYS[1] the room's meta hash, KEYS[2] its stream.
-- ARGV[1] an epoch for a room without one, ARGV[2] how long history is kept (ms).
-- Returns {epoch, offset, id, frame, id, frame, ...}, oldest first.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local entries = {}
if epoch == ARGV[3] then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[4] .. '-0', '+')
elseif tonumber(ARGV[5]) > 0 then
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[5])
  for i = #newest, 1, -1 do entries[#entries + 1] = newest[i] end
end
local out = {epoch, offset}
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][2]
end
return out
