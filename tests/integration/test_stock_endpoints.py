"""The stock read endpoints against the emulator: every value is exactly what the test stored.

Expected values are built here from the wire objects each test stores in the emulator, never
from gateway code. Upstream behaviour (which calls, which query) is read back from the
emulator's request log.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl

pytestmark = pytest.mark.integration

QUOTES_LATEST = "/v2/stocks/quotes/latest"
TRADES_LATEST = "/v2/stocks/trades/latest"
SNAPSHOTS = "/v2/stocks/snapshots"
BARS = "/v2/stocks/bars"
PROBLEM_JSON = "application/problem+json"

# Wire objects as Alpaca sends them; sub-penny prices and nanosecond timestamps on purpose.
QUOTE = {
    "t": "2024-03-15T19:59:59.123456789Z",
    "bx": "V",
    "bp": Decimal("172.6201"),
    "bs": 3,
    "ax": "Q",
    "ap": Decimal("172.6299"),
    "as": 7,
    "c": ["R"],
    "z": "C",
}
PENNY_QUOTE = {
    "t": "2024-03-15T19:59:58.000000001Z",
    "bx": "U",
    "bp": Decimal("0.0001"),
    "bs": 150000,
    "ax": "U",
    "ap": Decimal("0.0002"),
    "as": 90000,
    "c": ["R"],
    "z": "O",
}
TRADE = {
    "t": "2024-03-15T19:59:58.987654321Z",
    "x": "V",
    "p": Decimal("172.6101"),
    "s": 100,
    "i": 9007199254740993,  # above 2**53: a float would change it
    "c": ["@", "T"],
    "z": "C",
}
MINUTE_BAR = {
    "t": "2024-03-15T19:58:00Z",
    "o": Decimal("172.5"),
    "h": Decimal("172.7001"),
    "l": Decimal("172.4999"),
    "c": Decimal("172.61"),
    "v": 12345,
    "n": 321,
    "vw": Decimal("172.601234"),
}
DAILY_BAR = {
    "t": "2024-03-15T04:00:00Z",
    "o": Decimal("171.0001"),
    "h": Decimal("173.5"),
    "l": Decimal("170.25"),
    "c": Decimal("172.61"),
    "v": 56457696,
    "n": 515139,
    "vw": Decimal("172.743391"),
}
PREV_DAILY_BAR = {
    "t": "2024-03-14T04:00:00Z",
    "o": Decimal("170.5"),
    "h": Decimal("171.39"),
    "l": Decimal("169.345"),
    "c": Decimal("171.19"),
    "v": 54091719,
    "n": 501626,
    "vw": Decimal("170.625371"),
}
CLOCK = {
    "timestamp": "2024-03-15T15:59:58.123456789-04:00",
    "is_open": True,
    "next_open": "2024-03-18T09:30:00-04:00",
    "next_close": "2024-03-15T16:00:00-04:00",
}


# --- expected values, derived from the stored wire objects ----------------------------------
def expected_quote(symbol: str, wire: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's quote fields for a wire quote whose both sides are live."""
    return {
        "symbol": symbol,
        "bid_price": wire["bp"],
        "bid_size": wire["bs"],
        "bid_exchange": wire["bx"],
        "ask_price": wire["ap"],
        "ask_size": wire["as"],
        "ask_exchange": wire["ax"],
        "conditions": wire["c"],
        "tape": wire["z"],
        "timestamp": wire["t"],
    }


def expected_trade(symbol: str, wire: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "price": wire["p"],
        "size": wire["s"],
        "exchange": wire["x"],
        "id": wire["i"],
        "conditions": wire["c"],
        "tape": wire["z"],
        "timestamp": wire["t"],
    }


def expected_bar(wire: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "timestamp": wire["t"],
        "open": wire["o"],
        "high": wire["h"],
        "low": wire["l"],
        "close": wire["c"],
        "volume": wire["v"],
        "trade_count": wire["n"],
        "vwap": wire["vw"],
    }


