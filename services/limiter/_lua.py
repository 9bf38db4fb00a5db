"""The limiter's Redis scripts: two algorithms, decided together in one atomic call.

``window`` (the default): a sliding window of W = 60 sub-buckets per period P. A bucket key is a
hash of sub-bucket index -> units. A charge of c is admitted while the units of the last W + 1
sub-buckets (the current one included, the oldest one whole) plus c stay within the limit L.
Those W + 1 sub-buckets cover every window of length P that ends now, so **no window of length P
ever holds more than L** (a unit may be refused up to P / W earlier than a perfect log would).

``gcra``: the generic cell rate algorithm, one theoretical arrival time (TAT) per bucket. With
emission interval T = P / L and a burst of B units: a charge of c moves TAT to
max(TAT, now) + c*T and is admitted while TAT - now <= B*T — a steady rate of L per P, at most B
ahead of it. In any window of length P it admits at most L + B.

Time is the Redis server's (TIME), so replica clocks don't matter.
"""

# KEYS: bucket keys..., then the reservation key, then (ARGV[7] == "1") the descriptor's pause key.
# ARGV: 1 = bucket count n, 2 = reservation payload (JSON) or "", 3 = reservation TTL ms,
#       4 = requests, 5 = tokens, 6 = the buckets' specs "kind,a,b,shadow,is_tokens;..." where
#       kind g: a = T ms, b = capacity ms (B*T); kind w: a = period ms, b = limit (static per rule
#       set, so the caller builds that string once), 7 = "1" when a pause key is given.
# Returns: {denied, retry_after_ms, denied_index, then per bucket: admitted, remaining, reset_ms,
# the window sub-bucket charged (0 for GCRA or when nothing was charged)};
# a pause in force: {1, its ms left, 0} and nothing charged. A window bucket's charge is recorded
# in the reservation (its sub-bucket index), so a settle refunds exactly where it charged.
CHECK = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
if ARGV[7] == '1' then
  local paused = redis.call('PTTL', KEYS[n + 2])
  if paused > 0 then return {1, paused, 0} end
