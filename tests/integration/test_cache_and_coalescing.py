"""The cache and single-flight: identical requests share one Alpaca call, failures are shared
and briefly remembered, Redis shares values between instances and fails open, and staleness is
never served unless the client opted in (and then with its true fetch time).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from tests.conftest import GatewayFactory, PrivateRedis
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

QUOTES_PATH = "/v2/stocks/quotes/latest"
BARS_PATH = "/v2/stocks/bars"
QUOTE_FIELDS = {
    "bid_price": 101.25,
    "bid_size": 3,
    "bid_exchange": "V",
    "ask_price": 101.2575,
    "ask_size": 2,
    "ask_exchange": "V",
    "conditions": ["R"],
    "tape": "C",
    "timestamp": QUOTE["t"],
    "symbol": "AAPL",
}
BREAKER = {
    "breaker_minimum_calls": 4,
    "breaker_window_size": 4,
    "breaker_failure_rate_threshold": 0.5,
    "breaker_open_duration_s": 0.5,
    "breaker_half_open_calls": 2,
}


def assert_stored_values(body: dict[str, Any]) -> None:
    for name, value in QUOTE_FIELDS.items():
        assert body[name] == value, (name, body)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def metric(gateway: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    """The sample's value, or None when the series is not exported at all."""
    text = (await gateway.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.fixture
async def aapl(emulator: EmulatorControl) -> EmulatorControl:
    await emulator.set_quote("AAPL", QUOTE)
    return emulator


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    """A cache namespace of this test's own in the shared Redis, removed afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{name}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# --- single-flight -----------------------------------------------------------------------------
async def test_concurrent_cold_requests_share_one_upstream_call(
    aapl: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway()
    await aapl.add_fault(QUOTES_PATH, "latency", delay_ms=200)

    responses = await asyncio.gather(*(gateway.get("/v1/stocks/AAPL/quote") for _ in range(200)))

    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    assert await aapl.calls_to(QUOTES_PATH) == 1
    states = Counter(r.json()["provenance"]["cache"] for r in responses)
    assert states == {"miss": 1, "shared": 199}
    fetched = {r.json()["provenance"]["fetched_at"] for r in responses}
    assert len(fetched) == 1  # one fetch, one fetch time
    for response in responses:
        assert_stored_values(response.json())
        if response.json()["provenance"]["cache"] == "shared":
            assert "collapsed" in response.headers["Cache-Status"]


async def test_concurrent_cold_requests_share_one_call_with_redis(
    aapl: EmulatorControl, make_gateway: GatewayFactory, redis_url: str, namespace: str
) -> None:
    """The Redis lookup is real I/O: requests interleave there, and must still join one flight."""
    gateway = await make_gateway(
        redis_url=redis_url, cache_namespace=namespace, cache_stale_retention_s=5.0
    )
    await aapl.add_fault(QUOTES_PATH, "latency", delay_ms=200)

    responses = await asyncio.gather(*(gateway.get("/v1/stocks/AAPL/quote") for _ in range(100)))

    assert all(r.status_code == 200 for r in responses)
    assert Counter(r.json()["provenance"]["cache"] for r in responses) == {"miss": 1, "shared": 99}
    assert await aapl.calls_to(QUOTES_PATH) == 1


async def test_concurrent_requests_share_one_failure(
    aapl: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(data_timeout_s=0.3)
    await aapl.add_fault(QUOTES_PATH, "hang")

    responses = await asyncio.gather(*(gateway.get("/v1/stocks/AAPL/quote") for _ in range(50)))

    assert {r.status_code for r in responses} == {504}
    bodies = [r.json() for r in responses]
    assert {(b["code"], b["detail"], b["upstream"], b["symbol"]) for b in bodies} == {
        ("UPSTREAM_TIMEOUT", bodies[0]["detail"], "data", "AAPL")
    }
    assert len({b["request_id"] for b in bodies}) == 50  # each its own problem, same failure
    assert await aapl.calls_to(QUOTES_PATH) == 1


async def test_failure_is_negative_cached_briefly(
    aapl: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(cache_negative_ttl_s=0.4)
    await aapl.add_fault(QUOTES_PATH, "status_500")

    first = await gateway.get("/v1/stocks/AAPL/quote")
    again = await gateway.get("/v1/stocks/AAPL/quote")

    assert first.json()["code"] == again.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert again.status_code == 503
    assert await aapl.calls_to(QUOTES_PATH) == 1  # the second was answered from memory
    assert (
        await metric(gateway, "gateway_cache_requests_total", kind="quote", result="negative") == 1
    )

    await aapl.clear_faults()
    await asyncio.sleep(0.5)
    recovered = await gateway.get("/v1/stocks/AAPL/quote")

    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["provenance"]["cache"] == "miss"
    assert await aapl.calls_to(QUOTES_PATH) == 2


# --- TTLs ----------------------------------------------------------------------------------------
async def test_hot_symbol_costs_one_upstream_call_per_ttl(
    aapl: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(cache_quote_ttl_s=1.0)

    started = time.monotonic()
    states = [
        (await gateway.get("/v1/stocks/AAPL/quote")).json()["provenance"]["cache"]
        for _ in range(20)
    ]
    assert time.monotonic() - started < 1.0

    assert states == ["miss"] + ["hit"] * 19
    assert await aapl.calls_to(QUOTES_PATH) == 1

    await asyncio.sleep(1.05)
    expired = await gateway.get("/v1/stocks/AAPL/quote")

    assert expired.json()["provenance"]["cache"] == "miss"
    assert await aapl.calls_to(QUOTES_PATH) == 2


async def test_closed_interval_bars_are_cached_long(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_bars(
        "AAPL",
        [
            {
                "t": f"2024-01-0{day}T05:00:00Z",
                "o": 185.1,
                "h": 186.0,
                "l": 184.2,
                "c": 185.64,
                "v": 1000 + day,
                "n": 10,
                "vw": 185.3,
            }
            for day in (2, 3, 4)
        ],
    )
    gateway = await make_gateway(cache_open_bars_ttl_s=0.01)
    params = {"timeframe": "1Day", "start": "2024-01-01", "end": "2024-01-10"}

    first = await gateway.get("/v1/stocks/AAPL/bars", params=params)
    await asyncio.sleep(0.05)  # past any short TTL: only the closed-interval TTL keeps it
    second = await gateway.get("/v1/stocks/AAPL/bars", params=params)

    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["provenance"]["cache"] == "miss"
    assert second.json()["provenance"]["cache"] == "hit"
    assert second.json()["bars"] == first.json()["bars"]
    assert [b["close"] for b in second.json()["bars"]] == [185.64] * 3
    assert await emulator.calls_to(BARS_PATH) == 1


# --- Redis ---------------------------------------------------------------------------------------
async def test_redis_shares_values_between_instances(
    aapl: EmulatorControl, make_gateway: GatewayFactory, redis_url: str, namespace: str
) -> None:
    settings = {
        "redis_url": redis_url,
        "cache_namespace": namespace,
        "cache_quote_ttl_s": 5.0,
        "cache_stale_retention_s": 5.0,
    }
    first = await make_gateway(**settings)
    second = await make_gateway(**settings)

    fetched = await first.get("/v1/stocks/AAPL/quote")
    shared = await second.get("/v1/stocks/AAPL/quote")

    assert fetched.json()["provenance"]["cache"] == "miss"
    assert shared.status_code == 200, shared.text
    assert shared.json()["provenance"]["cache"] == "hit"
    assert shared.headers["Cache-Status"].startswith("gateway; hit")
    assert shared.json()["provenance"]["fetched_at"] == fetched.json()["provenance"]["fetched_at"]
    assert_stored_values(shared.json())
    assert await aapl.calls_to(QUOTES_PATH) == 1
    ready = (await second.get("/ready")).json()
    assert ready["dependencies"]["cache"] == {"backend": "redis", "state": "up"}


async def test_redis_outage_costs_speed_never_answers(
    aapl: EmulatorControl, make_gateway: GatewayFactory, private_redis: PrivateRedis
) -> None:
    ttl_s = 0.3
    gateway = await make_gateway(
        redis_url=private_redis.url,
        cache_quote_ttl_s=ttl_s,
        cache_namespace=f"test-{uuid.uuid4().hex}",
    )
    assert (await gateway.get("/v1/stocks/AAPL/quote")).json()["provenance"]["cache"] == "miss"
    assert (await gateway.get("/v1/stocks/AAPL/quote")).json()["provenance"]["cache"] == "hit"
    errors_before = (
        await metric(gateway, "gateway_cache_backend_errors_total", backend="redis") or 0.0
    )

    private_redis.stop()
    await asyncio.sleep(ttl_s + 0.05)  # what this instance held is no longer fresh
    for _ in range(3):
        started = time.monotonic()
        response = await gateway.get("/v1/stocks/AAPL/quote")
        again = await gateway.get("/v1/stocks/AAPL/quote")
        assert time.monotonic() - started < 1.0
        assert response.status_code == again.status_code == 200, response.text
        assert response.json()["provenance"]["cache"] == "miss"  # from Alpaca, Redis is away
        # This instance keeps its own fetch while Redis is away: one Alpaca call per TTL, not
        # one per request (a 200/min budget would otherwise be spent in seconds).
        assert again.json()["provenance"]["cache"] == "hit"
        assert (
            again.json()["provenance"]["fetched_at"] == response.json()["provenance"]["fetched_at"]
        )
        assert_stored_values(response.json())
        await asyncio.sleep(ttl_s + 0.05)
    assert await aapl.calls_to(QUOTES_PATH) == 4

    ready = await gateway.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["dependencies"]["cache"] == {"backend": "redis", "state": "down"}
    errors_after = await metric(gateway, "gateway_cache_backend_errors_total", backend="redis")
    assert errors_after is not None
    assert errors_after > errors_before
    assert await metric(gateway, "gateway_dependency_up", dependency="redis") == 0

    private_redis.start()  # same port, empty
    await asyncio.sleep(1.1)  # the cache retries Redis once per second while it is down
    refill = await gateway.get("/v1/stocks/AAPL/quote")
    resumed = await gateway.get("/v1/stocks/AAPL/quote")

    assert refill.status_code == resumed.status_code == 200
    assert resumed.json()["provenance"]["cache"] == "hit"
    assert await metric(gateway, "gateway_dependency_up", dependency="redis") == 1
    assert (await gateway.get("/ready")).json()["dependencies"]["cache"]["state"] == "up"


async def test_cache_error_counter_is_exported_before_the_first_error(
    make_gateway: GatewayFactory, private_redis: PrivateRedis
) -> None:
    """A counter series that appears only at its first increment hides that increment from
    increase()/rate(): an alert on Redis errors would miss the first outage."""
    gateway = await make_gateway(redis_url=private_redis.url)

    assert await metric(gateway, "gateway_cache_backend_errors_total", backend="redis") == 0


# --- max_age_ms ----------------------------------------------------------------------------------
async def test_max_age_answers_data_stale_without_values(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    observed = datetime.now(UTC) - timedelta(minutes=10)
    await emulator.set_quote("AAPL", {**QUOTE, "t": rfc3339(observed)})
    gateway = await make_gateway()

    stale = await gateway.get("/v1/stocks/AAPL/quote", params={"max_age_ms": 60_000})
    fresh_enough = await gateway.get("/v1/stocks/AAPL/quote", params={"max_age_ms": 3_600_000})
    unlimited = await gateway.get("/v1/stocks/AAPL/quote")

    assert stale.status_code == 503, stale.text
    body = stale.json()
    assert body["code"] == "DATA_STALE"
    assert body["retryable"] is True
    assert body["symbol"] == "AAPL"
    assert 600_000 <= body["age_ms"] < 700_000
    for name in ("bid_price", "ask_price", "bid_size", "ask_size"):
        assert name not in body
    assert "101.25" not in stale.text
    assert fresh_enough.status_code == 200
    assert unlimited.status_code == 200
    assert unlimited.json()["provenance"]["age_ms"] >= 600_000  # no limit, age still reported


async def test_default_max_age_applies_without_the_parameter(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    observed = datetime.now(UTC) - timedelta(minutes=10)
    await emulator.set_quote("AAPL", {**QUOTE, "t": rfc3339(observed)})
    gateway = await make_gateway(default_max_age_ms=60_000)

    by_default = await gateway.get("/v1/stocks/AAPL/quote")
    overridden = await gateway.get("/v1/stocks/AAPL/quote", params={"max_age_ms": 3_600_000})

    assert by_default.status_code == 503, by_default.text
    assert by_default.json()["code"] == "DATA_STALE"
    assert by_default.json()["age_ms"] >= 600_000
    assert overridden.status_code == 200, overridden.text


# --- stale_if_error_ms ---------------------------------------------------------------------------
async def fetch_then_expire(gateway: httpx.AsyncClient) -> dict[str, Any]:
    """A real fetch (miss), then wait past the 0.2 s quote TTL: only a stale candidate is left."""
    first = await gateway.get("/v1/stocks/AAPL/quote")
    assert first.json()["provenance"]["cache"] == "miss"
    await asyncio.sleep(0.3)
    body: dict[str, Any] = first.json()
    return body


async def test_stale_if_error_serves_the_last_real_value_with_its_true_time(
    aapl: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(cache_quote_ttl_s=0.2, cache_negative_ttl_s=0.01)
    original = await fetch_then_expire(gateway)
    await aapl.add_fault(QUOTES_PATH, "status_500")

    stale = await gateway.get("/v1/stocks/AAPL/quote", params={"stale_if_error_ms": 10_000})

    assert stale.status_code == 200, stale.text
    assert stale.json()["provenance"]["cache"] == "stale"
    assert stale.json()["provenance"]["fetched_at"] == original["provenance"]["fetched_at"]
    assert_stored_values(stale.json())
    assert "stale" in stale.headers["Cache-Status"]
    assert await aapl.calls_to(QUOTES_PATH) == 2  # Alpaca was asked, and failed

    await asyncio.sleep(0.02)  # past the negative TTL: each request below asks Alpaca
    strict = await gateway.get("/v1/stocks/AAPL/quote")
    await asyncio.sleep(0.02)
    too_short = await gateway.get("/v1/stocks/AAPL/quote", params={"stale_if_error_ms": 1})

    for response in (strict, too_short):
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "UPSTREAM_UNAVAILABLE"
        assert "bid_price" not in response.json()
    assert await aapl.calls_to(QUOTES_PATH) == 4


async def test_stale_if_error_still_served_while_the_failure_is_negative_cached(
    aapl: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    """A strict client's failure is remembered for cache_negative_ttl_s; a client that opted in
    to stale_if_error_ms right after it must still get the stale real value, not the error."""
    gateway = await make_gateway(cache_quote_ttl_s=0.2, cache_negative_ttl_s=1.0)
    original = await fetch_then_expire(gateway)
    await aapl.add_fault(QUOTES_PATH, "status_500")

    strict = await gateway.get("/v1/stocks/AAPL/quote")
    opted_in = await gateway.get("/v1/stocks/AAPL/quote", params={"stale_if_error_ms": 10_000})

    assert strict.status_code == 503
    assert opted_in.status_code == 200, opted_in.text
    assert opted_in.json()["provenance"]["cache"] == "stale"
    assert opted_in.json()["provenance"]["fetched_at"] == original["provenance"]["fetched_at"]
    assert_stored_values(opted_in.json())


async def test_stale_if_error_served_while_the_breaker_is_open(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    others = [f"S{n}" for n in range(5)]
    await emulator.set_state(quotes=dict.fromkeys(["AAPL", *others], QUOTE))
    gateway = await make_gateway(cache_quote_ttl_s=0.2, cache_negative_ttl_s=0.01, **BREAKER)
    original = await fetch_then_expire(gateway)
    await emulator.add_fault(QUOTES_PATH, "status_500")
    for symbol in others[:4]:
        assert (await gateway.get(f"/v1/stocks/{symbol}/quote")).status_code == 503
    assert (await gateway.get("/ready")).json()["breakers"]["data"]["state"] == "open"
    calls = await emulator.calls_to(QUOTES_PATH)

    stale = await gateway.get("/v1/stocks/AAPL/quote", params={"stale_if_error_ms": 10_000})
    strict = await gateway.get("/v1/stocks/AAPL/quote")

    assert stale.status_code == 200, stale.text
    assert stale.json()["provenance"]["cache"] == "stale"
    assert stale.json()["provenance"]["fetched_at"] == original["provenance"]["fetched_at"]
    assert_stored_values(stale.json())
    assert strict.status_code == 503
    assert strict.json()["code"] == "CIRCUIT_OPEN"
    assert await emulator.calls_to(QUOTES_PATH) == calls  # neither reached Alpaca