def exact_json(response: httpx.Response) -> Any:
    """The body with fractional numbers as Decimal, so 172.6201 must be exactly 172.6201."""
    return json.loads(response.text, parse_float=Decimal)


def without_provenance(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "provenance"}


def rfc3339_ns(moment: datetime, nanos: int) -> str:
    """`moment` to the second, plus a nanosecond fraction, in Alpaca's `Z` form."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def seconds_ago(seconds: float) -> tuple[str, float]:
    """A nanosecond timestamp `seconds` in the past, and its epoch (to the microsecond)."""
    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    whole = moment.replace(microsecond=0)
    nanos = moment.microsecond * 1000 + 789  # sub-microsecond digits Alpaca may send
    return rfc3339_ns(whole, nanos), whole.timestamp() + moment.microsecond / 1e6


def quote_at(t: str) -> dict[str, Any]:
    return {**QUOTE, "t": t}


def daily_bars(count: int, first_day: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> list[Any]:
    """`count` consecutive daily bars with distinct sub-penny values."""
    return [
        {
            "t": (first_day + timedelta(days=i)).strftime("%Y-%m-%dT05:00:00Z"),
            "o": Decimal(f"{100 + i}.0001"),
            "h": Decimal(f"{101 + i}.2500"),
            "l": Decimal(f"{99 + i}.9999"),
            "c": Decimal(f"{100 + i}.5001"),
            "v": 1_000_000 + i,
            "n": 5_000 + i,
            "vw": Decimal(f"{100 + i}.432109"),
        }
        for i in range(count)
    ]


async def upstream_queries(emulator: EmulatorControl, path: str) -> list[dict[str, str]]:
    return [r["query"] for r in await emulator.requests() if r["path"] == path]


async def upstream_symbols(emulator: EmulatorControl, path: str) -> list[list[str]]:
    return [q["symbols"].split(",") for q in await upstream_queries(emulator, path)]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


# --- latest quote ------------------------------------------------------------------------------
async def test_quote_fields_are_alpaca_py_names_with_exactly_the_stored_values(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_state(quotes={"AAPL": QUOTE, "PNNY": PENNY_QUOTE})

    for symbol, wire in (("AAPL", QUOTE), ("PNNY", PENNY_QUOTE)):
        response = await gateway.get(f"/v1/stocks/{symbol}/quote")

        assert response.status_code == 200, response.text
        body = exact_json(response)
        assert without_provenance(body) == expected_quote(symbol, wire)
        assert body["provenance"]["observed_at"] == wire["t"]


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_quote_provenance_tells_age_source_feed_and_cache_miss_then_hit(
    emulator: EmulatorControl, make_gateway: GatewayFactory, redis_url: str, backend: str
) -> None:
    overrides: dict[str, Any] = {"cache_quote_ttl_s": 30.0}
    if backend == "redis":
        overrides |= {"redis_url": redis_url, "cache_namespace": f"test-{uuid.uuid4().hex}"}
    gateway = await make_gateway(**overrides)
    t, t_epoch = seconds_ago(2.5)
    await emulator.set_quote("AAPL", quote_at(t))

    before = time.time()
    first = await gateway.get("/v1/stocks/AAPL/quote")
    after = time.time()
    second = await gateway.get("/v1/stocks/AAPL/quote")

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    miss, hit = first.json()["provenance"], second.json()["provenance"]
    assert miss["source"] == "emulator"
    assert miss["feed"] == "iex"
    assert miss["observed_at"] == t
    assert first.json()["timestamp"] == t
    fetched_at = datetime.fromisoformat(miss["fetched_at"]).timestamp()
    assert before - 0.001 <= fetched_at <= after + 0.001
    assert (before - t_epoch) * 1000 - 1 <= miss["age_ms"] <= (after - t_epoch) * 1000 + 1
    assert miss["cache"] == "miss"
    assert hit["cache"] == "hit"
    assert hit["fetched_at"] == miss["fetched_at"]  # the true fetch time, not the hit's
    assert hit["age_ms"] >= miss["age_ms"]
    assert exact_json(second) == {
        **exact_json(first),
        "provenance": exact_json(second)["provenance"],
    }
    assert "miss" in first.headers["Cache-Status"]
    assert "hit" in second.headers["Cache-Status"]
    assert first.headers["X-Request-ID"]
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert await emulator.calls_to(QUOTES_LATEST) == 1


async def test_zero_bid_is_null_not_zero(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", {**QUOTE, "bp": 0, "bs": 0, "bx": " "})

    response = await gateway.get("/v1/stocks/AAPL/quote")

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert body["bid_price"] is None
    assert body["bid_size"] is None
    assert body["bid_exchange"] is None
    assert (body["ask_price"], body["ask_size"], body["ask_exchange"]) == (
        QUOTE["ap"],
        QUOTE["as"],
        QUOTE["ax"],
    )


async def test_absent_ask_is_null_and_no_mid_price_is_invented(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    bid_only = {k: v for k, v in QUOTE.items() if k not in ("ap", "as", "ax")}
    await emulator.set_quote("AAPL", bid_only)

    response = await gateway.get("/v1/stocks/AAPL/quote")

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert (body["ask_price"], body["ask_size"], body["ask_exchange"]) == (None, None, None)
    assert body["bid_price"] == QUOTE["bp"]
    assert QUOTE["ap"] not in body.values()


async def test_quote_with_both_sides_zero_is_no_data(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", {**QUOTE, "bp": 0, "bs": 0, "ap": 0, "as": 0})

    response = await gateway.get("/v1/stocks/AAPL/quote")

    body = assert_problem(response, 404, "NO_DATA")
    assert body["symbol"] == "AAPL"
    assert "bid_price" not in body


async def test_known_asset_without_a_quote_is_no_data(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_asset("MSFT")

    response = await gateway.get("/v1/stocks/MSFT/quote")

    assert assert_problem(response, 404, "NO_DATA")["symbol"] == "MSFT"


async def test_unknown_symbol_is_symbol_not_found(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/v1/stocks/ZZZZ/quote")

    assert assert_problem(response, 404, "SYMBOL_NOT_FOUND")["symbol"] == "ZZZZ"


async def test_lowercase_symbol_is_upper_cased_before_alpaca_sees_it(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/aapl/quote")

    assert response.status_code == 200, response.text
    assert response.json()["symbol"] == "AAPL"
    assert await upstream_symbols(emulator, QUOTES_LATEST) == [["AAPL"]]


# --- feed -------------------------------------------------------------------------------------
async def test_default_feed_is_sent_to_alpaca_explicitly(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/AAPL/quote")

    assert response.status_code == 200, response.text
    assert [q.get("feed") for q in await upstream_queries(emulator, QUOTES_LATEST)] == ["iex"]


async def test_requested_feed_is_sent_and_reported_in_provenance(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.configure(plan="unlimited")
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/AAPL/quote", params={"feed": "sip"})

    assert response.status_code == 200, response.text
    assert response.json()["provenance"]["feed"] == "sip"
    assert [q.get("feed") for q in await upstream_queries(emulator, QUOTES_LATEST)] == ["sip"]


async def test_feed_is_part_of_the_cache_key(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(cache_quote_ttl_s=30.0)
    await emulator.configure(plan="unlimited")
    await emulator.set_quote("AAPL", QUOTE)

    iex = await gateway.get("/v1/stocks/AAPL/quote", params={"feed": "iex"})
    sip = await gateway.get("/v1/stocks/AAPL/quote", params={"feed": "sip"})

    assert (iex.status_code, sip.status_code) == (200, 200)
    assert sip.json()["provenance"]["cache"] == "miss"
    assert [q["feed"] for q in await upstream_queries(emulator, QUOTES_LATEST)] == ["iex", "sip"]


async def test_sip_on_a_free_plan_is_feed_not_permitted(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/AAPL/quote", params={"feed": "sip"})

    body = assert_problem(response, 403, "FEED_NOT_PERMITTED")
    assert body["retryable"] is False
    assert "bid_price" not in body
    assert [q.get("feed") for q in await upstream_queries(emulator, QUOTES_LATEST)] == ["sip"]


async def test_unknown_feed_is_rejected_without_calling_alpaca(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/AAPL/quote", params={"feed": "bogus"})

    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await emulator.calls() == {}


# --- symbol validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "symbol",
    ["1BAD", "%2E%2E", ".A", "-A", "ABCDEFGHIJK", "AA%20PL", "A_B", "%C3%84"],
    ids=[
        "digit-first",
        "dot-dot",
        "dot-first",
        "dash-first",
        "11-chars",
        "space",
        "underscore",
        "non-ascii",
    ],
)
@pytest.mark.parametrize("endpoint", ["quote", "trade", "snapshot", "bars?timeframe=1Day"])
async def test_invalid_symbol_is_rejected_before_any_upstream_call(
    emulator: EmulatorControl, gateway: httpx.AsyncClient, symbol: str, endpoint: str
) -> None:
    response = await gateway.get(f"/v1/stocks/{symbol}/{endpoint}")

    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await emulator.calls() == {}


async def test_ten_character_symbol_with_dot_and_dash_is_accepted(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    # The contract's pattern allows up to ten characters including . and -; BRK.B is real.
    await emulator.set_quote("BRK.B", QUOTE)

    response = await gateway.get("/v1/stocks/brk.b/quote")

    assert response.status_code == 200, response.text
    assert response.json()["symbol"] == "BRK.B"


# --- batch quotes ------------------------------------------------------------------------------
async def test_batch_gives_partial_success_with_a_typed_error_per_missing_symbol(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_state(quotes={"AAPL": QUOTE}, assets=["MSFT"])

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,MSFT,ZZZZ,1BAD"})

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert set(body["quotes"]) == {"AAPL"}
    assert without_provenance(body["quotes"]["AAPL"]) == expected_quote("AAPL", QUOTE)
    assert body["quotes"]["AAPL"]["provenance"]["observed_at"] == QUOTE["t"]
    errors = body["errors"]
    assert {s: e["code"] for s, e in errors.items()} == {
        "MSFT": "NO_DATA",
        "ZZZZ": "SYMBOL_NOT_FOUND",
        "1BAD": "VALIDATION_ERROR",
    }
    assert {s: e["status"] for s, e in errors.items()} == {"MSFT": 404, "ZZZZ": 404, "1BAD": 422}
    for error in errors.values():
        assert {"type", "title", "status", "detail", "code", "request_id", "retryable"} <= set(
            error
        )
    sent = [s for call in await upstream_symbols(emulator, QUOTES_LATEST) for s in call]
    assert sorted(sent) == ["AAPL", "MSFT", "ZZZZ"]


async def test_batch_symbol_alpaca_refuses_does_not_sink_the_valid_ones(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    # `A..B` matches the contract's pattern but Alpaca answers 400 "invalid symbol" for it, and
    # one such symbol fails Alpaca's whole multi-symbol call: AAPL must still get its quote.
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,A..B"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["quotes"]) == {"AAPL"}, body
    assert set(body["errors"]) == {"A..B"}


async def test_batch_duplicates_collapse_to_one_symbol_and_one_upstream_request(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,aapl, AAPL,"})

    assert response.status_code == 200, response.text
    assert set(response.json()["quotes"]) == {"AAPL"}
    assert response.json()["errors"] == {}
    assert await upstream_symbols(emulator, QUOTES_LATEST) == [["AAPL"]]


async def test_batch_of_more_than_100_symbols_is_rejected_without_calling_alpaca(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    symbols = ",".join(f"S{i:03d}" for i in range(101))

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": symbols})

    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await emulator.calls() == {}


async def test_batch_of_exactly_100_symbols_is_served(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    symbols = [f"S{i:03d}" for i in range(100)]
    await emulator.set_state(quotes=dict.fromkeys(symbols, QUOTE))

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": ",".join(symbols)})

    assert response.status_code == 200, response.text
    assert set(response.json()["quotes"]) == set(symbols)


async def test_batch_fetches_only_the_symbols_not_already_cached(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(cache_quote_ttl_s=30.0)
    await emulator.set_state(quotes={"AAPL": QUOTE, "MSFT": PENNY_QUOTE})
    warm = await gateway.get("/v1/stocks/AAPL/quote")
    assert warm.status_code == 200, warm.text
    await emulator.reset_calls()

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,MSFT"})

    assert response.status_code == 200, response.text
    quotes = response.json()["quotes"]
    assert quotes["AAPL"]["provenance"]["cache"] == "hit"
    assert quotes["MSFT"]["provenance"]["cache"] == "miss"
    assert await upstream_symbols(emulator, QUOTES_LATEST) == [["MSFT"]]


async def test_batch_is_split_into_upstream_calls_of_the_configured_size(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(data_symbols_per_call=2)
    symbols = ["AA", "BB", "CC", "DD", "EE"]
    await emulator.set_state(quotes=dict.fromkeys(symbols, QUOTE))

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": ",".join(symbols)})

    assert response.status_code == 200, response.text
    assert set(response.json()["quotes"]) == set(symbols)
    calls = await upstream_symbols(emulator, QUOTES_LATEST)
    assert await emulator.calls_to(QUOTES_LATEST) == 3
    assert sorted(len(call) for call in calls) == [1, 2, 2]
    assert sorted(s for call in calls for s in call) == symbols


async def test_batch_reports_a_too_old_quote_as_data_stale_beside_fresh_ones(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    fresh, _ = seconds_ago(1)
    old, _ = seconds_ago(20)
    await emulator.set_state(quotes={"AAPL": quote_at(fresh), "MSFT": quote_at(old)})

    response = await gateway.get(
        "/v1/stocks/quotes", params={"symbols": "AAPL,MSFT", "max_age_ms": 10_000}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["quotes"]) == {"AAPL"}
    assert body["errors"]["MSFT"]["code"] == "DATA_STALE"
    assert body["errors"]["MSFT"]["age_ms"] >= 20_000


# --- max_age_ms ---------------------------------------------------------------------------------
async def test_quote_older_than_max_age_is_data_stale_without_the_values(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    t, _ = seconds_ago(10)
    await emulator.set_quote("AAPL", quote_at(t))

    response = await gateway.get("/v1/stocks/AAPL/quote", params={"max_age_ms": 5000})

    body = assert_problem(response, 503, "DATA_STALE")
    assert body["age_ms"] >= 10_000
    assert body["retryable"] is True
    for field in ("bid_price", "ask_price", "bid_size", "ask_size"):
        assert field not in body
    assert str(QUOTE["bp"]) not in response.text
    assert str(QUOTE["ap"]) not in response.text


async def test_quote_within_max_age_is_served(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    t, _ = seconds_ago(10)
    await emulator.set_quote("AAPL", quote_at(t))

    response = await gateway.get("/v1/stocks/AAPL/quote", params={"max_age_ms": 60_000})

    assert response.status_code == 200, response.text
    assert 10_000 <= response.json()["provenance"]["age_ms"] < 60_000


# --- latest trade -------------------------------------------------------------------------------
async def test_trade_fields_and_id_are_exactly_the_stored_values(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_trade("AAPL", TRADE)

    response = await gateway.get("/v1/stocks/AAPL/trade")

    assert response.status_code == 200, response.text
    body = exact_json(response)
    expected = expected_trade("AAPL", TRADE)
    assert {k: body[k] for k in expected} == expected
    assert isinstance(body["id"], int)
    assert body["provenance"]["observed_at"] == TRADE["t"]
    assert body["provenance"]["feed"] == "iex"
    assert [q.get("feed") for q in await upstream_queries(emulator, TRADES_LATEST)] == ["iex"]


async def test_trade_for_unknown_symbol_is_symbol_not_found(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/v1/stocks/ZZZZ/trade")

    assert assert_problem(response, 404, "SYMBOL_NOT_FOUND")["symbol"] == "ZZZZ"


async def test_trade_for_known_asset_without_a_trade_is_no_data(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_asset("MSFT")

    response = await gateway.get("/v1/stocks/MSFT/trade")

    assert_problem(response, 404, "NO_DATA")


# --- snapshot -----------------------------------------------------------------------------------
async def test_snapshot_members_each_carry_their_own_observed_at(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = {
        "latestTrade": TRADE,
        "latestQuote": QUOTE,
        "minuteBar": MINUTE_BAR,
        "dailyBar": DAILY_BAR,
        "prevDailyBar": PREV_DAILY_BAR,
    }
    await emulator.set_snapshot("AAPL", stored)

    response = await gateway.get("/v1/stocks/AAPL/snapshot")

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert body["symbol"] == "AAPL"
    trade = expected_trade("AAPL", TRADE)
    assert {k: body["latest_trade"][k] for k in trade} == trade
    assert without_provenance(body["latest_quote"]) == expected_quote("AAPL", QUOTE)
    for member, wire in (
        ("minute_bar", MINUTE_BAR),
        ("daily_bar", DAILY_BAR),
        ("prev_daily_bar", PREV_DAILY_BAR),
    ):
        assert without_provenance(body[member]) == expected_bar(wire)
    for member, wire in (
        ("latest_trade", TRADE),
        ("latest_quote", QUOTE),
        ("minute_bar", MINUTE_BAR),
        ("daily_bar", DAILY_BAR),
        ("prev_daily_bar", PREV_DAILY_BAR),
    ):
        provenance = body[member]["provenance"]
        assert provenance["observed_at"] == wire["t"], member
        assert provenance["feed"] == "iex"
        assert provenance["source"] == "emulator"
    assert [q.get("feed") for q in await upstream_queries(emulator, SNAPSHOTS)] == ["iex"]


async def test_snapshot_with_only_a_daily_bar_has_the_other_members_null(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_snapshot("AAPL", {"dailyBar": DAILY_BAR})

    response = await gateway.get("/v1/stocks/AAPL/snapshot")

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert body["latest_trade"] is None
    assert body["latest_quote"] is None
    assert body["minute_bar"] is None
    assert body["prev_daily_bar"] is None
    assert without_provenance(body["daily_bar"]) == expected_bar(DAILY_BAR)
    assert body["daily_bar"]["provenance"]["observed_at"] == DAILY_BAR["t"]


async def test_snapshot_quote_with_zero_bid_keeps_the_bid_null(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_snapshot("AAPL", {"latestQuote": {**QUOTE, "bp": 0, "bs": 0}})

    response = await gateway.get("/v1/stocks/AAPL/snapshot")

    assert response.status_code == 200, response.text
    quote = exact_json(response)["latest_quote"]
    assert (quote["bid_price"], quote["bid_size"], quote["bid_exchange"]) == (None, None, None)
    assert quote["ask_price"] == QUOTE["ap"]


async def test_empty_snapshot_of_a_known_asset_is_no_data(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_snapshot("AAPL", {})

    response = await gateway.get("/v1/stocks/AAPL/snapshot")

    assert assert_problem(response, 404, "NO_DATA")["symbol"] == "AAPL"


async def test_snapshot_of_unknown_symbol_is_symbol_not_found(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/v1/stocks/ZZZZ/snapshot")

    assert_problem(response, 404, "SYMBOL_NOT_FOUND")


# --- bars ----------------------------------------------------------------------------------------
async def test_bars_are_exactly_the_stored_values_with_newest_bar_as_observed_at(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = daily_bars(3)
    await emulator.set_bars("AAPL", stored)

    response = await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": "1Day"})

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert body["bars"] == [expected_bar(b) for b in stored]
    assert body["symbol"] == "AAPL"
    assert body["timeframe"] == "1Day"
    assert body["provenance"]["observed_at"] == stored[-1]["t"]
    assert body["provenance"]["feed"] == "iex"
    assert body["provenance"]["source"] == "emulator"
    (query,) = await upstream_queries(emulator, BARS)
    assert query["feed"] == "iex"
    assert query["timeframe"] == "1Day"
    assert query["symbols"] == "AAPL"


async def test_bars_stop_at_limit_when_more_exist(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = daily_bars(25)
    await emulator.set_bars("AAPL", stored)

    response = await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": "1Day", "limit": 20})

    assert response.status_code == 200, response.text
    assert exact_json(response)["bars"] == [expected_bar(b) for b in stored[:20]]
    assert [q["limit"] for q in await upstream_queries(emulator, BARS)] == ["20"]


async def test_bars_follow_alpaca_short_pages_until_limit(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = daily_bars(25)
    await emulator.set_bars("AAPL", stored)
    await emulator.configure(max_page_size=10)  # Alpaca may end a page early with a token

    response = await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": "1Day", "limit": 25})

    assert response.status_code == 200, response.text
    body = exact_json(response)
    assert body["bars"] == [expected_bar(b) for b in stored]
    assert body["next_page_token"] is None
    queries = await upstream_queries(emulator, BARS)
    assert [q["limit"] for q in queries] == ["25", "15", "5"]
    assert "page_token" not in queries[0]
    assert queries[1]["page_token"]
    assert queries[2]["page_token"] != queries[1]["page_token"]


async def test_bars_capped_by_max_pages_hand_back_alpacas_token_to_continue(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(bars_max_pages=2)
    stored = daily_bars(25)
    await emulator.set_bars("AAPL", stored)
    await emulator.configure(max_page_size=10)

    first = await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": "1Day", "limit": 25})
    assert first.status_code == 200, first.text
    first_body = exact_json(first)
    assert first_body["bars"] == [expected_bar(b) for b in stored[:20]]
    token = first_body["next_page_token"]
    assert token, "a capped series says so, with the token to continue"

    rest = await gateway.get(
        "/v1/stocks/AAPL/bars", params={"timeframe": "1Day", "limit": 25, "page_token": token}
    )
    assert rest.status_code == 200, rest.text
    rest_body = exact_json(rest)
    assert rest_body["bars"] == [expected_bar(b) for b in stored[20:]]
    assert rest_body["next_page_token"] is None


async def test_bars_return_all_when_fewer_than_limit_exist(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = daily_bars(25)
    await emulator.set_bars("AAPL", stored)

    response = await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": "1Day", "limit": 500})

    assert response.status_code == 200, response.text
    assert exact_json(response)["bars"] == [expected_bar(b) for b in stored]
    assert await emulator.calls_to(BARS) == 1


async def test_bars_at_the_largest_limit_take_one_full_alpaca_page(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    # Alpaca pages hold at most 10,000 bars, and 10,000 is also the largest `limit` we accept.
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    stored = [
        {
            "t": (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "o": i,
            "h": i,
            "l": i,
            "c": i,
            "v": i,
        }
        for i in range(10_005)
    ]
    await emulator.set_bars("AAPL", stored)

    response = await gateway.get(
        "/v1/stocks/AAPL/bars", params={"timeframe": "1Min", "limit": 10_000}
    )

    assert response.status_code == 200, response.text
    bars = response.json()["bars"]
    assert [b["timestamp"] for b in bars] == [b["t"] for b in stored[:10_000]]
    assert [b["open"] for b in bars[-2:]] == [9_998, 9_999]
    assert [q["limit"] for q in await upstream_queries(emulator, BARS)] == ["10000"]
    assert response.json()["provenance"]["observed_at"] == stored[9_999]["t"]


@pytest.mark.parametrize("limit", [0, 10_001])
async def test_bars_limit_outside_alpaca_range_is_rejected_without_calling_alpaca(
    emulator: EmulatorControl, gateway: httpx.AsyncClient, limit: int
) -> None:
    await emulator.set_bars("AAPL", daily_bars(3))

    response = await gateway.get(
        "/v1/stocks/AAPL/bars", params={"timeframe": "1Day", "limit": limit}
    )

    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await emulator.calls() == {}


async def test_bars_start_and_end_are_passed_through(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = daily_bars(20)  # 2024-01-01 .. 2024-01-20, each at 05:00Z
    await emulator.set_bars("AAPL", stored)
    params = {
        "timeframe": "1Day",
        "start": "2024-01-05T00:00:00Z",
        "end": "2024-01-09T23:59:59Z",
        "adjustment": "split",
    }

    response = await gateway.get("/v1/stocks/AAPL/bars", params=params)

    assert response.status_code == 200, response.text
    assert exact_json(response)["bars"] == [expected_bar(b) for b in stored[4:9]]
    (query,) = await upstream_queries(emulator, BARS)
    assert query["start"] == params["start"]
    assert query["end"] == params["end"]
    assert query["adjustment"] == "split"


@pytest.mark.parametrize("timeframe", ["7Day", "60Min", "1Sec", "24Hour", "5Month", "0Min", "Day"])
async def test_invalid_timeframe_is_rejected_without_calling_alpaca(
    emulator: EmulatorControl, gateway: httpx.AsyncClient, timeframe: str
) -> None:
    await emulator.set_bars("AAPL", daily_bars(3))

    response = await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": timeframe})

    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await emulator.calls() == {}


async def test_bars_start_after_end_is_rejected_without_calling_alpaca(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_bars("AAPL", daily_bars(3))

    response = await gateway.get(
        "/v1/stocks/AAPL/bars",
        params={"timeframe": "1Day", "start": "2024-02-01", "end": "2024-01-01"},
    )

    assert_problem(response, 422, "VALIDATION_ERROR")
    assert await emulator.calls() == {}


async def test_bars_none_in_range_for_a_known_symbol_is_no_data(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_bars("AAPL", daily_bars(3))

    response = await gateway.get(
        "/v1/stocks/AAPL/bars",
        params={"timeframe": "1Day", "start": "2023-06-01", "end": "2023-06-30"},
    )

    assert assert_problem(response, 404, "NO_DATA")["symbol"] == "AAPL"


async def test_bars_for_unknown_symbol_is_symbol_not_found(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/v1/stocks/ZZZZ/bars", params={"timeframe": "1Day"})

    assert_problem(response, 404, "SYMBOL_NOT_FOUND")


async def test_closed_interval_bars_are_served_from_cache_on_repeat(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    stored = daily_bars(10)
    await emulator.set_bars("AAPL", stored)
    params = {"timeframe": "1Day", "start": "2024-01-01", "end": "2024-01-31"}

    first = await gateway.get("/v1/stocks/AAPL/bars", params=params)
    second = await gateway.get("/v1/stocks/AAPL/bars", params=params)

    assert (first.status_code, second.status_code) == (200, 200)
    assert (
        exact_json(second)["bars"] == exact_json(first)["bars"] == [expected_bar(b) for b in stored]
    )
    assert first.json()["provenance"]["cache"] == "miss"
    assert second.json()["provenance"]["cache"] == "hit"
    assert await emulator.calls_to(BARS) == 1


# --- clock ----------------------------------------------------------------------------------------
async def test_clock_fields_are_exactly_as_alpaca_sent_them(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_clock(CLOCK)

    response = await gateway.get("/v1/clock")

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in CLOCK} == CLOCK
    assert body["provenance"]["observed_at"] == CLOCK["timestamp"]
    assert body["provenance"]["source"] == "emulator"
    assert body["provenance"]["cache"] == "miss"


async def test_clock_closed_market_is_reported_as_closed(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    closed = {**CLOCK, "is_open": False, "timestamp": "2024-03-16T11:00:00.5-04:00"}
    await emulator.set_clock(closed)

    response = await gateway.get("/v1/clock")

    assert response.status_code == 200, response.text
    assert response.json()["is_open"] is False
    assert response.json()["timestamp"] == closed["timestamp"]
