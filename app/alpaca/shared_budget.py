"""The account's rate budget shared by every gateway instance: one Lua script on Redis.

Each lane is one Redis hash, `{<namespace>:budget:<account>:<lane>}` (the account is a hash of
the Alpaca key id; the braces are a hash tag, so a Redis Cluster keeps it in one slot and no call
ever spans two). The script takes a cell (GCRA, `app.alpaca.budget`), records Alpaca's holds and
grants the one probe after them, atomically and on Redis's own clock (`TIME`): instances never
compare their clocks. Times are whole microseconds.

Redis is asked with the lifespan's coordination client (app/main.py), whose socket timeout
outlasts an event loop's lag in a burst; each script call is bounded here. When it fails, this
instance falls back to its share of the budget (`LaneConfig.share`, budget / expected
instances) for a retry interval before asking again, so an outage of Redis can neither stall
calls nor turn into a 429 storm.
The outage is logged once and shown by `gateway_upstream_budget_fallback{lane}`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

from loguru import logger
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from app.alpaca.budget import Grant, Lane, LaneConfig, LocalBudget, Throttle
from app.alpaca.rate_hold import PROBE_WAIT_S
from app.metrics import Metrics

# KEYS[1] the lane's hash: tat, blocked (until), probing (0/1), probe_until; microseconds.
# ARGV[1] op (take | block | answered); ARGV[2] now ('' = Redis TIME; tests pass their own).
#   take: ARGV[3] interval, [4] cells this call may find ahead, [5] longest wait it may be
#         booked for, [6] probe lease, [7] burst (for `remaining`), [8] wait while a probe is out
#   block: ARGV[3] wait
# Returns {status, wait, remaining}: status 1 granted (send after `wait`), 2 granted as the
# probe, 0 refused by the budget, -1 held by Alpaca's block, -2 held while the probe is out.
_SCRIPT = """
local key = KEYS[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local s = redis.call('HMGET', key, 'tat', 'blocked', 'probing', 'probe_until')
local tat = tonumber(s[1]) or 0
local blocked = tonumber(s[2]) or 0
local probing = s[3] == '1'
local probe_until = tonumber(s[4]) or 0
local function int(n) return string.format('%d', n) end
local function keep()
  local last = math.max(tat, blocked, probe_until)
  redis.call('PEXPIRE', key, math.ceil(math.max(last - now, 0) / 1000) + 60000)
end
local op = ARGV[1]
if op == 'block' then
  blocked = math.max(blocked, now + tonumber(ARGV[3]))
  probe_until = 0
  redis.call('HSET', key, 'blocked', int(blocked), 'probing', '1', 'probe_until', '0')
  keep()
  return {-1, blocked - now, 0}
end
if op == 'answered' then
  if probing and probe_until > 0 then
    redis.call('HSET', key, 'probing', '0', 'probe_until', '0')
  end
  return {1, 0, 0}
end
local interval, allowance = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_wait, lease, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local function remaining(t)
  return math.max(math.floor(burst - math.max(t - now, 0) / interval), 0)
end
if now < blocked then return {-1, blocked - now, remaining(tat)} end
if probing and now < probe_until then return {-2, tonumber(ARGV[8]), remaining(tat)} end
local new_tat = math.max(tat, now) + interval
local over = new_tat - now - allowance * interval
if over > max_wait then return {0, over, remaining(tat)} end
tat = new_tat
local status = 1
if probing then
  status = 2
  probe_until = now + lease
  redis.call('HSET', key, 'tat', int(tat), 'probe_until', int(probe_until))
else
  redis.call('HSET', key, 'tat', int(tat))
end
keep()
return {status, math.max(over, 0), remaining(tat)}
"""

GRANTED, PROBE, REFUSED, HELD, PROBE_OUT = 1, 2, 0, -1, -2
MIN_SCRIPT_WAIT_S = 0.5  # the least a script call is given (see SharedBudget.__init__)
_US = 1_000_000


def lane_key(namespace: str, account: str, lane: Lane) -> str:
    return f"{{{namespace}:budget:{account}:{lane}}}"


class SharedBudget:
    """One lane shared through Redis, with `fallback` (this instance's share) while it is away."""

    def __init__(
        self,
        lane: Lane,
        config: LaneConfig,
        redis: Redis | RedisCluster,
        metrics: Metrics,
        *,
        key: str,
        fallback: LocalBudget,
        probe_lease_s: float,
        timeout_s: float,
        retry_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        redis_now_us: Callable[[], int] | None = None,
    ) -> None:
        """`redis` is the gateway's one fail-fast client (its owner closes it); `timeout_s`
        bounds each script call (twice it, as the cache does, and at least MIN_SCRIPT_WAIT_S).
        `redis_now_us` replaces Redis's clock, for tests that move time by hand."""
        self.lane: Lane = lane
        self.config = config
        self._script = redis.register_script(_SCRIPT)
        self._metrics = metrics
        self._key = key
        self._fallback = fallback
        self._lease_us = math.ceil(probe_lease_s * _US)
        # Rounded up: a cell is never due sooner than the budget allows.
        self._interval_us = math.ceil(config.interval_s * _US)
        # Never below MIN_SCRIPT_WAIT_S: in a burst the event loop's own lag delays reading
        # an answer Redis gave at once, and a lane that falls back for that spends this
        # instance's share on top of the shared budget. A hung Redis costs it once per retry
        # interval, not once per call.
        self._timeout_s = max(timeout_s * 2, MIN_SCRIPT_WAIT_S)
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._redis_now_us = redis_now_us
        self._held_until = 0.0  # Alpaca's block as this instance last saw it (on `clock`)
        self._remaining = float(config.burst)
        self._down_since: float | None = None
        self._skip_until = 0.0

    @property
    def fallback_active(self) -> bool:
        return self._down_since is not None

    def wait_s(self) -> float:
        if self._down_since is not None:
            return self._fallback.wait_s()
        return max(self._held_until - self._clock(), 0.0)

    def remaining(self) -> float:
        return self._fallback.remaining() if self._down_since is not None else self._remaining

    async def take(self, priority: bool) -> Grant | Throttle:
        config = self.config
        max_wait_s = config.priority_wait_s if priority else 0.0
        reply = await self._run(
            "take",
            self._interval_us,
            config.allowance(priority),
            math.floor(max_wait_s * _US),
            self._lease_us,
            config.burst,
            math.ceil(PROBE_WAIT_S * _US),
        )
        if reply is None:
            return await self._fallback.take(priority)
        status, wait_us, self._remaining = reply
        wait_s = wait_us / _US
        if status == HELD:
            self._held_until = self._clock() + wait_s
            return Throttle("alpaca_block", wait_s)
        if status == PROBE_OUT:
            return Throttle("alpaca_block", wait_s)
        if status == REFUSED:
            return Throttle("budget", wait_s)
        return Grant(wait_s, probe=status == PROBE)

    async def block(self, wait_s: float) -> None:
        self._held_until = max(self._held_until, self._clock() + wait_s)
        await self._fallback.block(wait_s)  # kept if Redis goes away before the reset
        await self._run("block", math.ceil(wait_s * _US))

    async def probe_answered(self) -> None:
        await self._fallback.probe_answered()
        await self._run("answered")

    async def _run(self, op: str, *args: int) -> tuple[int, int, int] | None:
        """The script's answer, or None when Redis failed or is being skipped after a failure."""
        if self._down_since is not None and self._clock() < self._skip_until:
            return None
        now = "" if self._redis_now_us is None else str(self._redis_now_us())
        argv = [op, now, *(str(a) for a in args)]
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    reply = await self._script(keys=[self._key], args=argv)
                except RedisConnectionError:
                    # A pooled connection Redis closed (a restart): once more, on a fresh one.
                    reply = await self._script(keys=[self._key], args=argv)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._recovered()
        return _triple(reply)

    def _failed(self, exc: BaseException) -> None:
        self._metrics.cache_backend_error()
        self._skip_until = self._clock() + self._retry_interval_s
        if self._down_since is None:
            self._down_since = self._clock()
            self._metrics.budget_fallback(self.lane, active=True)
            share = self._fallback.config
            logger.bind(dependency="redis", lane=self.lane).warning(
                "shared {} rate budget unavailable ({}); this instance's share ({}/min) until"
                " it returns",
                self.lane,
                type(exc).__name__,
                share.per_minute,
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            outage_s = self._clock() - self._down_since
            self._down_since = None
            self._metrics.budget_fallback(self.lane, active=False)
            logger.bind(dependency="redis", lane=self.lane).info(
                "shared {} rate budget back after {:.1f}s", self.lane, outage_s
            )


def _triple(reply: Sequence[int]) -> tuple[int, int, int]:
    status, wait_us, remaining = (int(v) for v in reply)
    return status, wait_us, remaining
