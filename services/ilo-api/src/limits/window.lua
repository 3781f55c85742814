-- One fixed-window counter shared by every ilo-api instance.
-- KEYS[1]: the counter. ARGV: operation ('hit', 'check' or 'record'), limit, window (ms).
-- Returns 0 when allowed (and counted, for 'hit' and 'record'), else the ms until the window ends.
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] ~= 'record' and count >= tonumber(ARGV[2]) then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then
    return left
  end
end
if ARGV[1] == 'check' then
  return 0
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 0
