"""`make bench` rows for several gateway instances (README "Running several instances").

Each fleet is real: `python -m app.serve` processes behind nginx (tests/support/fleet.py), one
Redis (127.0.0.1:6379, a namespace of their own, deleted afterwards), the emulator counting the
calls that reach "Alpaca".

- Cold burst: four instances; the emulator holds the one quote call open for 1.5 s while 1,000
  concurrent requests for one cold symbol arrive through the balancer. The row is the upstream
  calls the emulator counted: one for the whole fleet is the target.
- Cached quote throughput: one instance and two instances behind nginx, the same warm quote,
  closed loop, the two fleets alternating round by round; the ratio is taken per round.

These processes are not pinned: on two cores the instances, nginx and the load generator share
them, so two instances measure what a second replica adds on the same machine, not on its own.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.performance.fleet import QUOTES_PATH, REDIS_URL
from tests.performance.gateway import gateway_env
from tests.performance.report import Row, errors, load_row, median_result, per_round
from tests.performance.runners import LoadResult, Tools
from tests.performance.seed import quote_wire
from tests.support.fleet import GatewayFleet

COLD_REQUESTS = 1_000
COLD_INSTANCES = 4
COLD_HOLD_MS = 1_500  # the one upstream call stays open while every request arrives
COLD_SYMBOL = "FLEETCOLD"
WARM_SYMBOL = "FLEETWARM"
RUN_S = 4
CONNECTIONS = 64


def say(message: str) -> None:
    print(message, flush=True)


def fleet_env(
    emulator: EmulatorProcess, scratch: Path, namespace: str, instances: int
) -> dict[str, str]:
    env = gateway_env(
        emulator,
        scratch,
        {
            "REDIS_URL": REDIS_URL,
            "CACHE_NAMESPACE": namespace,
            "GATEWAY_EXPECTED_INSTANCES": str(instances),
            "ORDER_SWEEP_INTERVAL_S": "0",
            # The held call must outlast the burst's arrival; waits end at its landing.
            "DATA_TIMEOUT_S": "10",
            "SHARED_FLIGHT_WAIT_S": "10",
        },
    )
    env.pop("EMBEDDED_DB_PATH")  # each instance gets its own store file from GatewayFleet
    return env


@contextmanager
def fleet(
    emulator: EmulatorProcess, instances: int, server: str, namespace: str
) -> Iterator[GatewayFleet]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        env = fleet_env(emulator, Path(scratch), namespace, instances)
        with GatewayFleet(env, Path(scratch), instances=instances, server=server) as started:
            yield started


async def cold_burst(base_url: str, control: EmulatorControl) -> tuple[int, Counter[str]]:
    """(upstream calls, answers by status) for COLD_REQUESTS concurrent cold requests."""
    await control.set_quote(COLD_SYMBOL, quote_wire(100.0))
    await control.reset_calls()
    await control.add_fault(QUOTES_PATH, "latency", delay_ms=COLD_HOLD_MS)
    limits = httpx.Limits(max_connections=COLD_REQUESTS, max_keepalive_connections=COLD_REQUESTS)
    try:
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            url = f"{base_url}/v1/stocks/{COLD_SYMBOL}/quote"
            answers = await asyncio.gather(
                *(client.get(url) for _ in range(COLD_REQUESTS)), return_exceptions=True
            )
    finally:
        await control.clear_faults()
    statuses = Counter(
        str(a.status_code) if isinstance(a, httpx.Response) else type(a).__name__ for a in answers
    )
    return await control.calls_to(QUOTES_PATH), statuses


async def throughput_rounds(
    urls: dict[int, str], tools: Tools, rounds: int
) -> dict[int, list[LoadResult]]:
    """Closed-loop runs of each fleet's cached quote, the order alternating every round."""
    results: dict[int, list[LoadResult]] = {n: [] for n in urls}
    order = sorted(urls)
    for round_no in range(rounds):
        for n in order if round_no % 2 == 0 else order[::-1]:
            results[n].append(await tools.closed_loop(urls[n], RUN_S, CONNECTIONS))
        say(
            f"fleet round {round_no + 1}/{rounds} (rps): "
            + ", ".join(f"{n} instance(s) {results[n][-1].rps:.0f}" for n in order)
        )
    return results


async def fleet_rows(
    emulator: EmulatorProcess, control: EmulatorControl, tools: Tools, server: str, rounds: int
) -> list[Row]:
    """The rows; every fleet is stopped and its Redis keys deleted before this returns."""
    namespace = f"bench-fleet-{id(control):x}"
    try:
        say(f"fleet: {COLD_INSTANCES} instances behind nginx, {COLD_REQUESTS} cold requests")
        with fleet(emulator, COLD_INSTANCES, server, f"{namespace}-4") as four:
            calls, statuses = await cold_burst(four.base_url, control)

        say("fleet: cached quote throughput, 1 vs 2 instances behind nginx")
        await control.set_quote(WARM_SYMBOL, quote_wire(101.0))
        urls: dict[int, str] = {}
        with ExitStack() as stack:
            for n in (1, 2):
                started = stack.enter_context(fleet(emulator, n, server, f"{namespace}-{n}"))
                urls[n] = f"{started.base_url}/v1/stocks/{WARM_SYMBOL}/quote"
                await warm(urls[n])
            results = await throughput_rounds(urls, tools, rounds)
    finally:
        await drop_namespace(namespace)
    return rows(calls, statuses, results)


async def warm(url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(url)
    if answer.status_code != 200:
        raise RuntimeError(f"GET {url} answered {answer.status_code}: {answer.text}")


def rows(calls: int, statuses: Counter[str], results: dict[int, list[LoadResult]]) -> list[Row]:
    answered = ", ".join(f"{n} x {status}" for status, n in sorted(statuses.items()))
    one, two = median_result(results[1]), median_result(results[2])
    ratios = [b.rps / a.rps for a, b in zip(results[1], results[2], strict=True)]
    unpinned = "unpinned: nginx, wrk and the instances share the machine's cores"
    return [
        Row("several instances: nginx in front, one Redis, one worker each"),
        Row(
            f"{COLD_REQUESTS:,} cold requests, {COLD_INSTANCES} instances",
            target=f"{calls} upstream calls vs 1: {'MET' if calls == 1 else 'MISSED'}",
            notes=f"answers: {answered}; the one call held {COLD_HOLD_MS} ms",
        ),
        load_row(
            "cached quote via nginx, 1 instance",
            one,
            notes=f"rps {per_round([r.rps for r in results[1]])}; {errors(one)}; {unpinned}",
        ),
        load_row(
            "cached quote via nginx, 2 instances",
            two,
            f"{statistics.median(ratios):.2f}x 1 instance (reference)",
            f"rps {per_round([r.rps for r in results[2]])}; ratios {per_round(ratios, '.2f')};"
            f" {errors(two)}",
        ),
    ]


async def drop_namespace(namespace: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2.0)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}*")]
        keys += [key async for key in client.scan_iter(match=f"{{{namespace}*")]
        if keys:
            await client.delete(*keys)
    except (RedisError, OSError) as exc:
        say(f"note: the fleet's Redis keys ({namespace}*) were not deleted: {exc}")
    finally:
        await client.aclose()
