"""Every process under test, started together and checked before anything is measured.

Per server (uvicorn and/or granian): the gateway with its in-process cache, the gateway with the
Redis cache (127.0.0.1:6379, a namespace of its own, deleted afterwards), the gateway with its
data breaker held open, and the bare Starlette app answering with a recorded cached-quote
answer of the first gateway. Plus one nginx proxy_cache. All pinned to the servers' core; each
is idle while another is loaded, so the rounds can alternate between them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.performance.gateway import bare_app, gateway
from tests.performance.nginx import NginxCache
from tests.performance.runners import Cores
from tests.performance.servers import ServedApp

REDIS_URL = "redis://127.0.0.1:6379/0"
QUOTES_PATH = "/v2/stocks/quotes/latest"
SINGLE = "/v1/stocks/AAPL/quote"
BATCH_SYMBOLS = [f"B{i:03d}" for i in range(100)]
BATCH = "/v1/stocks/quotes?symbols=" + ",".join(BATCH_SYMBOLS)
COLD = "/v1/stocks/COLD/quote"  # never cached: with the breaker open, always 503
BREAKER_OPEN_S = 3600  # longer than any run: no half-open probe while it is measured
BREAKER_DRIVE_MAX = 40  # distinct failing symbols tried before giving up on opening a breaker
REDIS_HINT = "apt-get install -y redis-server && redis-server --bind 127.0.0.1 --daemonize yes"


@dataclass
class Stack:
    """The processes measured under one server."""

    server: str
    cached: ServedApp
    redis: ServedApp
    breaker: ServedApp
    bare: ServedApp | None = None

    def workers(self) -> Iterator[tuple[str, ServedApp]]:
        for role in ("cached", "redis", "breaker", "bare"):
            app: ServedApp | None = getattr(self, role)
            if app is not None:
                yield role, app


class Fleet:
    def __init__(
        self,
        emulator: EmulatorProcess,
        control: EmulatorControl,
        cores: Cores,
        servers: list[str],
    ) -> None:
        self.emulator = emulator
        self.control = control
        self.cores = cores
        self.namespace = f"bench-{os.getpid()}"
        redis_env = {"REDIS_URL": REDIS_URL, "CACHE_NAMESPACE": self.namespace}
        breaker_env = {"BREAKER_OPEN_DURATION_S": str(BREAKER_OPEN_S)}
        self.stacks = [
            Stack(
                server,
                cached=gateway(f"gateway ({server})", server, emulator, cores),
                redis=gateway(f"gateway, Redis ({server})", server, emulator, cores, redis_env),
                breaker=gateway(
                    f"gateway, open breaker ({server})", server, emulator, cores, breaker_env
                ),
            )
            for server in servers
        ]
        self.nginx = NginxCache(emulator, cores)

    async def start(self, stack: AsyncExitStack) -> None:
        """Start, check, open the breakers, then start the bare apps; all stopped by ``stack``."""
        gateways = [app for each in self.stacks for app in (each.cached, each.redis, each.breaker)]
        for app in gateways:  # stop() also deletes each one's temporary store, started or not
            stack.push_async_callback(app.stop)
        stack.push_async_callback(self.nginx.stop)
        await check_redis()
        stack.push_async_callback(self._drop_redis_namespace)
        await asyncio.gather(*(app.__aenter__() for app in gateways), self.nginx.__aenter__())
        await self._open_breakers()
        await self._check_gateways()
        await self._start_bare_apps(stack)

    async def _open_breakers(self) -> None:
        """Failing upstream answers until each breaker gateway's data breaker is open; the fault
        is cleared at once, before any other process asks upstream for anything."""
        await self.control.add_fault(QUOTES_PATH, "status_500")
        try:
            for each in self.stacks:
                for i in range(1, BREAKER_DRIVE_MAX + 1):
                    # Distinct symbols, so no answer comes from the negative cache.
                    await each.breaker.get(f"/v1/stocks/F{i:03d}/quote")
                    ready = (await each.breaker.get("/ready")).json()
                    if ready["breakers"]["data"]["state"] == "open":
                        break
                else:
                    raise RuntimeError(f"{each.breaker.name}: the data breaker did not open")
        finally:
            await self.control.clear_faults()

    async def _check_gateways(self) -> None:
        for each in self.stacks:
            for app, backend in ((each.cached, "memory"), (each.redis, "redis")):
                cache = (await app.get("/ready")).json()["dependencies"]["cache"]
                if cache["backend"] != backend or cache.get("state", "up") != "up":
                    raise RuntimeError(f"{app.name}: expected the {backend} cache, got {cache}")
                for path in (SINGLE, BATCH):
                    status = (await app.get(path)).status_code
                    if status != 200:
                        raise RuntimeError(f"{app.name}: GET {path} answered {status}")
            await expect_circuit_open(each.breaker)

    async def _start_bare_apps(self, stack: AsyncExitStack) -> None:
        """Record a cached-quote answer of the gateway; the bare apps send exactly those bytes."""
        for _ in range(3):  # a 1 s TTL may expire between two requests: then the next one hits
            response = await self.stacks[0].cached.get(SINGLE)
            if response.headers.get("cache-status") == "gateway; hit":
                break
        else:
            raise RuntimeError(f"expected a cache hit to record, got {response.headers}")
        wanted = ("content-type", "cache-status", "x-request-id")
        headers = {h: response.headers[h] for h in wanted}
        for each in self.stacks:
            name = f"bare Starlette ({each.server})"
            each.bare = bare_app(name, each.server, response.content, headers, self.cores)
            stack.push_async_callback(each.bare.stop)
            await each.bare.__aenter__()
            if (await each.bare.get(SINGLE)).content != response.content:
                raise RuntimeError(f"{each.bare.name} does not send the recorded bytes")

    async def _drop_redis_namespace(self) -> None:
        client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2.0)
        try:
            keys = [key async for key in client.scan_iter(match=f"{self.namespace}:*")]
            if keys:
                await client.delete(*keys)
        except (RedisError, OSError) as exc:
            print(f"note: the bench's Redis keys ({self.namespace}:*) were not deleted: {exc}")
        finally:
            await client.aclose()


async def check_redis() -> None:
    """The Redis row is not optional: no server, no run (never a silently missing row)."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise SystemExit(
            f"make bench needs a Redis server on 127.0.0.1:6379 ({exc}). Start one: {REDIS_HINT}"
        ) from exc
    finally:
        await client.aclose()


async def expect_circuit_open(app: ServedApp) -> None:
    response = await app.get(COLD)
    if response.status_code != 503 or response.json().get("code") != "CIRCUIT_OPEN":
        raise RuntimeError(f"{app.name}: GET {COLD} -> {response.status_code} {response.text}")
