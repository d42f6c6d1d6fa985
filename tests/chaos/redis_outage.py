"""Redis killed (SIGKILL) and restarted empty on the same port, under load on cached quotes.

Alpaca stays healthy throughout, so every answer could have been served: any answer that is
not a 200 is a failure the gateway caused (goal 0). The account has Alpaca's basic budget, 200
calls a minute, and the gateway its default budget of the same size; the load asks for as many
symbols as that budget carries at the quote TTL, with a quarter to spare. A gateway that loses
its cache with Redis spends the budget and answers UPSTREAM_RATE_LIMITED (issue 13 §5: 68% of
answers did, still 20 s after Redis returned); the near cache and the instance's share of the
budget must keep every answer a 200. Figures: p99 before and during the outage, the answers
rate-limited, seconds from Redis answering again until the gateway writes its cache there
again, the gateway's own view (`gateway_dependency_up{dependency="redis"}` back to 1), and the
upstream call rate before and during the outage (the near cache keeps it level).
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from redis.asyncio import Redis

from tests.chaos.figures import Result
from tests.chaos.load import Answer, Load, Request, between, p99_ms, told
from tests.chaos.profile import Profile
from tests.chaos.rig import Rig, sample, scrape
from tests.samples import QUOTE

# Alpaca's basic plan, and the gateway's default ALPACA_DATA_BUDGET_PER_MINUTE / _BURST.
BUDGET_PER_MINUTE = 200
BUDGET_BURST = 20
QUOTE_TTL_S = 1.0  # CACHE_QUOTE_TTL_S, the default: each symbol costs 60 / TTL calls a minute
BUDGET_SETTINGS = {
    "ALPACA_DATA_BUDGET_PER_MINUTE": str(BUDGET_PER_MINUTE),
    "ALPACA_DATA_BUDGET_BURST": str(BUDGET_BURST),
    "CACHE_QUOTE_TTL_S": str(QUOTE_TTL_S),
}
SYMBOL_COUNT = max(1, int(BUDGET_PER_MINUTE * 0.75 / (60 / QUOTE_TTL_S)))
SYMBOLS = tuple(f"RQ{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(SYMBOL_COUNT))
CACHE_KEYS = "gw:v1:*"  # the value cache's keys (CACHE_NAMESPACE gw); quotas use gw:quota:*
BACK_TIMEOUT_S = 15.0
POLL_S = 0.05


async def seed_quotes(rig: Rig, symbols: tuple[str, ...]) -> None:
    """Known symbols with live quotes: a seeded walk from a stored one, timestamps on the clock."""
    await rig.control.set_state(quotes=dict.fromkeys(symbols, QUOTE), assets=list(symbols))
    await rig.control.set_random_walk(7, step_ms=200)


async def run(rig: Rig, profile: Profile) -> Result:
    await seed_quotes(rig, SYMBOLS)
    await rig.control.configure(rate_limit_per_minute=BUDGET_PER_MINUTE)
    env = rig.gateway_env(**BUDGET_SETTINGS)
    gateway, key = await rig.start_keyed_gateway(env, "redis-restart", "data:read")
    headers = {"Authorization": f"Bearer {key}"}
    requests = [Request("GET", f"/v1/stocks/{s}/quote", headers) for s in SYMBOLS]
    planned_s = profile.before_s + profile.fault_s + profile.after_s + BACK_TIMEOUT_S
    load = Load(
        gateway.base_url,
        workers=profile.workers,
        duration_s=planned_s,
        max_requests=profile.max_requests,
    )
    try:
        sending = asyncio.create_task(load.run(lambda n: requests[n % len(requests)]))
        async with httpx.AsyncClient(timeout=5) as metrics_client:
            await asyncio.sleep(profile.before_s)
            calls_before = await rig.data_calls()
            killed_at = load.now()
            await rig.kill_redis()
            down_at = await _wait_dependency(metrics_client, gateway.base_url, load, up=False)
            await asyncio.sleep(max(0.0, profile.fault_s - (load.now() - killed_at)))
            calls_outage = await rig.data_calls() - calls_before
            await rig.restart_redis()
            back_at = load.now()
            used_again_at = await _first_cache_write(rig.redis.url, load, since=back_at)
            up_at = await _wait_dependency(metrics_client, gateway.base_url, load, up=True)
            await asyncio.sleep(max(0.0, profile.after_s - (load.now() - back_at)))
            load.stop()
            answers = await sending
    finally:
        await asyncio.to_thread(gateway.stop)

    warm = profile.before_s / 2  # the start fills the cache; its misses are not the steady rate
    before = between(answers, warm, killed_at)
    outage = between(answers, killed_at, back_at)
    outage_s = back_at - killed_at
    result = Result("redis_restart")
    result.goal(
        "failed_servable",
        sum(1 for a in answers if not a.ok),
        why="answers other than 200 while Alpaca could serve every one",
    )
    after = between(answers, back_at, float("inf"))
    result.figures.update(
        {
            "p99_before_ms": p99_ms(before),
            "p99_outage_ms": p99_ms(outage),
            "cache_back_s": "never" if used_again_at is None else round(used_again_at - back_at, 2),
            "redis_up_metric_s": "never" if up_at is None else round(up_at - back_at, 2),
            "down_seen_s": "never" if down_at is None else round(down_at - killed_at, 2),
            "upstream_calls_per_s_before": round(calls_before / max(killed_at, 1e-9), 1),
            "upstream_calls_per_s_outage": round(calls_outage / max(outage_s, 1e-9), 1),
            "rate_limited_outage": _rate_limited(outage),
            "rate_limited_after": _rate_limited(after),
            "budget_per_min": BUDGET_PER_MINUTE,
            "symbols": len(SYMBOLS),
            "answers": len(answers),
            "outage_s": round(outage_s, 1),
            "told": told(answers),
        }
    )
    return result


def _rate_limited(answers: list[Answer]) -> int:
    return sum(1 for a in answers if a.code == "UPSTREAM_RATE_LIMITED")


async def _first_cache_write(url: str, load: Load, *, since: float) -> float | None:
    """When the restarted (empty) Redis first holds a value-cache key, on the load's clock."""
    client = Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        while load.now() - since < BACK_TIMEOUT_S:
            with contextlib.suppress(OSError, TimeoutError):
                if await client.keys(CACHE_KEYS):
                    return load.now()
            await asyncio.sleep(POLL_S)
    finally:
        await client.aclose()
    return None


async def _wait_dependency(
    client: httpx.AsyncClient, base_url: str, load: Load, *, up: bool
) -> float | None:
    """When the gateway's gateway_dependency_up{redis} said `up`, on the load's clock."""
    since = load.now()
    while load.now() - since < BACK_TIMEOUT_S:
        samples = await scrape(client, base_url)
        if sample(samples, "gateway_dependency_up", dependency="redis") == (1.0 if up else 0.0):
            return load.now()
        await asyncio.sleep(POLL_S)
    return None
