"""Per-key quotas and the anonymous path cannot spend the Alpaca account's budget faster than the
lane budget allows, nor fill the value cache past its bounds (issue 13, §4).

The flood: many keys, each with a quota far above the account's budget, and anonymous clients,
asking for distinct symbols (most unknown, so the missing-symbol classifier asks the trading
host too) and distinct bar ranges, through /v1 and the Alpaca-compatible face. The emulator's
call counts are sampled while it runs: no window between two samples may hold more calls to a
host than the lane's budget grants in it (burst + one cell per interval). What does not fit is
a typed 503 UPSTREAM_RATE_LIMITED with a Retry-After, never an untyped answer.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.cache import MemoryCache
from app.errors import ErrorCode
from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

PER_MINUTE, BURST = 62, 2
INTERVAL_S = 60 / (PER_MINUTE - BURST)  # one cell a second once the burst is spent
# Both hosts' lanes small; the trading lane keeps one cell of its burst for orders. The asset
# lookup budget is set far above the lane, so the lane is what bounds the classifier.
BUDGET: dict[str, Any] = {
    "alpaca_data_budget_per_minute": PER_MINUTE,
    "alpaca_data_budget_burst": BURST,
    "alpaca_trading_budget_per_minute": PER_MINUTE,
    "alpaca_trading_budget_burst": BURST,
    "alpaca_order_budget_reserve": 1,
    "asset_lookups_per_minute": 100_000,
    # Every key's own quota is far above the account's budget: it is not what holds them back.
    "key_quota_per_minute": 1_000_000,
    "key_quota_burst": 100_000,
    "gateway_anonymous_data": True,
    # Two shared cores run the flood, the gateway and the store: a slow key lookup is not what
    # this test is about (test_keys_when_the_store_hangs.py is).
    "key_store_timeout_s": 5.0,
}
# The same flood with lanes that let it through in volume (the cache test).
WIDE_LANES: dict[str, Any] = {
    "alpaca_data_budget_per_minute": 60_000,
    "alpaca_data_budget_burst": 1_000,
    "alpaca_trading_budget_per_minute": 60_000,
    "alpaca_trading_budget_burst": 1_000,
}
FLOOD_S = 4.0
CLIENTS = 16
KEYS = 12
# Time for a granted call to reach the emulator and the counts to be read back.
ARRIVAL_SLACK_S = 0.25
KNOWN = ["AAPL", "MSFT", "SPY"]
PROBLEM_JSON = "application/problem+json"
CODES = {code.name for code in ErrorCode}
FIRST_MINUTE = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
MINUTES = 240
CLOSED_END = "2024-01-03T00:00:00Z"


def host_of(path: str) -> str:
    """Which Alpaca host (and so which lane) an emulator path belongs to."""
    return "data" if path.startswith(("/v2/stocks", "/v1beta1/")) else "trading"


def minute_bars() -> list[dict[str, Any]]:
    """Four hours of 1Min bars: a wide range is tens of kilobytes once cached."""
    return [
        {
            "t": (FIRST_MINUTE + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "o": Decimal(f"{180 + m % 50}.0001"),
            "h": Decimal(f"{181 + m % 50}.25"),
            "l": Decimal(f"{179 + m % 50}.9999"),
            "c": Decimal(f"{180 + m % 50}.5001"),
            "v": 10_000 + m,
            "n": 500 + m,
            "vw": Decimal(f"{180 + m % 50}.432109"),
        }
        for m in range(MINUTES)
    ]


def unknown_symbol(n: int) -> str:
    letters = ""
    while True:
        n, digit = divmod(n, 26)
        letters += chr(ord("A") + digit)
        if n == 0:
            return "ZQ" + letters


def flood_requests() -> Iterator[tuple[str, dict[str, str]]]:
    """Round-robin over the ways a client can make the gateway call Alpaca; each one distinct."""
    for n in itertools.count():
        minute = (FIRST_MINUTE + timedelta(minutes=n % MINUTES)).strftime("%Y-%m-%dT%H:%M:%SZ")
        bars = {"timeframe": "1Min", "start": minute, "end": CLOSED_END}
        batch = ",".join(unknown_symbol(10 * n + i) for i in range(10))
        yield from [
            (f"/v1/stocks/{unknown_symbol(n)}/quote", {}),
            (f"/v1/stocks/{KNOWN[n % len(KNOWN)]}/quote", {}),
            ("/v1/stocks/quotes", {"symbols": batch}),
            ("/v1/stocks/AAPL/bars", bars),
            (f"/v1/stocks/{unknown_symbol(n)}/bars", {"timeframe": "1Day", "end": CLOSED_END}),
            ("/alpaca/v2/stocks/bars", {"symbols": "AAPL", **bars, "limit": str(1000 + n)}),
            ("/alpaca/v2/stocks/quotes/latest", {"symbols": f"{unknown_symbol(n)}F"}),
        ]


@dataclass
class Flood:
    answers: list[httpx.Response] = field(default_factory=list)
    # (read started, read ended, calls per host so far), in order.
    samples: list[tuple[float, float, dict[str, int]]] = field(default_factory=list)


async def calls_per_host(emulator: EmulatorControl) -> dict[str, int]:
    per_host = {"data": 0, "trading": 0}
    for path, count in (await emulator.calls()).items():
        per_host[host_of(path)] += count
    return per_host


# A gateway instance and what a client presents to it: a key of its own, or nothing.
Caller = tuple[GatewayClient, dict[str, str]]


async def flood(
    emulator: EmulatorControl,
    callers: list[Caller],
    *,
    watch: Callable[[], Awaitable[None]] | None = None,
) -> Flood:
    """`CLIENTS` clients for `FLOOD_S`, each request as the next caller, while the emulator's
    counts are sampled."""
    result = Flood()
    requests = flood_requests()
    turns = itertools.count()
    await emulator.reset_calls()
    deadline = time.monotonic() + FLOOD_S

    async def client() -> None:
        while time.monotonic() < deadline:
            turn = next(turns)
            path, params = next(requests)
            gateway, headers = callers[turn % len(callers)]
            result.answers.append(await gateway.get(path, params=params, headers=headers))

    async def sampler() -> None:
        while time.monotonic() < deadline + 0.5:
            before = time.monotonic()
            counts = await calls_per_host(emulator)
            result.samples.append((before, time.monotonic(), counts))
            if watch is not None:
                await watch()
            await asyncio.sleep(0.1)

    await asyncio.gather(sampler(), *(client() for _ in range(CLIENTS)))
    return result


def lane_allows(window_s: float) -> int:
    """The most calls a lane grants in any window this long (GCRA: the burst, then a cell per
    interval)."""
    return BURST + math.floor((window_s + ARRIVAL_SLACK_S) / INTERVAL_S)


def assert_within_the_lane_budget(samples: list[tuple[float, float, dict[str, int]]]) -> None:
    assert len(samples) > 10, "the counts were sampled too rarely to judge windows"
    for host in ("data", "trading"):
        for (started, _, earlier), (_, ended, later) in itertools.combinations(samples, 2):
            spent = later[host] - earlier[host]
            window_s = ended - started
            assert spent <= lane_allows(window_s), (
                f"{spent} calls to the {host} host within {window_s:.2f} s; the lane allows "
                f"{lane_allows(window_s)}"
            )


async def inprocess(gateway: GatewayClient, name: str) -> float:
    """The value cache's size as /metrics reports it."""
    for family in text_string_to_metric_families((await gateway.get("/metrics")).text):
        for sample in family.samples:
            if sample.name == name and sample.labels == {"structure": "value_cache"}:
                return float(sample.value)
    raise AssertionError(f"{name}{{structure='value_cache'}} is not exported")


