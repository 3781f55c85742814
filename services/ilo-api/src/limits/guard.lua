-- A username's failed logins, shared by every ilo-api instance (see limits/memory.rs, UsernameGuard).
-- KEYS[1]: hash {failures, last (ms)}; KEYS[2]: list of addresses the owner logged in from.
-- ARGV: operation ('check', 'failed' or 'succeeded'), address, threshold, failures kept for (ms),
-- longest delay (ms), addresses kept.
-- 'check' returns the ms the address must still wait (0: go ahead); the others return 0.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local op, address = ARGV[1], ARGV[2]
local threshold, kept_for = tonumber(ARGV[3]), tonumber(ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
if op == 'check' then
  local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
  if last < 0 or failures < threshold or now - last >= kept_for then
    return 0
  end
  if redis.call('LPOS', KEYS[2], address) then
    return 0
  end
  local delay = math.min(1000 * 2 ^ math.min(failures - threshold, 10), tonumber(ARGV[5]))
  return math.max(0, delay - (now - last))
elseif op == 'failed' then
  if last >= 0 and now - last >= kept_for then
    redis.call('HSET', KEYS[1], 'failures', 0)
  end
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  redis.call('HSET', KEYS[1], 'last', now)
  redis.call('PEXPIRE', KEYS[1], kept_for)
else
  redis.call('DEL', KEYS[1])
  redis.call('LREM', KEYS[2], 0, address)
  redis.call('LPUSH', KEYS[2], address)
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[6]) - 1)
  redis.call('PEXPIRE', KEYS[2], 30 * 24 * 3600 * 1000)
end
return 0
