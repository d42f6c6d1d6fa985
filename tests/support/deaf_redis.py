"""Redis as a stream relay's listener sees it (app/streams/leader.py): the first `failures`
subscribes fail with `error`, then it listens, and nothing is ever relayed. For unit tests of
what a follower does when its relay subscription fails."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError


class PubSub:
    def __init__(self, redis: DeafRedis) -> None:
        self._redis = redis

    async def __aenter__(self) -> PubSub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self._redis.subscribes += 1
        if self._redis.subscribes <= self._redis.failures:
            raise self._redis.error("Redis did not answer the subscribe")

    async def get_message(self, **options: object) -> None:
        await asyncio.Event().wait()  # nothing relayed: the tests watch gaps and counts


@dataclass
class DeafRedis:
    failures: int = 0
    error: type[Exception] = RedisConnectionError
    subscribes: int = 0

    def pubsub(self, **options: Any) -> PubSub:
        return PubSub(self)
