-- Ends a relay's lease for a user in a room; announces the user's leave when no other relay
-- holds a lease for it. A lease already swept was announced then: nothing more.
-- KEYS as in enter.lua. ARGV[1] field, ARGV[2] user id, ARGV[3] channel.
local value = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if not value then
  return 0
end
for _, field in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if string.sub(field, string.find(field, '|', 1, true) + 1) == ARGV[2] then
    return 0
  end
end
redis.call('PUBLISH', ARGV[3], string.sub(value, string.find(value, '\n', 1, true) + 1))
return 1
