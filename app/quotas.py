"""Per-key request quotas: a token bucket per API key, shared through Redis when configured.

`take(key_id)` spends one token and returns 0, or returns how long to wait for the next one.
The Redis bucket is one atomic Lua call per request using Redis's clock, so every gateway
instance draws from the same bucket. If Redis fails, the in-process bucket answers (fail open
to a per-instance quota, counted and logged once), never an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

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
    def __init__(
        self, redis: Redis, per_minute: int, burst: int, *, namespace: str, fallback: MemoryQuotas
    ) -> None:
        self._redis = redis
        self._rate = per_minute / 60
        self._burst = burst
        self._prefix = f"{namespace}:quota:"
        self._fallback = fallback
        self._failing = False

    async def take(self, key_id: str) -> float:
        try:
            wait_ms = await self._redis.eval(
                _TAKE, 1, self._prefix + key_id, str(self._rate), str(self._burst)
            )
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                self._failing = True
                logger.bind(dependency="redis").warning(
                    "quota store unavailable ({}); per-instance quotas until it returns",
                    type(exc).__name__,
                )
            return await self._fallback.take(key_id)
        if self._failing:
            self._failing = False
            logger.bind(dependency="redis").info("quota store back; shared quotas resumed")
        return int(wait_ms) / 1000
