"""Many gateway instances on one Redis are, towards Alpaca, one client: one upstream call per
cold key whichever instances are asked, a batch whose symbols other instances are fetching costs
each symbol one call, a fetch whose instance is killed is taken over within the lease, and a Redis
that goes away mid-way costs coordination, never an answer.

The fleet is real: `python -m app.serve` processes behind nginx (tests/support/fleet.py), one
Redis namespace of their own, the emulator counting what reaches "Alpaca".
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory, PrivateRedis
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE
from tests.support.busy_redis import redis_kept_busy
from tests.support.fleet import (
    DEADLINE_S,
    GatewayFleet,
    counted_fleet_env,
    eventually,
    forget_namespace,
)

pytestmark = pytest.mark.integration

QUOTES_PATH = "/v2/stocks/quotes/latest"
INSTANCES = 4
LEASE_S = 2.0


def fleet_env(
    emulator: EmulatorProcess, redis_url: str, namespace: str, **settings: str
) -> dict[str, str]:
    return counted_fleet_env(
        emulator,
        redis_url,
        namespace,
        # A quote stays fresh through the whole burst, so a late request is a hit, never a
        # second call; the emulator's latency fault holds the one call open meanwhile.
        CACHE_QUOTE_TTL_S="60",
        DATA_TIMEOUT_S="10",
        **settings,
    )


@pytest.fixture(scope="module")
def fleet(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayFleet]:
    """Four instances behind nginx, for the tests that leave them all running (each test asks
    for symbols of its own, so what one test cached is no other's answer)."""
    namespace = f"fleet-{uuid.uuid4().hex}"
    # A wait outlasts any test's setup, however loaded the machine: what ends the waits for a
    # killed holder is its lease, not their own budget.
    env = fleet_env(
        emulator_process,
        redis_url,
        namespace,
        SHARED_FLIGHT_LEASE_S=str(LEASE_S),
        SHARED_FLIGHT_WAIT_S="20",
    )
    with GatewayFleet(env, tmp_path_factory.mktemp("fleet"), instances=INSTANCES) as running:
        yield running
    asyncio.run(forget_namespace(redis_url, namespace))


async def samples(client: httpx.AsyncClient, url: str, name: str) -> dict[str, float]:
    """`name`'s samples at `url`/metrics by their `result` or `structure` label."""
    text = (await client.get(url + "/metrics")).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                label = sample.labels.get("result") or sample.labels.get("structure") or ""
                found[label] = float(sample.value)
    return found


async def flights(client: httpx.AsyncClient, url: str) -> float:
    """Keys the instance at `url` is fetching or waiting for right now."""
    return (await samples(client, url, "gateway_inprocess_entries")).get("flights", 0.0)


def quote_of(body: dict[str, Any]) -> tuple[Any, ...]:
    return (body["bid_price"], body["ask_price"], body["timestamp"])


STORED = (QUOTE["bp"], QUOTE["ap"], QUOTE["t"])


# --- one call across instances -------------------------------------------------------------------
async def test_a_thousand_cold_requests_over_four_instances_make_one_upstream_call(
    fleet: GatewayFleet,
    emulator: EmulatorControl,
    record_property: Callable[[str, object], None],
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    await emulator.add_fault(QUOTES_PATH, "latency", delay_ms=1500)

    # aiohttp, not httpx: httpx's pool takes tens of seconds to keep 1,000 connections busy on
    # two cores, and the requests would reach the balancer one trickle at a time.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000),
        timeout=aiohttp.ClientTimeout(total=DEADLINE_S),
    ) as session:

        async def ask() -> tuple[int, dict[str, Any]]:
            async with session.get(fleet.base_url + "/v1/stocks/AAPL/quote") as answer:
                return answer.status, await answer.json(content_type=None)

        responses = await asyncio.gather(*(ask() for _ in range(1000)))
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        results = [
            await samples(client, g.base_url, "gateway_shared_flight_keys_total")
            for g in fleet.instances
        ]

    assert Counter(status for status, _ in responses) == {200: 1000}
    assert await emulator.calls_to(QUOTES_PATH) == 1
    bodies = [body for _, body in responses]
    assert {quote_of(b) for b in bodies} == {STORED}
    assert len({b["provenance"]["fetched_at"] for b in bodies}) == 1
    states = Counter(b["provenance"]["cache"] for b in bodies)
    assert states["miss"] == 1
    assert set(states) <= {"miss", "shared", "hit"}
    # One instance called; the others' misses waited for its call, none made its own.
    assert sum(r["led"] for r in results) == 1
    assert sum(r["followed"] for r in results) >= 1
    assert sum(r["took_over"] + r["unshared"] + r["timed_out"] for r in results) == 0
    figures = {
        "upstream_calls": await emulator.calls_to(QUOTES_PATH),
        "answers": dict(Counter(b["provenance"]["cache"] for b in bodies)),
        "instances_that_waited_for_another": sum(r["followed"] > 0 for r in results),
    }
    for name, value in figures.items():
        record_property(name, value)
    sys.stdout.write(f"\n1,000 cold requests over {INSTANCES} instances: {figures}\n")


async def test_a_batch_whose_symbols_other_instances_are_fetching_costs_each_symbol_one_call(
    fleet: GatewayFleet, emulator: EmulatorControl
) -> None:
    fetching = ["MSFT", "NVDA", "AMZN"]  # one instance each
    batch = [*fetching, "TSLA"]
    await emulator.set_state(quotes={s: {**QUOTE} for s in batch})
    await emulator.add_fault(QUOTES_PATH, "latency", delay_ms=1500)

    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        singles = [
            asyncio.create_task(client.get(f"{g.base_url}/v1/stocks/{symbol}/quote"))
            for g, symbol in zip(fleet.instances, fetching, strict=False)
        ]

        async def all_in_flight() -> bool:
            return await emulator.calls_to(QUOTES_PATH) == len(fetching)

        await eventually(all_in_flight, "each instance's call reaches the emulator")
        answer = await client.get(
            f"{fleet.instances[3].base_url}/v1/stocks/quotes", params={"symbols": ",".join(batch)}
        )
        single_answers = await asyncio.gather(*singles)

    asked = Counter(
        symbol
        for request in await emulator.requests()
        if request["path"] == QUOTES_PATH
        for symbol in request["query"]["symbols"].split(",")
    )
    assert asked == dict.fromkeys(batch, 1)
    assert answer.status_code == 200, answer.text
    quotes = answer.json()["quotes"]
    assert answer.json()["errors"] == {}
    assert {s: q["provenance"]["cache"] for s, q in quotes.items()} == {
        "MSFT": "shared",
        "NVDA": "shared",
        "AMZN": "shared",
        "TSLA": "miss",
    }
    assert all(quote_of(q) == STORED for q in quotes.values())
    for single, symbol in zip(single_answers, fetching, strict=True):
        assert single.status_code == 200
        assert single.json()["provenance"]["cache"] == "miss"
        assert (
            single.json()["provenance"]["fetched_at"] == quotes[symbol]["provenance"]["fetched_at"]
        )


# --- an instance dies holding a fetch -------------------------------------------------------------
async def test_a_fetch_whose_instance_is_killed_is_taken_over_within_the_lease(
    fleet: GatewayFleet,
    emulator: EmulatorControl,
    record_property: Callable[[str, object], None],
) -> None:
    await emulator.set_quote("ORCL", QUOTE)
    await emulator.add_fault(QUOTES_PATH, "hang", count=1)  # only the first call hangs
    holder, *others = fleet.instances
    try:
        async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
            before = [
                await samples(client, g.base_url, "gateway_shared_flight_keys_total")
                for g in others
            ]
            doomed = asyncio.create_task(client.get(f"{holder.base_url}/v1/stocks/ORCL/quote"))

            async def holder_is_calling() -> bool:
                return await emulator.calls_to(QUOTES_PATH) == 1

            await eventually(holder_is_calling, "the first instance's call is in flight")
            waiting = [
                asyncio.create_task(client.get(f"{g.base_url}/v1/stocks/ORCL/quote"))
                for g in others
                for _ in range(10)
            ]

            async def all_waiting() -> bool:
                counts = [await flights(client, g.base_url) for g in others]
                return counts == [1.0] * len(others)

            await eventually(all_waiting, "every other instance waits for the holder")
            fleet.kill(0)
            killed_at = time.monotonic()
            answers = await asyncio.gather(*waiting)
            answered_after_s = time.monotonic() - killed_at
            after = [
                await samples(client, g.base_url, "gateway_shared_flight_keys_total")
                for g in others
            ]
            with pytest.raises(httpx.TransportError):
                await doomed
    finally:
        fleet.restart(0)  # the module's fleet is whole again for whatever runs next

    assert Counter(a.status_code for a in answers) == {200: len(waiting)}
    bodies = [a.json() for a in answers]
    assert {quote_of(b) for b in bodies} == {STORED}
    assert Counter(b["provenance"]["cache"] for b in bodies)["miss"] == 1
    # The dead instance's call, then exactly one instance's takeover.
    assert await emulator.calls_to(QUOTES_PATH) == 2

    def counted(result: str) -> float:
        pairs = zip(after, before, strict=True)
        return sum(a.get(result, 0.0) - b.get(result, 0.0) for a, b in pairs)

    assert counted("took_over") == 1
    assert counted("followed") == len(others) - 1
    # The figure: about a lease, and the takeover's own call (no timed assertion).
    record_property("answered_after_kill_s", round(answered_after_s, 2))
    sys.stdout.write(
        f"\nkilled holder: {len(answers)} waiters answered {answered_after_s:.2f} s after the"
        f" kill (lease {LEASE_S:g} s)\n"
    )


# --- Redis goes away ------------------------------------------------------------------------------
async def test_redis_stopped_while_an_instance_waits_costs_a_call_never_an_answer(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_redis: PrivateRedis
) -> None:
    settings = {
        "redis_url": private_redis.url,
        "cache_namespace": f"test-{uuid.uuid4().hex}",
        "data_timeout_s": 10.0,
        "shared_flight_wait_s": 20.0,
    }
    one = await make_gateway(**settings)
    two = await make_gateway(**settings)
    await emulator.set_state(quotes={"AAPL": {**QUOTE}, "MSFT": {**QUOTE}})
    await emulator.add_fault(QUOTES_PATH, "latency", delay_ms=1000)

    shared = await asyncio.gather(
        *(g.get("/v1/stocks/AAPL/quote") for g in (one, two) for _ in range(20))
    )
    assert {r.status_code for r in shared} == {200}
    # While Redis answers: one call for both.
    assert await emulator.calls_to(QUOTES_PATH) == 1, await emulator.requests()

    lead = asyncio.create_task(one.get("/v1/stocks/MSFT/quote"))

    async def one_is_calling() -> bool:
        return await emulator.calls_to(QUOTES_PATH) == 2

    await eventually(one_is_calling, "the first gateway's call is in flight")
    follow = [asyncio.create_task(two.get("/v1/stocks/MSFT/quote")) for _ in range(20)]

    async def two_is_waiting() -> bool:
        return await flights(two, "") == 1

    await eventually(two_is_waiting, "the second gateway waits for the first one's call")
    private_redis.stop()
    answers = await asyncio.gather(lead, *follow)

    assert {a.status_code for a in answers} == {200}
    assert {quote_of(a.json()) for a in answers} == {STORED}
    # The waiting gateway stopped waiting and asked Alpaca itself: two calls, no failure.
    assert await emulator.calls_to(QUOTES_PATH) == 3
    unshared = (await samples(two, "", "gateway_shared_flight_keys_total"))["unshared"]
    assert unshared == 1


# --- Redis answers late ---------------------------------------------------------------------------
async def test_an_answer_later_than_the_caches_timeout_still_shares_the_call(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_redis: PrivateRedis
) -> None:
    """As when a cold burst keeps an instance's event loop busy: Redis's answers are read past
    the cache's fail-fast timeout. The cache gives up on them (and serves without Redis for a
    while); coordination, on its own client and bounded by half a lease, does not, so the
    waiting gateway still shares the first one's call instead of making its own."""
    settings = {
        "redis_url": private_redis.url,
        "cache_namespace": f"test-{uuid.uuid4().hex}",
        "redis_timeout_s": 0.05,
        "data_timeout_s": 10.0,
        "shared_flight_lease_s": 2.0,
        "shared_flight_wait_s": 20.0,
    }
    one = await make_gateway(**settings)
    two = await make_gateway(**settings)
    await emulator.set_quote("AAPL", QUOTE)
    await emulator.add_fault(QUOTES_PATH, "latency", delay_ms=1500)
    lead = asyncio.create_task(one.get("/v1/stocks/AAPL/quote"))

    async def one_is_calling() -> bool:
        return await emulator.calls_to(QUOTES_PATH) == 1

    await eventually(one_is_calling, "the first gateway's call is in flight")
    async with redis_kept_busy(private_redis.url) as (_, busy):
        follower = await two.get("/v1/stocks/AAPL/quote")
        await busy
    led = await lead

    assert (led.status_code, follower.status_code) == (200, 200)
    assert follower.json()["provenance"]["cache"] == "shared"
    assert follower.json()["provenance"]["fetched_at"] == led.json()["provenance"]["fetched_at"]
    assert await emulator.calls_to(QUOTES_PATH) == 1
    # The cache did give up on a late answer (and came back with coordination's next one).
    errors = await samples(two, "", "gateway_cache_backend_errors_total")
    assert sum(errors.values()) >= 1
    counted = await samples(two, "", "gateway_shared_flight_keys_total")
    assert (counted["followed"], counted["unshared"]) == (1, 0)
