"""A Redis that answers late: a Lua script keeps the server busy, so every answer meanwhile
comes that much later (as when a burst keeps the gateway's event loop from reading them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

# Keeps Redis busy for ARGV[1] microseconds: every answer meanwhile comes that much later.
BUSY = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1])
return 1
"""


@contextlib.asynccontextmanager
async def redis_kept_busy(url: str) -> AsyncIterator[tuple[Redis, asyncio.Task[None]]]:
    """Redis at `url` running BUSY for 0.3 s, started before the block: the block gets the
    client that runs it (no timeout: it waits out its own script) and the script's task, to
    await. The client is closed on the way out."""
    raw = Redis.from_url(url)  # no timeout: it waits out its own script

    async def keep_redis_busy() -> None:
        await raw.eval(BUSY, 0, "300000")

    try:
        busy = asyncio.create_task(keep_redis_busy())
        await asyncio.sleep(0.02)  # the script is running: Redis answers nobody for 0.3 s
        yield raw, busy
    finally:
        await raw.aclose()