def problems_of(answer: httpx.Response) -> list[dict[str, Any]]:
    """The typed failures an answer carries (its own, or a batch's per-symbol ones), each as
    {"code": ErrorCode name, "retry_after_s": ...}."""
    body = answer.json()
    if answer.url.path.startswith("/alpaca/"):
        # Alpaca's own error shape on its face (alpaca-py reads it), our code beside it.
        if answer.status_code == 200:
            return []
        assert answer.headers["content-type"].startswith("application/json"), answer.text[:200]
        return [{"code": body["gateway_code"], "retry_after_s": retry_after(answer)}]
    if answer.status_code == 200:
        return list(body.get("errors", {}).values())
    assert answer.headers["content-type"].startswith(PROBLEM_JSON), answer.text[:200]
    if answer.status_code == 503:
        assert body["retry_after_s"] == retry_after(answer), body
    return [body]


def retry_after(answer: httpx.Response) -> int:
    assert answer.status_code == 503, answer.text[:200]
    return int(answer.headers["Retry-After"])


def assert_every_answer_typed(answers: list[httpx.Response]) -> int:
    """Every answer is a value or a typed failure; held-back calls say when to retry. Returns
    how many were held back for the budget."""
    held_back = 0
    for answer in answers:
        for problem in problems_of(answer):
            assert problem["code"] in CODES, problem
            assert problem["code"] in {"UPSTREAM_RATE_LIMITED", "SYMBOL_NOT_FOUND"}, problem
            if problem["code"] == "UPSTREAM_RATE_LIMITED":
                held_back += 1
                assert problem["retry_after_s"] >= 1, problem
    return held_back


