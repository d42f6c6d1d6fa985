"""Circuit breakers, one per upstream: a sick Alpaca is answered fast with CIRCUIT_OPEN, without
calling it (the emulator's call counter proves it), and recovers through half-open trials.
Only sickness counts: client errors, entitlement, credentials and 429s leave it closed.

Small settings keep the suite fast: 4 calls decide, the breaker stays open 0.5 s.
Each request uses its own symbol so the cache and negative cache never answer in its place.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

QUOTES_PATH = "/v2/stocks/quotes/latest"
SYMBOLS = [f"S{n}" for n in range(40)]
BREAKER = {
    "breaker_minimum_calls": 4,
    "breaker_window_size": 4,
    "breaker_failure_rate_threshold": 0.5,
    "breaker_open_duration_s": 0.5,
    "breaker_half_open_calls": 2,
    "cache_negative_ttl_s": 0.01,
}
OPEN_WAIT_S = 0.6


@pytest.fixture
async def quotes(emulator: EmulatorControl) -> itertools.count[int]:
    """Every symbol in SYMBOLS has a stored quote; the counter hands out unused ones."""
    await emulator.set_state(quotes=dict.fromkeys(SYMBOLS, QUOTE))
    return itertools.count()


def fresh(counter: itertools.count[int]) -> str:
    return SYMBOLS[next(counter)]


async def quote(gateway: httpx.AsyncClient, symbol: str, **params: Any) -> httpx.Response:
    return await gateway.get(f"/v1/stocks/{symbol}/quote", params=params)


async def trip(
    gateway: httpx.AsyncClient, emulator: EmulatorControl, counter: itertools.count[int]
) -> None:
    """Four failing calls (Alpaca 500): the window is full of failures and the breaker opens."""
    await emulator.add_fault(QUOTES_PATH, "status_500")
    for _ in range(4):
        response = await quote(gateway, fresh(counter))
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "UPSTREAM_UNAVAILABLE"


async def breaker(gateway: httpx.AsyncClient, upstream: str = "data") -> dict[str, Any]:
    ready = await gateway.get("/ready")
    assert ready.status_code == 200, ready.text
    state: dict[str, Any] = ready.json()["breakers"][upstream]
    return state


async def metric(gateway: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    text = (await gateway.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def transitions(gateway: httpx.AsyncClient, before: str, after: str) -> float:
    value = await metric(
        gateway,
        "gateway_circuit_breaker_transitions_total",
        upstream="data",
        from_state=before,
        to_state=after,
    )
    return value or 0.0


def assert_circuit_open(response: httpx.Response, symbol: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "CIRCUIT_OPEN"
    assert body["upstream"] == "data"
    assert body["retryable"] is True
    assert body["symbol"] == symbol
    assert int(response.headers["Retry-After"]) >= 1
    assert body["retry_after_s"] == int(response.headers["Retry-After"])
    assert "bid_price" not in body


async def test_breaker_open_answers_without_calling_alpaca(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(**BREAKER)
    await trip(gateway, emulator, quotes)
    assert await emulator.calls_to(QUOTES_PATH) == 4

    for _ in range(5):
        symbol = fresh(quotes)
        started = time.monotonic()
        response = await quote(gateway, symbol)
        assert time.monotonic() - started < 0.1
        assert_circuit_open(response, symbol)
    assert await emulator.calls_to(QUOTES_PATH) == 4  # not one call while open

    ready = await gateway.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["breakers"]["data"]["state"] == "open"
    assert ready.json()["breakers"]["trading"]["state"] == "closed"
    assert await metric(gateway, "gateway_circuit_breaker_state", upstream="data") == 2
    assert await transitions(gateway, "closed", "open") == 1
    rejected = await metric(
        gateway,
        "gateway_upstream_requests_total",
        upstream="data",
        endpoint="quotes_latest",
        outcome="circuit_open",
    )
    assert rejected == 5


async def test_breaker_closes_after_successful_trials(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(**BREAKER)
    await trip(gateway, emulator, quotes)
    await emulator.clear_faults()
    await asyncio.sleep(OPEN_WAIT_S)

    for _ in range(2):  # the two half-open trials
        response = await quote(gateway, fresh(quotes))
        assert response.status_code == 200, response.text
        assert response.json()["provenance"]["cache"] == "miss"

    assert (await breaker(gateway))["state"] == "closed"
    assert await metric(gateway, "gateway_circuit_breaker_state", upstream="data") == 0
    assert await transitions(gateway, "open", "half_open") == 1
    assert await transitions(gateway, "half_open", "closed") == 1
    assert (await gateway.get("/ready")).json()["status"] == "ready"
    calls = await emulator.calls_to(QUOTES_PATH)
    for _ in range(5):  # traffic flows again, past the trial budget
        assert (await quote(gateway, fresh(quotes))).status_code == 200
    assert await emulator.calls_to(QUOTES_PATH) == calls + 5


async def test_failed_half_open_trials_reopen_the_breaker(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(**BREAKER)
    await trip(gateway, emulator, quotes)
    await asyncio.sleep(OPEN_WAIT_S)  # the fault is still there

    for _ in range(2):
        response = await quote(gateway, fresh(quotes))
        assert response.json()["code"] == "UPSTREAM_UNAVAILABLE"  # trials reach Alpaca
    assert await emulator.calls_to(QUOTES_PATH) == 6

    symbol = fresh(quotes)
    assert_circuit_open(await quote(gateway, symbol), symbol)
    assert await emulator.calls_to(QUOTES_PATH) == 6
    assert (await breaker(gateway))["state"] == "open"
    assert await transitions(gateway, "half_open", "open") == 1
    assert await metric(gateway, "gateway_circuit_breaker_state", upstream="data") == 2


async def test_half_open_admits_only_the_trial_budget(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    """Concurrent requests after the wait: exactly `half_open_calls` reach Alpaca."""
    gateway = await make_gateway(**BREAKER)
    await trip(gateway, emulator, quotes)
    await emulator.clear_faults()
    await emulator.add_fault(QUOTES_PATH, "latency", delay_ms=150)
    await asyncio.sleep(OPEN_WAIT_S)

    symbols = [fresh(quotes) for _ in range(6)]
    responses = await asyncio.gather(*(quote(gateway, s) for s in symbols))

    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503, 503, 503]
    for symbol, response in zip(symbols, responses, strict=True):
        if response.status_code == 503:
            assert response.json()["code"] == "CIRCUIT_OPEN"
            assert response.json()["circuit_state"] == "half_open"
            assert response.json()["symbol"] == symbol
    assert await emulator.calls_to(QUOTES_PATH) == 4 + 2
    assert (await breaker(gateway))["state"] == "closed"


async def test_feed_not_permitted_does_not_open_the_breaker(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(**BREAKER)

    for _ in range(6):
        response = await quote(gateway, fresh(quotes), feed="sip")
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "FEED_NOT_PERMITTED"
    assert await emulator.calls_to(QUOTES_PATH) == 6  # each one really asked Alpaca

    state = await breaker(gateway)
    assert state["state"] == "closed"
    assert state["calls_in_window"] == 0
    assert (await quote(gateway, fresh(quotes))).status_code == 200


async def test_rejected_credentials_do_not_open_the_breaker(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(alpaca_api_secret_key="not-the-secret", **BREAKER)

    for _ in range(6):
        response = await quote(gateway, fresh(quotes))
        assert response.status_code == 502, response.text
        assert response.json()["code"] == "UPSTREAM_AUTH_FAILED"
    assert await emulator.calls_to(QUOTES_PATH) == 6

    assert (await breaker(gateway))["state"] == "closed"
    assert await transitions(gateway, "closed", "open") == 0


async def test_unknown_symbols_do_not_open_the_breaker(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    """Alpaca's 404 for an unknown asset is an answer about the symbol, not sickness."""
    gateway = await make_gateway(**BREAKER)

    for n in range(6):
        response = await quote(gateway, f"NOPE{n}")
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "SYMBOL_NOT_FOUND"

    assert (await breaker(gateway, "data"))["state"] == "closed"
    assert (await breaker(gateway, "trading"))["state"] == "closed"


