"""Every failure Alpaca (or the network in front of it) can produce becomes the contract's typed
problem: the right code and status, `upstream`, `retryable`, and never a value or a leaked page.

The emulator injects each fault; the gateway runs in-process against it (tests/conftest.py).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl, FaultKindName
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

QUOTES_PATH = "/v2/stocks/quotes/latest"
TRADES_PATH = "/v2/stocks/trades/latest"
SNAPSHOTS_PATH = "/v2/stocks/snapshots"
ASSETS_PATTERN = "/v2/assets/*"

TRADE = {
    "t": "2026-11-20T15:59:58.5Z",
    "x": "V",
    "p": 101.2501,
    "s": 100,
    "i": 52983525029461,
    "c": ["@"],
    "z": "C",
}
BAR = {
    "t": "2026-11-20T15:59:00Z",
    "o": 101.1,
    "h": 101.3,
    "l": 101.0,
    "c": 101.25,
    "v": 1200,
    "n": 40,
    "vw": 101.2,
}
SNAPSHOT = {
    "latestTrade": TRADE,
    "latestQuote": QUOTE,
    "minuteBar": BAR,
    "dailyBar": BAR,
    "prevDailyBar": BAR,
}
# Any of these in an error body would be a value passed off alongside a failure.
VALUE_FIELDS = ("bid_price", "ask_price", "price", "latest_quote", "latest_trade", "bars")


def assert_problem(
    response: httpx.Response,
    *,
    status: int,
    code: str,
    retryable: bool,
    upstream: str = "data",
    symbol: str | None = "AAPL",
) -> dict[str, Any]:
    """The response is the contract's problem+json for `code`; returns the body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["retryable"] is retryable
    assert body["upstream"] == upstream
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["instance"] == response.request.url.path
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    if symbol is not None:
        assert body["symbol"] == symbol
    for name in VALUE_FIELDS:
        assert name not in body, f"{name} leaked into an error body: {body}"
    return body


@pytest.fixture
async def stored(emulator: EmulatorControl) -> EmulatorControl:
    await emulator.set_state(
        quotes={"AAPL": QUOTE, "MSFT": QUOTE}, trades={"AAPL": TRADE}, snapshots={"AAPL": SNAPSHOT}
    )
    return emulator


# --- latest quote: one fault at a time ---------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("status_500", 503, "UPSTREAM_UNAVAILABLE"),
        ("status_502_html", 503, "UPSTREAM_UNAVAILABLE"),
        ("status_503", 503, "UPSTREAM_UNAVAILABLE"),
        ("status_504", 504, "UPSTREAM_TIMEOUT"),
        ("reset", 503, "UPSTREAM_UNAVAILABLE"),
        ("malformed_json", 502, "UPSTREAM_BAD_RESPONSE"),
        ("schema_missing_t", 502, "UPSTREAM_BAD_RESPONSE"),
        ("schema_wrong_type", 502, "UPSTREAM_BAD_RESPONSE"),
    ],
)
async def test_quote_fault_becomes_typed_problem(
    stored: EmulatorControl,
    make_gateway: GatewayFactory,
    kind: FaultKindName,
    status: int,
    code: str,
) -> None:
    gateway = await make_gateway()
    await stored.add_fault(QUOTES_PATH, kind)

    response = await gateway.get("/v1/stocks/AAPL/quote")

    body = assert_problem(response, status=status, code=code, retryable=True)
    # Proxy pages and plain-text bodies are never echoed to the client.
    for fragment in ("<html", "nginx", "Bad Gateway", "upstream connect error"):
        assert fragment not in response.text
    assert "Cache-Status" not in response.headers
    assert body["code"] == code


@pytest.mark.parametrize(
    ("fault_path", "called_path", "kind"),
    [
        (QUOTES_PATH, QUOTES_PATH, "status_500"),
        (QUOTES_PATH, QUOTES_PATH, "status_502_html"),
        (QUOTES_PATH, QUOTES_PATH, "malformed_json"),
        (QUOTES_PATH, QUOTES_PATH, "reset"),
        (ASSETS_PATTERN, "/v2/assets/ZZZZ", "reset"),
    ],
)
async def test_failed_call_reaches_alpaca_exactly_once(
    stored: EmulatorControl,
    make_gateway: GatewayFactory,
    fault_path: str,
    called_path: str,
    kind: FaultKindName,
) -> None:
    """The transport promises no retries: a failing upstream is not asked twice per request
    (aiohttp silently resends an idempotent GET once after a reset unless told not to)."""
    gateway = await make_gateway()
    await stored.add_fault(fault_path, kind)

    response = await gateway.get(
        "/v1/stocks/ZZZZ/quote" if "assets" in fault_path else "/v1/stocks/AAPL/quote"
    )

    assert response.status_code >= 500, response.text
    assert await stored.calls_to(called_path) == 1