async def callers_of(gateway: GatewayClient) -> list[Caller]:
    """Anonymous, and `KEYS` keys of this instance (each its own quota)."""
    keys = [await gateway.issue_key("data:read") for _ in range(KEYS)]
    return [(gateway, {}), *((gateway, {"Authorization": f"Bearer {key}"}) for key in keys)]


async def prepare_market(emulator: EmulatorControl) -> None:
    await emulator.set_state(quotes=dict.fromkeys(KNOWN, QUOTE), assets=KNOWN)
    await emulator.set_bars("AAPL", minute_bars(), timeframe="1Min")


async def test_a_flood_of_keys_and_anonymous_clients_spends_no_faster_than_the_lane_budget(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await prepare_market(emulator)
    gateway = await make_gateway(**BUDGET)

    result = await flood(emulator, await callers_of(gateway))

    assert_within_the_lane_budget(result.samples)
    total = result.samples[-1][2]
    # The flood asked for far more than the lanes allow: the budget, not the flood, bounded it.
    assert len(result.answers) > 20 * (total["data"] + total["trading"])
    assert total["data"] >= BURST
    assert total["trading"] >= 1
    held_back = assert_every_answer_typed(result.answers)
    assert held_back > len(result.answers) // 2


async def test_the_same_flood_leaves_the_value_cache_within_its_bounds(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await prepare_market(emulator)
    max_entries, max_bytes = 50, 100_000
    # Lanes wide enough to let hundreds of values through: the cache's bounds must hold on
    # their own, not because the budget starved the flood.
    gateway = await make_gateway(
        **(BUDGET | WIDE_LANES), cache_max_entries=max_entries, cache_max_bytes=max_bytes
    )
    cache = gateway.state.cache
    assert isinstance(cache, MemoryCache)
    seen: list[tuple[int, int]] = []

    async def watch() -> None:
        # What /metrics reports as gateway_inprocess_entries/_bytes{structure="value_cache"}.
        seen.append(cache.sizes())

    result = await flood(emulator, await callers_of(gateway), watch=watch)

    assert_every_answer_typed(result.answers)
    assert max(entries for entries, _ in seen) <= max_entries
    assert max(held for _, held in seen) <= max_bytes
    # And the flood did press on both bounds: each upstream call stored at least one entry, and
    # the bars it was served (each a wide range) were more bytes than the cache may hold.
    total = result.samples[-1][2]
    assert total["data"] + total["trading"] > max_entries
    served_bars = [
        a for a in result.answers if a.status_code == 200 and a.url.path.endswith("/bars")
    ]
    assert sum(len(a.content) for a in served_bars) > max_bytes
    assert await inprocess(gateway, "gateway_inprocess_entries") <= max_entries
    assert await inprocess(gateway, "gateway_inprocess_bytes") <= max_bytes


async def test_instances_sharing_redis_share_one_budget_through_a_flood(
    emulator: EmulatorControl, make_gateway: GatewayFactory, redis_url: str
) -> None:
    """Scale-out: two instances flooded at once still spend one lane, not one each."""
    await prepare_market(emulator)
    namespace = f"abuse-{uuid.uuid4().hex[:8]}"
    shared = {**BUDGET, "redis_url": redis_url, "cache_namespace": namespace}
    first = await make_gateway(**shared, gateway_expected_instances=2)
    second = await make_gateway(**shared, gateway_expected_instances=2)
    # Each instance checks keys in its own embedded store: each gets keys of its own.
    pairs = zip(await callers_of(first), await callers_of(second), strict=True)
    callers = [caller for pair in pairs for caller in pair]

    result = await flood(emulator, callers)

    assert_within_the_lane_budget(result.samples)
    assert_every_answer_typed(result.answers)
    total = result.samples[-1][2]
    assert len(result.answers) > 20 * (total["data"] + total["trading"])
