"""Four gateway processes behind nginx learn of a sick Alpaca together (issue 11 §3).

The emulator fails every quote call; clients ask the balancer for cold symbols, a few at a time,
until every replica's /ready says the data breaker is open. The failing calls that reached the
emulator meanwhile are about one instance's `BREAKER_MINIMUM_CALLS`, not four times it: the
replicas feed one window in Redis, and the one whose report trips it tells the others. Every
replica then names that instance in /ready, its metrics and its log. When the fault clears,
recovery costs `BREAKER_HALF_OPEN_CALLS` trial calls across the fleet, not that many per replica.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.alpaca.breaker_sync import breaker_keys
from app.errors import ErrorCode
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE
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
MINIMUM_CALLS = 10
HALF_OPEN_CALLS = 3
OPEN_DURATION_S = 2.0
CLIENTS = 4  # requests in flight at once, as a few bots would send them
CODES = {code.name for code in ErrorCode}


@pytest.fixture
def fleet(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path
) -> Iterator[tuple[GatewayFleet, str]]:
    namespace = f"fleet-{uuid.uuid4().hex}"
    env = counted_fleet_env(
        emulator_process,
        redis_url,
        namespace,
        BREAKER_WINDOW_SIZE="20",
        BREAKER_MINIMUM_CALLS=str(MINIMUM_CALLS),
        BREAKER_FAILURE_RATE_THRESHOLD="0.5",
        BREAKER_OPEN_DURATION_S=str(OPEN_DURATION_S),
        BREAKER_HALF_OPEN_CALLS=str(HALF_OPEN_CALLS),
        BREAKER_SYNC_INTERVAL_S="1",
    )
    try:
        with GatewayFleet(env, tmp_path, instances=INSTANCES) as running:
            yield running, namespace
    finally:
        asyncio.run(forget_namespace(redis_url, namespace))


async def data_breaker(client: httpx.AsyncClient, base_url: str) -> dict[str, Any]:
    """The data breaker as one replica's /ready reports it."""
    breaker: dict[str, Any] = (await client.get(base_url + "/ready")).json()["breakers"]["data"]
    return breaker


async def opened_by_metric(client: httpx.AsyncClient, base_url: str) -> set[str]:
    """The instances one replica's metrics name as having opened the data breaker."""
    text = (await client.get(base_url + "/metrics")).text
    return {
        sample.labels["opened_by"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_circuit_breaker_opened_by_info"
        and sample.labels.get("upstream") == "data"
        and sample.value == 1
    }


def opening_logged(log_lines: list[str], by: str) -> bool:
    """Whether a replica's log has the data breaker opening, naming the instance `by`."""
    return any(
        "circuit breaker data" in line and "-> open" in line and f"by {by}" in line
        for line in log_lines
    )


def assert_typed(answer: httpx.Response) -> None:
    """A failure is a problem+json with a code of the closed list, never a made-up quote."""
    assert answer.status_code in (502, 503, 504), answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] in CODES


async def test_four_instances_open_together_after_one_instances_minimum_of_failures(
    fleet: tuple[GatewayFleet, str],
    emulator: EmulatorControl,
    redis_url: str,
    record_property: Callable[[str, object], None],
) -> None:
    running, namespace = fleet
    symbols = (f"B{n:03d}" for n in itertools.count())
    await emulator.add_fault(QUOTES_PATH, "status_500")
    answers: list[httpx.Response] = []

    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:

        async def all_open() -> bool:
            states = [await data_breaker(client, g.base_url) for g in running.instances]
            return all(s["state"] == "open" for s in states)

        done = asyncio.Event()

        async def bot() -> None:
            # Cold symbols, so neither cache nor coalescing hides a call.
            while not done.is_set():
                answers.append(
                    await client.get(f"{running.base_url}/v1/stocks/{next(symbols)}/quote")
                )

        bots = [asyncio.create_task(bot()) for _ in range(CLIENTS)]
        try:
            await eventually(all_open, "every replica's data breaker is open")
        finally:
            done.set()
            await asyncio.gather(*bots)
        failing_calls = await emulator.calls_to(QUOTES_PATH)

        reports = [await data_breaker(client, g.base_url) for g in running.instances]
        openers = {r["opened_by"] for r in reports}
        metric_openers = [await opened_by_metric(client, g.base_url) for g in running.instances]

        # Open everywhere: more asking reaches nobody.
        more = await asyncio.gather(
            *(client.get(f"{running.base_url}/v1/stocks/{next(symbols)}/quote") for _ in range(40))
        )
        assert await emulator.calls_to(QUOTES_PATH) == failing_calls

        # --- the fault clears: the fleet's trials, HALF_OPEN_CALLS of them in all ------------
        await emulator.clear_faults()
        await emulator.reset_calls()
        recovery_symbols = [f"R{n:03d}" for n in range(200)]
        await emulator.set_state(quotes={s: {**QUOTE} for s in recovery_symbols})
        await asyncio.sleep(OPEN_DURATION_S)
        redis = Redis.from_url(redis_url)
        state_key = breaker_keys(namespace, "data")[0]
        trials = 0
        try:

            async def settled() -> bool:
                # The trial just answered has been counted by the fleet (or closed it).
                state = await redis.hgetall(state_key)
                return state[b"state"] == b"closed" or int(state[b"calls"]) >= trials

            # One request at a time, each one's outcome counted before the next is sent, so
            # that no call admitted by the closed breaker passes for a trial.
            for symbol in recovery_symbols:
                answer = await client.get(f"{running.base_url}/v1/stocks/{symbol}/quote")
                if answer.status_code == 200:
                    trials += 1  # only a trial is admitted while the fleet is not closed
                else:
                    assert_typed(answer)
                await eventually(settled, "the trial's outcome reaches Redis")
                if (await redis.hget(state_key, "state")) == b"closed":
                    break
        finally:
            await redis.aclose()
        trial_calls = await emulator.calls_to(QUOTES_PATH)

        async def all_closed() -> bool:
            states = [await data_breaker(client, g.base_url) for g in running.instances]
            return all(s["state"] == "closed" for s in states)

        await eventually(all_closed, "every replica's data breaker closed again")

    # About one instance's minimum of failing calls, where four private breakers need 4x.
    assert MINIMUM_CALLS <= failing_calls < 2 * MINIMUM_CALLS
    for answer in [*answers, *more]:
        assert_typed(answer)
    # Every replica names the one instance whose reported call tripped it.
    assert len(openers) == 1
    (opener,) = openers
    assert opener is not None
    assert opener.startswith("gw-")
    assert all(r["source"] == "shared" for r in reports)
    assert metric_openers == [{opener}] * INSTANCES
    for gateway in running.instances:
        assert opening_logged(gateway.log_lines(), opener), gateway.log_lines()[-5:]
    # Recovery: the configured trials in all, then closed for everyone.
    assert trials == HALF_OPEN_CALLS
    assert trial_calls == HALF_OPEN_CALLS

    figures = {"failing_calls": failing_calls, "trial_calls": trial_calls, "opener": opener}
    for name, value in figures.items():
        record_property(name, value)
    sys.stdout.write(f"\nshared breaker over {INSTANCES} instances: {figures}\n")
