/**
 * The Lua scripts of `RedisAdmissionStore`. Each call touches only the keys of one tenant, all hash-tagged with the
 * tenant id, so one script covers a whole request in one slot (Redis Cluster accepts it) and runs atomically.
 *
 * Every scope of a request passes four keys, in this order: requests window (hash: bucket index → count), tokens
 * window (hash: bucket index → tokens), tokens of the day (hash: UTC day index → tokens), leases (sorted set: ticket
 * id → expiry ms). The window arithmetic mirrors `MemoryAdmissionStore` exactly (see `limits.ts`).
 *
 * Time: `ARGV[1]` is the caller's time in ms, or empty to read Redis `TIME` — one clock for every gateway process,
 * which is what makes the limit hold across hosts whose clocks drift. (Redis ≥ 5 replicates script effects, so a
 * script may read `TIME` and then write.)
 */

/** Number of keys each scope passes to the scripts. */
export const KEYS_PER_SCOPE = 4;

const PREAMBLE = `
local now = tonumber(ARGV[1])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local bucketMs = tonumber(ARGV[2])
local buckets = tonumber(ARGV[3])
local bucket = math.floor(now / bucketMs)
local day = math.floor(now / 86400000)
local windowTtl = (buckets + 2) * bucketMs
local dayTtl = math.ceil((day + 1) * 86400000 - now) + 3600000
local scopeCount = #KEYS / ${KEYS_PER_SCOPE}
`;

/**
 * Acquire. ARGV: now, bucketMs, buckets, tokens, leaseMs, ticketId, concurrencyRetryMs, then per scope rpm, tpm, tpd,
 * concurrency (empty = unlimited). Returns { ok, now, reason (1 rpm, 2 tpm, 3 tpd, 4 concurrency), scope (1-based),
 * retryAfterMs, then limit, remaining, resetMs for requests, tokens and the day (-1 when no scope limits it) }.
 */
export const ACQUIRE_SCRIPT = `${PREAMBLE}
local tokens = tonumber(ARGV[4])
local leaseMs = tonumber(ARGV[5])
local ticketId = ARGV[6]
local concurrencyRetryMs = tonumber(ARGV[7])
local oldest = bucket - buckets

local function readWindow(key)
  local flat = redis.call('HGETALL', key)
  local total = 0
  local live = {}
  local dead = {}
  for i = 1, #flat, 2 do
    local x = tonumber(flat[i])
    if x < oldest then
      dead[#dead + 1] = flat[i]
    else
      local v = tonumber(flat[i + 1])
      total = total + v
      live[#live + 1] = { x, v }
    end
  end
  if #dead > 0 then redis.call('HDEL', key, unpack(dead)) end
  return { total = total, live = live }
end

local function retryAfter(window, need, limit)
  if need > limit then return buckets * bucketMs end
  local excess = window.total + need - limit
  table.sort(window.live, function(a, b) return a[1] < b[1] end)
  local freed = 0
  for _, entry in ipairs(window.live) do
    freed = freed + entry[2]
    if freed >= excess then return (entry[1] + buckets + 1) * bucketMs - now end
  end
  return (bucket + buckets + 1) * bucketMs - now
end

local function resetMs(window)
  local newest = nil
  for _, entry in ipairs(window.live) do
    if entry[2] > 0 and (newest == nil or entry[1] > newest) then newest = entry[1] end
  end
  if newest == nil then return 0 end
  return (newest + buckets + 1) * bucketMs - now
end

local function readDay(key)
  local flat = redis.call('HGETALL', key)
  local used = 0
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) == day then used = tonumber(flat[i + 1]) else redis.call('HDEL', key, flat[i]) end
  end
  return used
end

local reason, refusedScope, wait = 0, 0, 0
local function refuse(r, s, w)
  if reason == 0 or w > wait then reason, refusedScope, wait = r, s, w end
end

local entries = {}
for s = 1, scopeCount do
  local k = (s - 1) * 4
  local a = 7 + k
  local entry = { rpm = tonumber(ARGV[a + 1]), tpm = tonumber(ARGV[a + 2]), tpd = tonumber(ARGV[a + 3]),
    concurrency = tonumber(ARGV[a + 4]) }
  if entry.rpm then
    entry.requests = readWindow(KEYS[k + 1])
    if entry.requests.total + 1 > entry.rpm then refuse(1, s, retryAfter(entry.requests, 1, entry.rpm)) end
  end
  if entry.tpm then
    entry.tokens = readWindow(KEYS[k + 2])
    if entry.tokens.total + tokens > entry.tpm then refuse(2, s, retryAfter(entry.tokens, tokens, entry.tpm)) end
  end
  if entry.tpd then
    entry.dayUsed = readDay(KEYS[k + 3])
    if entry.dayUsed + tokens > entry.tpd then refuse(3, s, (day + 1) * 86400000 - now) end
  end
  if entry.concurrency then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now)
    local held = redis.call('ZCARD', KEYS[k + 4])
    if held + 1 > entry.concurrency then
      local w = concurrencyRetryMs
      local first = redis.call('ZRANGE', KEYS[k + 4], 0, 0, 'WITHSCORES')
      if first[2] then w = math.min(w, tonumber(first[2]) - now) end
      refuse(4, s, w)
    end
  end
  entries[s] = entry
end

if reason == 0 then
  for s = 1, scopeCount do
    local k = (s - 1) * 4
    local entry = entries[s]
    if entry.rpm then
      redis.call('HINCRBY', KEYS[k + 1], bucket, 1)
      redis.call('PEXPIRE', KEYS[k + 1], windowTtl)
      entry.requests.total = entry.requests.total + 1
      entry.requests.live[#entry.requests.live + 1] = { bucket, 1 }
    end
    if entry.tpm and tokens > 0 then
      redis.call('HINCRBY', KEYS[k + 2], bucket, tokens)
      redis.call('PEXPIRE', KEYS[k + 2], windowTtl)
      entry.tokens.total = entry.tokens.total + tokens
      entry.tokens.live[#entry.tokens.live + 1] = { bucket, tokens }
    end
    if entry.tpd and tokens > 0 then
      redis.call('HINCRBY', KEYS[k + 3], day, tokens)
      redis.call('PEXPIRE', KEYS[k + 3], dayTtl)
      entry.dayUsed = entry.dayUsed + tokens
    end
    if entry.concurrency then
      redis.call('ZADD', KEYS[k + 4], now + leaseMs, ticketId)
      local ttl = leaseMs + bucketMs
      if redis.call('PTTL', KEYS[k + 4]) < ttl then redis.call('PEXPIRE', KEYS[k + 4], ttl) end
    end
  end
end

local state = { -1, -1, -1, -1, -1, -1, -1, -1, -1 }
local function pick(offset, limit, used, reset)
  local remaining = math.max(0, limit - used)
  reset = math.ceil(reset)
  if state[offset] == -1 or remaining < state[offset + 1]
    or (remaining == state[offset + 1] and reset > state[offset + 2]) then
    state[offset] = limit
    state[offset + 1] = remaining
    state[offset + 2] = reset
  end
end
for s = 1, scopeCount do
  local entry = entries[s]
  if entry.rpm then
    -- Requests reset when the next one would be admitted: now while one remains, else as retryAfter says.
    local reset = 0
    if entry.requests.total >= entry.rpm then reset = retryAfter(entry.requests, 1, entry.rpm) end
    pick(1, entry.rpm, entry.requests.total, reset)
  end
  if entry.tpm then pick(4, entry.tpm, entry.tokens.total, resetMs(entry.tokens)) end
  if entry.tpd then
    local reset = 0
    if entry.dayUsed > 0 then reset = (day + 1) * 86400000 - now end
    pick(7, entry.tpd, entry.dayUsed, reset)
  end
end

local ok = 0
if reason == 0 then ok = 1 end
return { ok, math.floor(now), reason, refusedScope, math.ceil(wait),
  state[1], state[2], state[3], state[4], state[5], state[6], state[7], state[8], state[9] }
`;

