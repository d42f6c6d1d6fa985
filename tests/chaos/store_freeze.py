"""PostgreSQL, then Redis, frozen (SIGSTOP: a hung host, a full disk, a stuck VM) and thawed,
under load on cached quotes with one API key.

A frozen store answers nothing and refuses nothing, so every wait on it lasts until the
caller's own timeout. Issue 13 §5 found a hung PostgreSQL dragging market data from 2,747 to
35 req/s (p99 2 s), because each key check waited on the store, and a frozen Redis adding
about 100 ms to every keyed request (the quota check had no skip window). Alpaca stays healthy
and the key was seen just before, so every answer could be a 200 (goal 0 failed), and the p99
while each store is frozen must stay within that store's configured wait (KEY_STORE_TIMEOUT_S,
REDIS_TIMEOUT_S) plus a second of slack for a loaded 2-core machine (goal). Figures: p99 and
answers per second before and during each freeze.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable

from tests.chaos.figures import Result
from tests.chaos.load import Answer, Load, Request, between, p99_ms, told
from tests.chaos.profile import Profile
from tests.chaos.redis_outage import seed_quotes
from tests.chaos.rig import Rig
from tests.performance.servers import children

SYMBOLS = tuple(f"SF{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(40))
KEY_STORE_TIMEOUT_S = 0.2  # the gateway's default, set explicitly: the goal is derived from it
REDIS_TIMEOUT_S = 0.1  # likewise
KEY_CACHE_TTL_S = 0.5  # half the default: a key check falls due inside even a 1 s freeze
SLACK_S = 1.0  # scheduling noise on a loaded 2-core machine, not a wait on the store
THAW_S = 0.5  # after each freeze: the thawed store is used again before the next step


async def run(rig: Rig, profile: Profile) -> Result:
    await seed_quotes(rig, SYMBOLS)
    env = rig.gateway_env(
        KEY_STORE_TIMEOUT_S=str(KEY_STORE_TIMEOUT_S),
        REDIS_TIMEOUT_S=str(REDIS_TIMEOUT_S),
        KEY_CACHE_TTL_S=str(KEY_CACHE_TTL_S),
    )
    gateway, key = await rig.start_keyed_gateway(env, "store-freeze", "data:read")
    headers = {"Authorization": f"Bearer {key}"}
    requests = [Request("GET", f"/v1/stocks/{s}/quote", headers) for s in SYMBOLS]
    planned_s = profile.before_s + 2 * (profile.fault_s + THAW_S)
    load = Load(
        gateway.base_url,
        workers=profile.workers,
        duration_s=planned_s + 10,
        max_requests=profile.max_requests,
    )
    try:
        sending = asyncio.create_task(load.run(lambda n: requests[n % len(requests)]))
        await asyncio.sleep(profile.before_s)
        pg_window = await _frozen(load, profile.fault_s, lambda: _postgres_pids(rig))
        await asyncio.sleep(THAW_S)
        redis_window = await _frozen(load, profile.fault_s, lambda: _redis_pids(rig))
        await asyncio.sleep(THAW_S)
        load.stop()
        answers = await sending
    finally:
        await asyncio.to_thread(gateway.stop)

    warm = profile.before_s / 2  # the start fills the caches and the key cache
    before = between(answers, warm, pg_window[0])
    pg_frozen = between(answers, *pg_window)
    redis_frozen = between(answers, *redis_window)
    result = Result("stores_frozen")
    result.goal(
        "failed_servable",
        sum(1 for a in answers if not a.ok),
        why="answers other than 200 while Alpaca could serve every one with a key seen before",
    )
    result.goal(
        "p99_pg_frozen_ms",
        p99_ms(pg_frozen),
        limit=round((KEY_STORE_TIMEOUT_S + SLACK_S) * 1000),
        why="requests waiting on the hung PostgreSQL past KEY_STORE_TIMEOUT_S",
    )
    result.goal(
        "p99_redis_frozen_ms",
        p99_ms(redis_frozen),
        limit=round((REDIS_TIMEOUT_S + SLACK_S) * 1000),
        why="requests waiting on the hung Redis past REDIS_TIMEOUT_S",
    )
    result.figures.update(
        {
            "p99_before_ms": p99_ms(before),
            "per_s_before": _rate(before, pg_window[0] - warm),
            "per_s_pg_frozen": _rate(pg_frozen, pg_window[1] - pg_window[0]),
            "per_s_redis_frozen": _rate(redis_frozen, redis_window[1] - redis_window[0]),
            "frozen_s": profile.fault_s,
            "answers": len(answers),
            "told": told(answers),
        }
    )
    return result


async def _frozen(load: Load, seconds: float, pids: Callable[[], list[int]]) -> tuple[float, float]:
    """SIGSTOP the processes `pids` names for `seconds`, then SIGCONT (always); returns the
    freeze's start and end on the load's clock."""
    frozen = pids()
    started = load.now()
    try:
        await _signal(frozen, signal.SIGSTOP)
        await asyncio.sleep(seconds)
    finally:
        await _signal(frozen, signal.SIGCONT)
    return started, load.now()


def _signal(pids: list[int], signum: signal.Signals) -> Awaitable[None]:
    def send() -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # a backend that ended on its own
                os.kill(pid, signum)

    return asyncio.to_thread(send)


def _postgres_pids(rig: Rig) -> list[int]:
    """The postmaster (first line of postmaster.pid) and every backend and helper it runs."""
    postmaster = int((rig.postgres.data_dir / "postmaster.pid").read_text().split()[0])
    return [postmaster, *children(postmaster)]


def _redis_pids(rig: Rig) -> list[int]:
    process = rig.redis.process
    if process is None:
        raise RuntimeError("the rig's redis-server is not running")
    return [process.pid]


def _rate(answers: list[Answer], seconds: float) -> float:
    return round(len(answers) / max(seconds, 1e-9), 1)
