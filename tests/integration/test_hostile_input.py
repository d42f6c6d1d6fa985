"""Input that must be refused before it means something else, and the HTTP edges a careful API
gets right. Each case was once answered wrongly: another instrument's price, a 500, a plain-text
413, a wrong `Allow`, an empty 307 whose Location came from the Host header.

Whatever is refused here is refused before Alpaca is asked: the emulator's call counter says so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE
from tests.support.contract import error_table

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
OCC = "SPY250117C00500000"
HUGE = "9" * 400  # past any bound, and past what a float division can hold
MARKET_DATA_ROUTES = (
    "/v1/stocks/SPY/quote",
    "/v1/stocks/quotes?symbols=SPY",
    "/v1/stocks/SPY/trade",
    "/v1/stocks/SPY/snapshot",
    "/v1/stocks/SPY/bars?timeframe=1Day",
    f"/v1/options/{OCC}/quote",
    "/v1/options/chain/SPY",
)


def assert_problem(response: httpx.Response, code: str) -> dict[str, object]:
    assert response.status_code == error_table()[code].status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, object] = response.json()
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture
async def quiet_emulator(emulator: EmulatorControl) -> EmulatorControl:
    """SPY known with a quote; the call counter starts at zero."""
    await emulator.set_quote("SPY", QUOTE)
    await emulator.reset_calls()
    return emulator


# --- symbols: the instrument asked for is the instrument answered ------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/v1/stocks/%C5%BFpy/quote",  # long s + py: upper() makes SPY
        "/v1/stocks/%EF%AC%81/trade",  # the fi ligature: upper() makes FI
        "/v1/stocks/a%C3%9F/snapshot",  # a + sharp s: upper() makes ASS
        "/v1/stocks/%C4%B1bm/bars?timeframe=1Day",  # dotless i: upper() makes IBM
        "/v1/options/%C5%BFpy250117C00500000/quote",
        "/v1/options/chain/%C5%BFpy",
        "/v1/options/contracts?underlying=%C5%BFpy",
        "/v1/options/chain/SPY?expiration_date=%D9%A2%D9%A0%D9%A2%D9%A5-01-17",  # Arabic digits
        "/v1/options/chain/SPY?strike_price_gte=%D9%A5",
    ],
)
async def test_non_ascii_input_is_refused_before_alpaca_is_asked(
    gateway: GatewayClient, quiet_emulator: EmulatorControl, path: str
) -> None:
    response = await gateway.get(path)

    assert_problem(response, "VALIDATION_ERROR")
    assert await quiet_emulator.calls() == {}


async def test_a_non_ascii_symbol_in_a_batch_fails_alone(
    gateway: GatewayClient, quiet_emulator: EmulatorControl
) -> None:
    response = await gateway.get("/v1/stocks/quotes", params={"symbols": "\u017fpy,SPY"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body["quotes"]) == ["SPY"]  # asked for once, as SPY itself
    assert body["quotes"]["SPY"]["ask_price"] == QUOTE["ap"]
    assert body["errors"]["\u017fpy"]["code"] == "VALIDATION_ERROR"
    assert await quiet_emulator.calls_to("/v2/stocks/quotes/latest") == 1


# --- numbers: every numeric parameter is bounded -------------------------------------------
@pytest.mark.parametrize("route", MARKET_DATA_ROUTES)
@pytest.mark.parametrize("parameter", ["stale_if_error_ms", "max_age_ms"])
async def test_an_enormous_number_is_a_validation_error_not_a_500(
    gateway: GatewayClient, quiet_emulator: EmulatorControl, route: str, parameter: str
) -> None:
    if parameter == "max_age_ms" and ("/bars" in route or "/chain/" in route):
        parameter = "stale_if_error_ms"  # the series routes take no max_age_ms
    separator = "&" if "?" in route else "?"

    response = await gateway.get(f"{route}{separator}{parameter}={HUGE}")

    body = assert_problem(response, "VALIDATION_ERROR")
    assert body["invalid_params"] == [
        {"name": parameter, "reason": "must be an integer from 0 to 31536000000"}
    ]
    assert await quiet_emulator.calls() == {}


@pytest.mark.parametrize(
    "query",
    ["limit=" + HUGE, "limit=0", "limit=10001", "limit=-1", "limit=1e3", "limit=%D9%A1"],
)
async def test_bar_limits_outside_the_documented_range_are_refused(
    gateway: GatewayClient, quiet_emulator: EmulatorControl, query: str
) -> None:
    response = await gateway.get(f"/v1/stocks/SPY/bars?timeframe=1Day&{query}")

    assert_problem(response, "VALIDATION_ERROR")
    assert await quiet_emulator.calls() == {}


async def test_the_largest_documented_bound_is_accepted(
    gateway: GatewayClient, quiet_emulator: EmulatorControl
) -> None:
    response = await gateway.get("/v1/stocks/SPY/quote?stale_if_error_ms=31536000000")

    assert response.status_code == 200, response.text


# --- observation times ahead of our clock --------------------------------------------------------
def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    "observed_at",
    ["2999-01-01T00:00:00Z", rfc3339(datetime.now(UTC) + timedelta(hours=1))],
    ids=["year-2999", "an-hour-ahead"],
)
async def test_a_quote_from_the_future_is_not_served_as_data(
    gateway: GatewayClient, emulator: EmulatorControl, observed_at: str
) -> None:
    await emulator.set_quote("SPY", {**QUOTE, "t": observed_at})

    response = await gateway.get("/v1/stocks/SPY/quote", params={"max_age_ms": 60_000})
    again = await gateway.get("/v1/stocks/SPY/quote")

    body = assert_problem(response, "UPSTREAM_BAD_RESPONSE")
    assert body["symbol"] == "SPY"
    assert isinstance(body["ahead_ms"], int)
    assert body["ahead_ms"] > 3_000_000
    assert_problem(again, "UPSTREAM_BAD_RESPONSE")  # not remembered as a value


async def test_a_quote_just_ahead_within_the_skew_tolerance_has_age_zero(
    make_gateway: GatewayFactory, emulator: EmulatorControl
) -> None:
    gateway = await make_gateway(clock_skew_tolerance_ms=5_000)
    observed_at = rfc3339(datetime.now(UTC) + timedelta(seconds=2))
    await emulator.set_quote("SPY", {**QUOTE, "t": observed_at})

    response = await gateway.get("/v1/stocks/SPY/quote", params={"max_age_ms": 0})

    assert response.status_code == 200, response.text
    assert response.json()["timestamp"] == observed_at
    assert response.json()["provenance"]["age_ms"] == 0


# --- bodies ---------------------------------------------------------------------------------------
async def test_an_announced_oversized_body_is_a_typed_413(
    make_gateway: GatewayFactory, quiet_emulator: EmulatorControl
) -> None:
    gateway = await make_gateway(max_body_bytes=1024)

    response = await gateway.post(
        "/v1/orders",
        content=b"{" + b" " * 4096 + b"}",
        headers={"Content-Type": "application/json", "Idempotency-Key": "k-1"},
    )

    body = assert_problem(response, "PAYLOAD_TOO_LARGE")
    assert body["max_body_bytes"] == 1024
    assert await quiet_emulator.calls() == {}


async def test_a_chunked_oversized_body_is_a_typed_413(
    make_gateway: GatewayFactory, quiet_emulator: EmulatorControl
) -> None:
    gateway = await make_gateway(max_body_bytes=1024)
    key = await gateway.issue_key("trading:write")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b" " * 512

    response = await gateway.post(
        "/v1/orders",
        content=chunks(),
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": "k-2",
            "Authorization": f"Bearer {key}",
        },
    )

    assert "content-length" not in response.request.headers
    assert_problem(response, "PAYLOAD_TOO_LARGE")
    assert await quiet_emulator.calls() == {}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None, "application/jsonx"]
)
async def test_an_order_that_is_not_json_is_415(
    gateway: GatewayClient, quiet_emulator: EmulatorControl, content_type: str | None
) -> None:
    key = await gateway.issue_key("trading:write")
    headers = {"Idempotency-Key": "k-3", "Authorization": f"Bearer {key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    order = {"symbol": "SPY", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}

    response = await gateway.post("/v1/orders", content=json.dumps(order), headers=headers)

    assert_problem(response, "UNSUPPORTED_MEDIA_TYPE")
    assert await quiet_emulator.calls() == {}


async def test_a_body_nested_past_the_parser_is_a_validation_error(
    gateway: GatewayClient, quiet_emulator: EmulatorControl
) -> None:
    key = await gateway.issue_key("trading:write")

    response = await gateway.post(
        "/v1/orders",
        content=b"[" * 20_000 + b"]" * 20_000,
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": "k-4",
            "Authorization": f"Bearer {key}",
        },
    )

    assert_problem(response, "VALIDATION_ERROR")
    assert await quiet_emulator.calls() == {}


# --- methods and paths ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/orders", {"GET", "HEAD", "POST", "OPTIONS"}),
        (
            "PUT",
            "/v1/orders/2b1d4fd6-9a0e-4a8a-9d3f-5f1c2a7e0b11",
            {"GET", "HEAD", "DELETE", "OPTIONS"},
        ),
        ("POST", "/v1/stocks/SPY/quote", {"GET", "HEAD", "OPTIONS"}),
    ],
)
async def test_405_names_every_method_the_path_takes(
    gateway: GatewayClient, method: str, path: str, allowed: set[str]
) -> None:
    response = await gateway.request(method, path)

    assert_problem(response, "METHOD_NOT_ALLOWED")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


async def test_options_says_what_a_path_takes(gateway: GatewayClient) -> None:
    response = await gateway.request("OPTIONS", "/v1/orders")

    assert response.status_code == 204
    assert {m.strip() for m in response.headers["allow"].split(",")} == {
        "GET",
        "HEAD",
        "POST",
        "OPTIONS",
    }


async def test_head_is_get_without_a_body(
    gateway: GatewayClient, quiet_emulator: EmulatorControl
) -> None:
    got = await gateway.get("/v1/stocks/SPY/quote")
    head = await gateway.head("/v1/stocks/SPY/quote")

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert "cache-status" in head.headers
    assert head.headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/stocks/SPY/quote/"), ("POST", "/v1/orders/"), ("GET", "/health/")],
)
async def test_a_trailing_slash_is_a_typed_404_never_a_redirect(
    gateway: GatewayClient, quiet_emulator: EmulatorControl, method: str, path: str
) -> None:
    response = await gateway.request(method, path, headers={"Host": "evil.example"})

    body = assert_problem(response, "ROUTE_NOT_FOUND")
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert "trailing slash" in str(body["hint"])
    assert await quiet_emulator.calls() == {}
