"""Fixtures for tests that share the real Redis: a fresh key namespace per test, and a plain
client on it that deletes the namespace's keys afterwards. A test module imports both and
names them in `__all__`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
async def raw_redis(redis_url: str, namespace: str) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
