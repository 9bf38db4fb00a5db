"""The limiter's Redis scripts. GCRA (generic cell rate algorithm), one TAT per bucket.

For a limit of L units per period P (ms): the emission interval is T = P / L. A bucket stores its
theoretical arrival time (TAT). Charging c units moves TAT to max(TAT, now) + c*T; that is allowed
while the new TAT is within P of now, so a full burst of L fits and the rate holds exactly, with
no fixed-window edge doubling. Time is the Redis server's (TIME), so replica clocks don't matter.
"""

# KEYS: bucket keys..., then the reservation key, then (ARGV[7] == "1") the descriptor's pause key.
# ARGV: 1 = bucket count n, 2 = reservation payload (JSON) or "", 3 = reservation TTL ms,
#       4 = requests, 5 = tokens, 6 = the buckets' specs "T_ms,period_ms,shadow,is_tokens;..."
#       (static per rule set, so the caller builds that string once; few arguments keep the
#       client's encoding cost per decision low), 7 = "1" when a pause key is given.
# Returns: {denied, retry_after_ms, denied_index, then per bucket: admitted, remaining, reset_ms};
# a pause in force: {1, its ms left, 0} and nothing charged.
CHECK = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
if ARGV[7] == '1' then
  local paused = redis.call('PTTL', KEYS[n + 2])
  if paused > 0 then return {1, paused, 0} end
end
local requests, tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local specs = {}
for T, period, shadow, istok in string.gmatch(ARGV[6], "([^,;]+),([^,;]+),([^,;]+),([^,;]+)") do
  specs[#specs + 1] = {tonumber(T), tonumber(period), shadow == '1', istok == '1'}
end
local out = {}
local tats = {}
local olds = {}
local denied, retry, deny_idx = 0, 0, 0
for i = 1, n do
  local T, period, shadow = specs[i][1], specs[i][2], specs[i][3]
  local cost = specs[i][4] and tokens or requests
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * T
  local allow_at = new_tat - period
  local ok = allow_at <= now
  tats[i] = new_tat
  olds[i] = tat
  if not ok and not shadow then
    denied = 1
    local wait = allow_at - now
    -- a cost larger than the whole limit can never pass: say so with the full period
    if cost * T > period then wait = period end
    if wait > retry then retry, deny_idx = wait, i end
  end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = 0
  out[#out + 1] = 0
end
-- Remaining budget as it stands after this decision: charged only if everything admitted.
for i = 1, n do
  local T, period = specs[i][1], specs[i][2]
  local charged = denied == 0 and out[(i - 1) * 3 + 1] == 1
  local used = charged and tats[i] or olds[i]
  local remaining = math.floor((period - (used - now)) / T)
  if remaining < 0 then remaining = 0 end
  out[(i - 1) * 3 + 2] = remaining
  out[(i - 1) * 3 + 3] = math.ceil(used - now)
end
if denied == 0 then
  for i = 1, n do
    if out[(i - 1) * 3 + 1] == 1 and tats[i] > now then
      redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
    end
  end
  if ARGV[2] ~= '' then
    redis.call('SET', KEYS[n + 1], ARGV[2], 'PX', tonumber(ARGV[3]))
  end
end
local res = {denied, math.ceil(retry), deny_idx}
for i = 1, #out do res[#res + 1] = out[i] end
return res
"""

# KEYS[1]: reservation key. ARGV[1]: actual tokens.
# The reservation payload is {"buckets": [[key, T_ms, reserved], ...]}; each bucket's TAT moves by
# (actual - reserved) * T: a refund when the estimate was high, an extra charge when low.
# Returns the tokens refunded (negative: charged extra), or false when the reservation is gone.
SETTLE = r"""
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
redis.call('DEL', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local actual = tonumber(ARGV[1])
local res = cjson.decode(raw)
local refunded = 0
for _, b in ipairs(res.buckets) do
  local key, T, reserved = b[1], tonumber(b[2]), tonumber(b[3])
  refunded = reserved - actual
  local tat = tonumber(redis.call('GET', key))
  if tat then
    local new_tat = tat + (actual - reserved) * T
    if new_tat > now then
      redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
    else
      redis.call('DEL', key)
    end
  elseif actual > reserved then
    local new_tat = now + (actual - reserved) * T
    redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
  end
end
return refunded
"""

# KEYS[1]: the pause key. ARGV[1]: pause ms. Extends, never shortens. Returns the ms in force.
PAUSE = r"""
local ms = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
  return ms
end
return left
"""
