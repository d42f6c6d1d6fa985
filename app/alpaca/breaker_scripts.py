"""The fleet's breaker state in Redis: four Lua scripts, each one atomic step on one upstream.

Keys (one hash tag per upstream, so one cluster slot): `{ns:breaker:up}:state` (hash: state,
gen, open_until, opened_by, by, calls, failures, slow), `...:window` (list of the last
`window_size` outcome codes) and `...:trials` (hash: trial permit id -> lease expiry, ms).
Redis's `TIME` is the only clock. Every move bumps `gen` (to at least now in microseconds, so a
state recreated after an expiry or a flush is still newer than any copy an instance holds),
clears the window and the trial leases, and PUBLISHes the new state on the namespace's channel.

Every script takes the same leading ARGV (see `_PRELUDE`) and answers the state as
`state, gen, open_until, now, opened_by, by, calls, failures, slow, trials in flight`.
"""

from __future__ import annotations

from typing import Final

_PRELUDE: Final = """
local state_key, window_key, trials_key = KEYS[1], KEYS[2], KEYS[3]
local channel, upstream, instance = ARGV[1], ARGV[2], ARGV[3]
local window_size, minimum_calls = tonumber(ARGV[4]), tonumber(ARGV[5])
local failure_threshold, slow_threshold = tonumber(ARGV[6]), tonumber(ARGV[7])
local open_ms, trial_calls = tonumber(ARGV[8]), tonumber(ARGV[9])
local lease_ms, ttl_ms = tonumber(ARGV[10]), tonumber(ARGV[11])
local clock = redis.call('TIME')
local now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local now = math.floor(now_us / 1000)

local function save(s)
  redis.call('HSET', state_key, 'state', s.state, 'gen', string.format('%d', s.gen),
    'open_until', string.format('%d', s.open_until), 'opened_by', s.opened_by, 'by', s.by,
    'calls', s.calls, 'failures', s.failures, 'slow', s.slow)
  redis.call('PEXPIRE', state_key, ttl_ms)
end

local function load()
  local f = redis.call('HMGET', state_key, 'state', 'gen', 'open_until', 'opened_by', 'by',
    'calls', 'failures', 'slow')
  if not f[1] then
    local s = {state = 'closed', gen = now_us, open_until = 0, opened_by = '', by = instance,
      calls = 0, failures = 0, slow = 0}
    save(s)
    return s
  end
  return {state = f[1], gen = tonumber(f[2]), open_until = tonumber(f[3]), opened_by = f[4],
    by = f[5], calls = tonumber(f[6]), failures = tonumber(f[7]), slow = tonumber(f[8])}
end

local function count(s, code)
  local n = tonumber(code)
  s.calls = s.calls + 1
  s.failures = s.failures + n % 2
  s.slow = s.slow + math.floor(n / 2)
end

local function tripped(s)
  return s.failures / s.calls >= failure_threshold or s.slow / s.calls >= slow_threshold
end

local function move(s, to)
  s.gen = math.max(now_us, s.gen + 1)
  s.state, s.by = to, instance
  if to == 'open' then
    -- The window that tripped it stays in calls/failures/slow, for /ready.
    s.open_until, s.opened_by = now + open_ms, instance
  else
    s.calls, s.failures, s.slow = 0, 0, 0
  end
  redis.call('DEL', window_key, trials_key)
  save(s)
  redis.call('PUBLISH', channel, table.concat({upstream, s.state, string.format('%d', s.gen),
    string.format('%d', s.open_until), string.format('%d', now), s.opened_by, s.by, s.calls,
    s.failures, s.slow, 0}, '|'))
end

local function view(s)
  return {s.state, s.gen, s.open_until, now, s.opened_by, s.by, s.calls, s.failures, s.slow,
    redis.call('HLEN', trials_key)}
end
"""

STATE: Final = (
    _PRELUDE
    + """
return view(load())
"""
)

# ARGV[12] the generation the outcomes were admitted in; ARGV[13..] outcome codes ("0" fast
# success, "1" failure, "2" slow success, "3" slow failure), "code:permit" for trials, where
# "i" (ignored) only frees the slot. An outcome admitted under another generation is dropped:
# a pre-outage failure must not re-trip a fresh window, a closed-era call must not vote on trials.
REPORT: Final = (
    _PRELUDE
    + """
local s = load()
if s.gen == tonumber(ARGV[12]) and #ARGV >= 13 then
  if s.state == 'closed' then
    for i = 13, #ARGV do redis.call('RPUSH', window_key, ARGV[i]) end
    redis.call('LTRIM', window_key, -window_size, -1)
    redis.call('PEXPIRE', window_key, ttl_ms)
    s.calls, s.failures, s.slow = 0, 0, 0
    for _, code in ipairs(redis.call('LRANGE', window_key, 0, -1)) do count(s, code) end
    if s.calls >= minimum_calls and tripped(s) then move(s, 'open') else save(s) end
  elseif s.state == 'half_open' then
    for i = 13, #ARGV do
      local code, permit = string.match(ARGV[i], '^(%w):(.+)$')
      local expiry = tonumber(redis.call('HGET', trials_key, permit))
      if expiry then
        redis.call('HDEL', trials_key, permit)
        -- A lapsed lease's slot may already be another trial's: its result does not count.
        if expiry > now and code ~= 'i' then count(s, code) end
      end
    end
    if s.calls >= trial_calls then
      if tripped(s) then move(s, 'open') else move(s, 'closed') end
    else
      save(s)
    end
  end
end
return view(s)
"""
)

# ARGV[12] the permit id asked for. OPEN past open_until moves to HALF_OPEN here, by the first
# instance that asks. A permit is granted while live leases + reported trials < trial_calls;
# the answer adds granted (0/1), the lease (ms) and, if refused, when to ask again (ms).
TRIAL: Final = (
    _PRELUDE
    + """
local s = load()
if s.state == 'open' and now >= s.open_until then move(s, 'half_open') end
local granted, retry_ms = 0, 0
if s.state == 'open' then
  retry_ms = s.open_until - now
elseif s.state == 'half_open' then
  local leases, live, soonest = redis.call('HGETALL', trials_key), 0, nil
  for i = 1, #leases, 2 do
    local expiry = tonumber(leases[i + 1])
    if expiry <= now then
      redis.call('HDEL', trials_key, leases[i])
    else
      live = live + 1
      if soonest == nil or expiry < soonest then soonest = expiry end
    end
  end
  if live + s.calls < trial_calls then
    redis.call('HSET', trials_key, ARGV[12], string.format('%d', now + lease_ms))
    redis.call('PEXPIRE', trials_key, ttl_ms)
    granted = 1
  else
    retry_ms = math.max((soonest or now) - now, 1)
  end
end
local answer = view(s)
table.insert(answer, granted)
table.insert(answer, lease_ms)
table.insert(answer, retry_ms)
return answer
"""
)

# ARGV[12] how long (ms) this instance's own breaker still holds OPEN, decided while Redis was
# away: offered to the fleet when Redis answers again. Taken only if the fleet is CLOSED.
OPEN: Final = (
    _PRELUDE
    + """
local s = load()
if s.state == 'closed' then
  open_ms = tonumber(ARGV[12])
  move(s, 'open')
end
return view(s)
"""
)
