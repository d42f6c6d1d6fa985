"""Per-key request quotas: a token bucket per API key, shared through Redis when configured.

`take(key_id)` spends one token and returns 0, or returns how long to wait for the next one.
The Redis bucket is one atomic Lua call per request using Redis's clock, so every gateway
instance draws from the same bucket. If Redis fails, the in-process bucket answers (fail open
to a per-instance quota, counted and logged once per outage), never an error, and Redis is
asked again once per retry interval, not on every request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

# The bucket every anonymous caller (GATEWAY_ANONYMOUS_DATA) draws from: together they weigh what
# one key may. Key ids are 12 hex digits, so no key can share it.
ANONYMOUS = "anonymous"

# KEYS[1] bucket; ARGV rate per second, burst. State: tokens and last refill time (ms).
_TAKE = """
local now = redis.call('TIME')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now_ms
tokens = math.min(burst, tokens + (now_ms - at) * rate / 1000)
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait_ms
"""


class Quotas(Protocol):
    async def take(self, key_id: str) -> float: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class MemoryQuotas:
    def __init__(
        self, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = per_minute / 60
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    async def take(self, key_id: str) -> float:
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate


class RedisQuotas:
    """The shared bucket, failing open to `fallback` the way the cache does (`RedisCache`).

    After a Redis failure the fallback answers for `retry_interval_s` without asking Redis (a
    frozen Redis would otherwise cost every keyed request a timeout); then one request tries
    Redis again. The outage is logged once, each failure counted through `on_error`. A pooled
    connection that Redis closed (a restart) is not an outage: the call is retried once, at once,
    on a fresh connection.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        per_minute: int,
        burst: int,
        *,
        namespace: str,
        fallback: MemoryQuotas,
        timeout_s: float = 0.1,
        retry_interval_s: float = 1.0,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`timeout_s` bounds each call (twice it, as the cache does, past the client's own
        socket timeout); `redis` is shared and closed by its owner."""
        self._redis = redis
        self._rate = per_minute / 60
        self._burst = burst
        self._prefix = f"{namespace}:quota:"
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._retry_interval_s = retry_interval_s
        self._on_error = on_error
        self._clock = clock
        self._down_since: float | None = None
        self._skip_until = 0.0

    async def take(self, key_id: str) -> float:
        if self._down_since is not None and self._clock() < self._skip_until:
            return await self._fallback.take(key_id)
        try:
            wait_ms = await self._take_shared(key_id)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            self._failed(exc)
            return await self._fallback.take(key_id)
        self._recovered()
        return wait_ms / 1000

    async def _take_shared(self, key_id: str) -> int:
        """Milliseconds to wait (0: a token was spent), from the shared bucket."""

        async def attempt() -> int:
            async with asyncio.timeout(self._timeout_s * 2):
                wait_ms = await self._redis.eval(
                    _TAKE, 1, self._prefix + key_id, str(self._rate), str(self._burst)
                )
            return int(wait_ms)

        try:
            return await attempt()
        except (RedisConnectionError, ConnectionError):
            # The pooled connection was closed under us (Redis restarted, an idle timeout):
            # redis-py has dropped it, so this attempt connects afresh. A Redis that is really
            # away refuses this one too, at once; a hung one times out and is not retried.
            return await attempt()

    def _failed(self, exc: BaseException) -> None:
        self._on_error()
        self._skip_until = self._clock() + self._retry_interval_s
        if self._down_since is None:
            self._down_since = self._clock()
            logger.bind(dependency="redis").warning(
                "quota store unavailable ({}); per-instance quotas until it returns",
                type(exc).__name__,
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            outage_s = self._clock() - self._down_since
            self._down_since = None
            logger.bind(dependency="redis").info(
                "quota store back after {:.1f}s; shared quotas resumed", outage_s
            )