/**
 * Adjust (reconcile, release, rollback). ARGV: now, bucketMs, buckets, takenAt (ms), requestDelta, tokenDelta,
 * releaseLease (1/0), ticketId, then per scope a flag string naming the limited dimensions (`r`, `t`, `d`, `c`).
 * A delta applies to the bucket/day of the take while it is still counted (clamped at 0); otherwise a positive delta
 * is charged to the current bucket/day and a negative one is dropped. Returns nothing.
 */
export const ADJUST_SCRIPT = `${PREAMBLE}
local takenAt = tonumber(ARGV[4])
local requestDelta = tonumber(ARGV[5])
local tokenDelta = tonumber(ARGV[6])
local releaseLease = ARGV[7] == '1'
local ticketId = ARGV[8]
local takenBucket = math.floor(takenAt / bucketMs)
local takenDay = math.floor(takenAt / 86400000)

local function adjust(key, taken, current, alive, delta, ttl)
  if delta == 0 then return end
  if alive then
    local v = redis.call('HINCRBY', key, taken, delta)
    if v <= 0 then redis.call('HDEL', key, taken) else redis.call('PEXPIRE', key, ttl) end
  elseif delta > 0 then
    redis.call('HINCRBY', key, current, delta)
    redis.call('PEXPIRE', key, ttl)
  end
end

local windowAlive = takenBucket >= bucket - buckets and takenBucket <= bucket
local dayAlive = takenDay == day
for s = 1, scopeCount do
  local k = (s - 1) * 4
  local flags = ARGV[8 + s]
  if string.find(flags, 'r', 1, true) then adjust(KEYS[k + 1], takenBucket, bucket, windowAlive, requestDelta, windowTtl) end
  if string.find(flags, 't', 1, true) then adjust(KEYS[k + 2], takenBucket, bucket, windowAlive, tokenDelta, windowTtl) end
  if string.find(flags, 'd', 1, true) then adjust(KEYS[k + 3], takenDay, day, dayAlive, tokenDelta, dayTtl) end
  if releaseLease and string.find(flags, 'c', 1, true) then redis.call('ZREM', KEYS[k + 4], ticketId) end
end
return 1
`;