async def test_alpaca_429_is_not_a_breaker_failure(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    """Three 500s and a 429 fill the window of four: were the 429 a failure, it would open."""
    gateway = await make_gateway(**BREAKER)
    await emulator.add_fault(QUOTES_PATH, "status_500", count=3)
    await emulator.add_fault(QUOTES_PATH, "rate_limited", count=1, retry_after_s=1)

    codes = [(await quote(gateway, fresh(quotes))).json()["code"] for _ in range(4)]

    assert codes == ["UPSTREAM_UNAVAILABLE"] * 3 + ["UPSTREAM_RATE_LIMITED"]
    state = await breaker(gateway)
    assert state["state"] == "closed"
    assert state["calls_in_window"] == 3
    assert await transitions(gateway, "closed", "open") == 0


async def test_breakers_are_per_upstream(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(**BREAKER)
    await trip(gateway, emulator, quotes)

    clock = await gateway.get("/v1/clock")

    assert clock.status_code == 200, clock.text
    assert clock.json()["is_open"] is True
    assert await emulator.calls_to("/v2/clock") == 1
    assert (await breaker(gateway, "data"))["state"] == "open"
    assert (await breaker(gateway, "trading"))["state"] == "closed"
    symbol = fresh(quotes)
    assert_circuit_open(await quote(gateway, symbol), symbol)


async def test_slow_successes_open_the_breaker(
    emulator: EmulatorControl, make_gateway: GatewayFactory, quotes: itertools.count[int]
) -> None:
    gateway = await make_gateway(
        **BREAKER,
        breaker_slow_call_duration_s=0.05,
        breaker_slow_call_rate_threshold=0.5,
        data_timeout_s=1.0,
    )
    await emulator.add_fault(QUOTES_PATH, "latency", delay_ms=100)

    for _ in range(4):
        response = await quote(gateway, fresh(quotes))
        assert response.status_code == 200, response.text  # every call succeeded...

    symbol = fresh(quotes)
    assert_circuit_open(await quote(gateway, symbol), symbol)  # ...yet it opened
    assert await emulator.calls_to(QUOTES_PATH) == 4
    state = await breaker(gateway)
    assert state["state"] == "open"
    assert state["failure_rate"] == 0.0
    assert state["slow_call_rate"] == 1.0