end
local W = 60
local requests, tokens = tonumber(ARGV[4]), tonumber(ARGV[5])
local specs = {}
for kind, a, b, shadow, istok in string.gmatch(ARGV[6], "([gw]),([^,;]+),([^,;]+),([^,;]+),([^,;]+)") do
  specs[#specs + 1] = {kind, tonumber(a), tonumber(b), shadow == '1', istok == '1'}
end
local out, state = {}, {}
local denied, retry, deny_idx = 0, 0, 0
for i = 1, n do
  local kind, a, b, shadow = specs[i][1], specs[i][2], specs[i][3], specs[i][4]
  local cost = specs[i][5] and tokens or requests
  local ok, wait, remaining, reset
  if kind == 'g' then
    local T, cap = a, b
    local tat = tonumber(redis.call('GET', KEYS[i])) or now
    if tat < now then tat = now end
    local new_tat = tat + cost * T
    ok = new_tat - now <= cap
    wait = new_tat - cap - now
    -- a cost larger than the whole burst can never pass: say so with the full capacity
    if cost * T > cap then wait = cap end
    state[i] = {tat, new_tat}
  else
    local period, limit = a, b
    local width = period / W
    local idx = math.floor(now / width)
    local h = redis.call('HGETALL', KEYS[i])
    local used, live, stale = 0, {}, {}
    for j = 1, #h, 2 do
      local bi, units = tonumber(h[j]), tonumber(h[j + 1])
      if bi < idx - W then stale[#stale + 1] = h[j] else
        used = used + units
        live[#live + 1] = {bi, units}
      end
    end
    ok = used + cost <= limit
    wait = 0
    if not ok then
      if cost > limit then wait = period else
        -- until enough of the oldest sub-buckets have left the covering window
        table.sort(live, function(x, y) return x[1] < y[1] end)
        local need = used + cost - limit
        for _, e in ipairs(live) do
          need = need - e[2]
          if need <= 0 then wait = (e[1] + W + 1) * width - now break end
        end
      end
    end
    state[i] = {used, idx, stale, width, period, limit, live}
  end
  if not ok and not shadow then
    denied = 1
    if wait > retry then retry, deny_idx = wait, i end
  end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = 0
  out[#out + 1] = 0
  out[#out + 1] = 0
end
-- Remaining budget as it stands after this decision: charged only if everything admitted.
for i = 1, n do
  local kind, a, b = specs[i][1], specs[i][2], specs[i][3]
  local charged = denied == 0 and out[(i - 1) * 4 + 1] == 1
  local cost = specs[i][5] and tokens or requests
  local remaining, reset
  if kind == 'g' then
    local used = charged and state[i][2] or state[i][1]
    remaining = math.floor((b - (used - now)) / a)
    reset = math.ceil(used - now)
  else
    local st = state[i]
    local used = st[1] + (charged and cost or 0)
    remaining = st[6] - used
    reset = 0
    if used > 0 then
      local oldest = st[2]
      for _, e in ipairs(st[7]) do if e[1] < oldest then oldest = e[1] end end
      reset = math.ceil((oldest + W + 1) * st[4] - now)
    end
  end
  if remaining < 0 then remaining = 0 end
  out[(i - 1) * 4 + 2] = remaining
  out[(i - 1) * 4 + 3] = reset
end
if denied == 0 then
  local payload = ARGV[2] ~= '' and cjson.decode(ARGV[2]) or nil
  for i = 1, n do
    if out[(i - 1) * 4 + 1] == 1 then
      local cost = specs[i][5] and tokens or requests
      if specs[i][1] == 'g' then
        local tat = state[i][2]
        if tat > now then
          redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
        end
      elseif cost > 0 then
        local st = state[i]
        redis.call('HINCRBY', KEYS[i], st[2], cost)
        if #st[3] > 0 then redis.call('HDEL', KEYS[i], unpack(st[3])) end
        redis.call('PEXPIRE', KEYS[i], math.ceil(st[5] + 2 * st[4]))
        out[(i - 1) * 4 + 4] = st[2]
        if payload then
          for _, e in ipairs(payload.buckets) do
            if e[1] == KEYS[i] and e[2] == 'w' then e[4] = st[2] end
          end
        end
      end
    end
  end
  if payload then
    redis.call('SET', KEYS[n + 1], cjson.encode(payload), 'PX', tonumber(ARGV[3]))
  end
end
local res = {denied, math.ceil(retry), deny_idx}
for i = 1, #out do res[#res + 1] = out[i] end
return res
"""

# One bucket's charge moved by (actual - reserved) units. A bucket entry is [key, T_ms, reserved]
# for a GCRA bucket, whose TAT moves by (actual - reserved) * T; [key, "w", reserved, sub-bucket]
# for a window bucket, whose sub-bucket of the charge moves by (actual - reserved), never below 0.
# A refund when the estimate was high, an extra charge when low. Returns reserved - actual.
_ADJUST = r"""
local function adjust(b, actual, now)
  local key, reserved = b[1], tonumber(b[3])
  if b[2] == 'w' then
    if b[4] and redis.call('EXISTS', key) == 1 then
      local v = redis.call('HINCRBY', key, b[4], actual - reserved)
      if v <= 0 then redis.call('HDEL', key, b[4]) end
    end
  else
    local T = tonumber(b[2])
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
  return reserved - actual
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

# KEYS[1]: reservation key, KEYS[2..]: the token buckets it may adjust (a bucket of the payload not
# declared is left alone: a script touches only the keys it declares). ARGV[1]: actual tokens.
# The reservation payload is {"buckets": [entry, ...]} (entries as _ADJUST's).
# Returns the tokens refunded (negative: charged extra), or false when the reservation is gone.
SETTLE = _ADJUST + r"""
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
redis.call('DEL', KEYS[1])
local declared = {}
for i = 2, #KEYS do declared[KEYS[i]] = true end
local actual = tonumber(ARGV[1])
local refunded = 0
for _, b in ipairs(cjson.decode(raw).buckets) do
  if declared[b[1]] then refunded = adjust(b, actual, now) end
end
return refunded
"""

# Gives back everything one shard's CHECK charged, when a decision spanning several shards was
# refused by another one. KEYS[1]: that CHECK's reservation key (deleted) or a placeholder,
# KEYS[2..]: the buckets; ARGV[1]: JSON entries (as _ADJUST's, reserved = what was charged).
REFUND = _ADJUST + r"""
redis.call('DEL', KEYS[1])
local declared = {}
for i = 2, #KEYS do declared[KEYS[i]] = true end
for _, b in ipairs(cjson.decode(ARGV[1])) do
  if declared[b[1]] then adjust(b, 0, now) end
end
return 1
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