async def test_hanging_upstream_times_out_fast(
    stored: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(data_timeout_s=0.3)
    await stored.add_fault(QUOTES_PATH, "hang")

    started = time.monotonic()
    response = await gateway.get("/v1/stocks/AAPL/quote")
    elapsed = time.monotonic() - started

    assert_problem(response, status=504, code="UPSTREAM_TIMEOUT", retryable=True)
    assert 0.25 <= elapsed < 1.0


async def test_latency_below_timeout_still_answers_real_values(
    stored: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(data_timeout_s=0.5)
    await stored.add_fault(QUOTES_PATH, "latency", delay_ms=150)

    response = await gateway.get("/v1/stocks/AAPL/quote")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bid_price"] == QUOTE["bp"]
    assert body["ask_price"] == QUOTE["ap"]
    assert body["timestamp"] == QUOTE["t"]
    assert body["provenance"]["cache"] == "miss"


async def test_schema_wrong_type_never_yields_a_partial_quote(
    stored: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    """Prices sent as strings: the whole quote is refused, not the other fields kept."""
    gateway = await make_gateway()
    await stored.add_fault(QUOTES_PATH, "schema_wrong_type")

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,MSFT"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["quotes"] == {}
    for symbol in ("AAPL", "MSFT"):
        problem = body["errors"][symbol]
        assert problem["code"] == "UPSTREAM_BAD_RESPONSE"
        assert problem["status"] == 502
        assert problem["upstream"] == "data"
        assert problem["symbol"] == symbol
        assert "bid_price" not in problem


async def test_alpaca_rate_limit_is_honoured_without_hammering(
    stored: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway()
    await stored.add_fault(QUOTES_PATH, "rate_limited", retry_after_s=7)

    first = await gateway.get("/v1/stocks/AAPL/quote")

    body = assert_problem(first, status=503, code="UPSTREAM_RATE_LIMITED", retryable=True)
    retry_after = int(first.headers["Retry-After"])
    assert 6 <= retry_after <= 7
    assert body["retry_after_s"] == retry_after
    assert await stored.calls_to(QUOTES_PATH) == 1

    # Alpaca said when its budget resets: asking again before then only burns goodwill.
    second = await gateway.get("/v1/stocks/MSFT/quote")

    body = assert_problem(
        second, status=503, code="UPSTREAM_RATE_LIMITED", retryable=True, symbol="MSFT"
    )
    assert 1 <= int(second.headers["Retry-After"]) <= 7
    assert body["retry_after_s"] == int(second.headers["Retry-After"])
    assert await stored.calls_to(QUOTES_PATH) == 1


async def test_rejected_credentials_are_typed_and_never_echoed(
    stored: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    secret = "wrong-secret-3f9a1c77e2"
    gateway = await make_gateway(alpaca_api_secret_key=secret)

    response = await gateway.get("/v1/stocks/AAPL/quote")

    assert_problem(response, status=502, code="UPSTREAM_AUTH_FAILED", retryable=False)
    assert secret not in response.text
    assert all(secret not in value for value in response.headers.values())
    assert await stored.calls_to(QUOTES_PATH) == 1


# --- the same mapping on the other data endpoints -----------------------------------------------
@pytest.mark.parametrize(
    ("route", "upstream_path"),
    [("/v1/stocks/AAPL/trade", TRADES_PATH), ("/v1/stocks/AAPL/snapshot", SNAPSHOTS_PATH)],
    ids=["trade", "snapshot"],
)
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("status_502_html", 503, "UPSTREAM_UNAVAILABLE"),
        ("status_504", 504, "UPSTREAM_TIMEOUT"),
        ("reset", 503, "UPSTREAM_UNAVAILABLE"),
        ("malformed_json", 502, "UPSTREAM_BAD_RESPONSE"),
        ("schema_missing_t", 502, "UPSTREAM_BAD_RESPONSE"),
        ("schema_wrong_type", 502, "UPSTREAM_BAD_RESPONSE"),
    ],
)
async def test_trade_and_snapshot_faults_map_like_quotes(
    stored: EmulatorControl,
    make_gateway: GatewayFactory,
    route: str,
    upstream_path: str,
    kind: FaultKindName,
    status: int,
    code: str,
) -> None:
    gateway = await make_gateway()
    healthy = await gateway.get(route)
    assert healthy.status_code == 200, healthy.text
    gateway = await make_gateway()  # a fresh cache: the fault must be what answers
    await stored.add_fault(upstream_path, kind)

    response = await gateway.get(route)

    assert_problem(response, status=status, code=code, retryable=True)
    assert "<html" not in response.text


async def test_trade_hang_times_out(stored: EmulatorControl, make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(data_timeout_s=0.3)
    await stored.add_fault(TRADES_PATH, "hang")

    started = time.monotonic()
    response = await gateway.get("/v1/stocks/AAPL/trade")

    assert_problem(response, status=504, code="UPSTREAM_TIMEOUT", retryable=True)
    assert time.monotonic() - started < 1.0


# --- the asset lookup on the trading host (unknown vs no data) -----------------------------------
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("status_500", 503, "UPSTREAM_UNAVAILABLE"),
        ("status_504", 504, "UPSTREAM_TIMEOUT"),
        ("reset", 503, "UPSTREAM_UNAVAILABLE"),
        ("malformed_json", 502, "UPSTREAM_BAD_RESPONSE"),
        ("schema_wrong_type", 502, "UPSTREAM_BAD_RESPONSE"),
    ],
)
async def test_failed_asset_lookup_is_the_missing_symbols_error(
    emulator: EmulatorControl,
    make_gateway: GatewayFactory,
    kind: FaultKindName,
    status: int,
    code: str,
) -> None:
    """Alpaca omitted AAPL; the lookup that would tell unknown from empty failed: say that."""
    await emulator.set_state(quotes={"MSFT": QUOTE}, assets=["AAPL"])
    gateway = await make_gateway()
    await emulator.add_fault(ASSETS_PATTERN, kind)

    single = await gateway.get("/v1/stocks/AAPL/quote")

    assert_problem(single, status=status, code=code, retryable=True, upstream="reference")

    gateway = await make_gateway()  # no negative cache from the first request
    await emulator.add_fault(ASSETS_PATTERN, kind)
    batch = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,MSFT"})

    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert list(body["quotes"]) == ["MSFT"]
    assert body["quotes"]["MSFT"]["bid_price"] == QUOTE["bp"]
    problem = body["errors"]["AAPL"]
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["upstream"] == "reference"
    assert problem["symbol"] == "AAPL"
    assert problem["retryable"] is True


async def test_asset_lookup_rate_limited_and_hang(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_state(assets=["AAPL", "MSFT"])
    gateway = await make_gateway(reference_timeout_s=0.3)
    await emulator.add_fault(ASSETS_PATTERN, "hang", count=1)

    started = time.monotonic()
    hung = await gateway.get("/v1/stocks/AAPL/quote")

    assert_problem(hung, status=504, code="UPSTREAM_TIMEOUT", retryable=True, upstream="reference")
    assert time.monotonic() - started < 1.0

    await emulator.add_fault(ASSETS_PATTERN, "rate_limited", retry_after_s=5)
    limited = await gateway.get("/v1/stocks/MSFT/quote")

    body = assert_problem(
        limited,
        status=503,
        code="UPSTREAM_RATE_LIMITED",
        retryable=True,
        upstream="reference",
        symbol="MSFT",
    )
    assert 4 <= int(limited.headers["Retry-After"]) <= 5
    assert body["retry_after_s"] == int(limited.headers["Retry-After"])


async def test_asset_lookup_without_fault_tells_unknown_from_empty(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    """The baseline the fault tests above depart from."""
    await emulator.set_state(assets=["AAPL"])
    gateway = await make_gateway()

    known = await gateway.get("/v1/stocks/AAPL/quote")
    unknown = await gateway.get("/v1/stocks/ZZZZ/quote")

    assert_problem(known, status=404, code="NO_DATA", retryable=True)
    assert_problem(
        unknown,
        status=404,
        code="SYMBOL_NOT_FOUND",
        retryable=False,
        upstream="reference",
        symbol="ZZZZ",
    )
