-- Removes the leases that expired by Redis's clock (a relay that stopped renewing them) and
-- announces the leave of each user left with no lease in the room. Any relay may run it; one
-- step, so each leave is announced once.
-- KEYS as in enter.lua. ARGV[1] channel.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired == 0 then
  return 0
end
local function user(field)
  return string.sub(field, string.find(field, '|', 1, true) + 1)
end
for _, field in ipairs(expired) do
  redis.call('ZREM', KEYS[2], field)
end
local remaining = {}
for _, field in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  remaining[user(field)] = true
end
local announced = 0
for _, field in ipairs(expired) do
  local value = redis.call('HGET', KEYS[1], field)
  redis.call('HDEL', KEYS[1], field)
  local id = user(field)
  if value and not remaining[id] then
    remaining[id] = true
    redis.call('PUBLISH', ARGV[1], string.sub(value, string.find(value, '\n', 1, true) + 1))
    announced = announced + 1
  end
end
return announced
