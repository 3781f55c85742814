-- Sets a relay's presence lease for a user in a room, expiring by Redis's clock, and announces
-- the user when it had no lease in the room on any relay. One step: two relays racing cannot
-- both announce. Also renews leases (a lease swept while its relay was cut off is announced
-- again when the relay comes back).
-- KEYS[1] the room's presence hash (field -> member JSON, "\n", its leave envelope),
-- KEYS[2] the room's leases (field -> expiry, Unix ms); fields are "<relay>|<user id>".
-- ARGV[1] field, ARGV[2] user id, ARGV[3] value, ARGV[4] lease (ms), ARGV[5] channel,
-- ARGV[6] join envelope, ARGV[7] "1" to return every member's value.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- This relay's own lease (a renewal, or another connection of the user) settles it at once.
local mine = redis.call('ZSCORE', KEYS[2], ARGV[1]) ~= false
local present = mine
if not present then
  for _, field in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if string.sub(field, string.find(field, '|', 1, true) + 1) == ARGV[2] then
      present = true
      break
    end
  end
end
local lease = tonumber(ARGV[4])
redis.call('ZADD', KEYS[2], now + lease, ARGV[1])
if not mine then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], 2 * lease)
redis.call('PEXPIRE', KEYS[2], 2 * lease)
if not present then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
if ARGV[7] == '1' then
  return redis.call('HVALS', KEYS[1])
end
return {}
