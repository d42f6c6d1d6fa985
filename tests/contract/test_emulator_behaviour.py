"""The emulator behaves the way the gateway's tests rely on: faults, symbols, auth, budgets,
pagination and exact values. Each test states one behaviour and drives the real process."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from decimal import Decimal
from typing import Any, get_args

import httpx
import pytest

from tests.emulator.config import RandomWalk
from tests.emulator.control import (
    EmulatorControl,
    EmulatorControlError,
    FaultKindName,
    shared_ssl_context,
)
from tests.emulator.faults import FaultKind
from tests.emulator.process import EmulatorProcess, EmulatorStartError
from tests.emulator.random_walk import MarketWalk
from tests.emulator.timestamps import rfc3339_ns
from tests.emulator.wire_json import loads

pytestmark = pytest.mark.contract

QUOTE = {
    "t": "2022-08-17T10:07:40.286587431Z",
    "bx": "Q",
    "bp": 172.62,
    "bs": 2,
    "ax": "Q",
    "ap": 172.7,
    "as": 1,
    "c": ["R"],
    "z": "C",
}
TRADE = {
    "t": "2022-08-17T09:50:43.361102308Z",
    "x": "Q",
    "p": 172.78,
    "s": 100,
    "i": 826,
    "c": ["@", "F", "T"],
    "z": "C",
}
LATEST_QUOTES = "/v2/stocks/quotes/latest"
SHORT_TIMEOUT_S = 0.3


def bar(t: str, close: float) -> dict[str, Any]:
    return {"t": t, "o": close, "h": close, "l": close, "c": close, "v": 100, "n": 3, "vw": close}


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# --- faults -----------------------------------------------------------------------------------


def test_fault_kinds_offered_by_the_client_are_the_emulators() -> None:
    assert set(get_args(FaultKindName)) == {kind.value for kind in FaultKind}


async def test_reset_fault_aborts_the_connection_with_rst(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault("/v2/clock", "reset", count=1)

    with pytest.raises(httpx.ReadError) as raised:
        await alpaca.get("/v2/clock")

    assert caused_by(raised.value, ConnectionResetError)  # an RST, not an orderly close
    assert (await alpaca.get("/v2/clock")).status_code == 200  # the count is spent


async def test_hang_fault_answers_nothing_until_faults_are_cleared(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault("/v2/stocks/*", "hang")
    await control.set_quote("AAPL", QUOTE)

    with pytest.raises(httpx.ReadTimeout):
        await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL"}, timeout=SHORT_TIMEOUT_S)
    waiting = asyncio.create_task(alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL"}))
    await asyncio.sleep(SHORT_TIMEOUT_S)
    assert not waiting.done()
    await control.clear_faults()

    released = await asyncio.wait_for(waiting, timeout=5)
    assert released.json() == {"quotes": {"AAPL": QUOTE}}


async def test_latency_fault_delays_then_answers_normally(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault("/v2/clock", "latency", delay_ms=250, count=1)
    started = time.monotonic()

    response = await alpaca.get("/v2/clock")

    assert time.monotonic() - started >= 0.25
    assert response.status_code == 200
    assert response.json()["is_open"] is True


async def test_malformed_json_fault_sends_truncated_json(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault(LATEST_QUOTES, "malformed_json")
    await control.set_quote("AAPL", QUOTE)

    response = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL"})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.text.startswith('{"quotes":')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("status_500", 500, "application/json"),
        ("status_502_html", 502, "text/html"),
        ("status_503", 503, "text/plain"),
        ("status_504", 504, "text/html"),
    ],
)
async def test_status_faults_answer_like_alpaca_or_its_proxies(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    kind: FaultKindName,
    status: int,
    content_type: str,
) -> None:
    await control.add_fault("/v2/stocks/*", kind, count=1)

    response = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL"})

    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type)
    if status == 500:
        assert response.json() == {"message": "internal server error"}
    else:
        with pytest.raises(json.JSONDecodeError):
            response.json()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/stocks/AAPL/trades/latest", {"message": "too many requests."}),
        ("/v2/account", {"code": 42910000, "message": "rate limit exceeded"}),
    ],
)
async def test_rate_limited_fault_sends_429_with_a_reset_time(
    control: EmulatorControl, alpaca: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    await control.add_fault(path, "rate_limited", count=1, retry_after_s=30)

    response = await alpaca.get(path)

    assert response.status_code == 429
    assert response.json() == body
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Limit"] == "10000"
    assert abs(int(response.headers["X-RateLimit-Reset"]) - (time.time() + 30)) <= 2
    assert "Retry-After" not in response.headers  # Alpaca documents none


async def test_faults_match_in_order_and_run_out(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault("/v2/stocks/*", "status_500", count=1)
    await control.add_fault("/v2/stocks/*/quotes/latest", "status_503", count=2)

    statuses = [(await alpaca.get("/v2/stocks/AAPL/quotes/latest")).status_code for _ in range(4)]

    assert statuses == [500, 503, 503, 200]
    assert await control.faults() == []


async def test_fault_patterns_are_fnmatch_on_the_path_only(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault("/v2/stocks/*", "status_500")

    assert (await alpaca.get("/v2/stocks/AAPL/snapshot")).status_code == 500
    assert (await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL"})).status_code == 500
    assert (await alpaca.get("/v2/clock")).status_code == 200
    assert (await control.faults())[0]["count"] is None  # lasts until cleared


async def test_schema_missing_t_drops_timestamps_from_stored_and_sample_items(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_quote("AAPL", QUOTE)
    await control.add_fault(LATEST_QUOTES, "schema_missing_t", count=1)

    faulted = (await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,MSFT"})).json()
    normal = (await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,MSFT"})).json()

    assert faulted["quotes"]["AAPL"] == {k: v for k, v in QUOTE.items() if k != "t"}
    assert "t" not in faulted["quotes"]["MSFT"]
    assert "bp" in faulted["quotes"]["MSFT"]
    assert normal == {"quotes": {"AAPL": QUOTE}}  # stored data untouched


async def test_schema_wrong_type_sends_prices_as_strings(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_snapshot("AAPL", {"latestQuote": QUOTE, "latestTrade": TRADE})
    await control.add_fault("/v2/stocks/snapshots", "schema_wrong_type", count=1)

    snapshot = (await alpaca.get("/v2/stocks/snapshots", params={"symbols": "AAPL"})).json()

    assert snapshot["AAPL"]["latestQuote"]["bp"] == "172.62"
    assert snapshot["AAPL"]["latestTrade"]["p"] == "172.78"
    assert snapshot["AAPL"]["latestQuote"]["t"] == QUOTE["t"]


# --- calls and the request log ----------------------------------------------------------------


async def test_calls_are_counted_per_path_whatever_the_answer(
    emulator: EmulatorProcess, control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault("/v2/clock", "status_500", count=1)
    await alpaca.get("/v2/clock")  # fault
    await alpaca.get("/v2/clock")  # 200
    await alpaca.get(LATEST_QUOTES, params={"symbols": "1BAD"})  # 400
    async with httpx.AsyncClient(
        base_url=emulator.base_url, verify=shared_ssl_context()
    ) as anonymous:
        await anonymous.get(LATEST_QUOTES, params={"symbols": "AAPL"})  # 401

    assert await control.calls() == {"/v2/clock": 2, LATEST_QUOTES: 2}
    assert await control.calls_to("/v2/account") == 0
    await control.reset_calls()
    assert await control.calls() == {}
    assert await control.requests() == []


async def test_request_log_keeps_query_and_auth_presence_but_no_header_values(
    emulator: EmulatorProcess, control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,TSLA", "feed": "iex"})
    async with httpx.AsyncClient(
        base_url=emulator.base_url, verify=shared_ssl_context()
    ) as anonymous:
        await anonymous.get("/v2/clock")

    log = await control.requests()

    assert log == [
        {
            "method": "GET",
            "path": LATEST_QUOTES,
            "query": {"symbols": "AAPL,TSLA", "feed": "iex"},
            "has_auth": True,
        },
        {"method": "GET", "path": "/v2/clock", "query": {}, "has_auth": False},
    ]
    assert emulator.secret_key not in json.dumps(log)


# --- symbols ----------------------------------------------------------------------------------


async def test_unknown_symbols_are_omitted_by_default(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_quote("AAPL", QUOTE)

    response = await alpaca.get(f"{LATEST_QUOTES}?symbols=AAPL%2CZZZZ")

    assert response.status_code == 200
    assert response.json() == {"quotes": {"AAPL": QUOTE}}
    empty = await alpaca.get("/v2/stocks/snapshots", params={"symbols": "ZZZZ"})
    assert empty.json() == {}


async def test_unknown_symbols_are_null_when_configured(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.configure(unknown_symbols="null")
    await control.set_trade("AAPL", TRADE)

    response = await alpaca.get("/v2/stocks/trades/latest", params={"symbols": "ZZZZ,AAPL"})

    assert response.json() == {"trades": {"AAPL": TRADE, "ZZZZ": None}}
    assert (await control.config())["unknown_symbols"] == "null"


async def test_single_symbol_endpoints_answer_null_payloads_for_unknown_symbols(
    alpaca: httpx.AsyncClient, control: EmulatorControl
) -> None:
    quote = await alpaca.get("/v2/stocks/ZZZZ/quotes/latest")
    snapshot = await alpaca.get("/v2/stocks/ZZZZ/snapshot")
    bars = await alpaca.get("/v2/stocks/ZZZZ/bars", params={"timeframe": "1Day"})

    assert quote.json() == {"symbol": "ZZZZ", "quote": None}
    members = ("latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar")
    assert snapshot.json() == {"symbol": "ZZZZ", **dict.fromkeys(members)}
    assert bars.json() == {"symbol": "ZZZZ", "bars": None, "next_page_token": None}


@pytest.mark.parametrize("bad", ["1ABC", "AA PL", "A..B", "", "aapl", "AAPL.", "TOOLONGSYMBOLNAME"])
async def test_one_invalid_symbol_fails_the_whole_call(
    control: EmulatorControl, alpaca: httpx.AsyncClient, bad: str
) -> None:
    await control.set_quote("AAPL", QUOTE)

    response = await alpaca.get(LATEST_QUOTES, params={"symbols": f"AAPL,{bad}"})

    assert response.status_code == 400
    assert response.json() == {"message": f"invalid symbol: {bad}"}
    assert response.headers["X-RateLimit-Remaining"].isdigit()


async def test_class_share_symbols_are_valid(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_quote("BRK.B", QUOTE)

    response = await alpaca.get(LATEST_QUOTES, params={"symbols": "BRK.B,BF-B"})

    assert response.json() == {"quotes": {"BRK.B": QUOTE}}


# --- feeds and plans --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [LATEST_QUOTES, "/v2/stocks/snapshots", "/v2/stocks/bars/latest"])
async def test_free_plan_is_refused_recent_sip_data(
    control: EmulatorControl, alpaca: httpx.AsyncClient, path: str
) -> None:
    refused = await alpaca.get(path, params={"symbols": "AAPL", "feed": "sip"})
    await control.configure(plan="unlimited")
    allowed = await alpaca.get(path, params={"symbols": "AAPL", "feed": "sip"})

    assert refused.status_code == 403
    assert refused.json() == {"message": "subscription does not permit querying recent SIP data"}
    assert allowed.status_code == 200


async def test_free_plan_may_ask_delayed_sip_and_historical_sip(
    alpaca: httpx.AsyncClient, control: EmulatorControl
) -> None:
    delayed = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL", "feed": "delayed_sip"})
    historical = await alpaca.get(
        "/v2/stocks/bars", params={"symbols": "AAPL", "timeframe": "1Day", "feed": "sip"}
    )

    assert (delayed.status_code, historical.status_code) == (200, 200)
    assert [entry["query"].get("feed") for entry in await control.requests()] == [
        "delayed_sip",
        "sip",
    ]


@pytest.mark.parametrize(
    ("path", "feed"),
    [(LATEST_QUOTES, "opra"), (LATEST_QUOTES, "SIP"), ("/v2/stocks/bars", "delayed_sip")],
)
async def test_unknown_feeds_are_refused(
    control: EmulatorControl, alpaca: httpx.AsyncClient, path: str, feed: str
) -> None:
    query = {"symbols": "AAPL", "feed": feed, "timeframe": "1Min"}

    response = await alpaca.get(path, params=query)

    assert response.status_code == 400
    assert response.json() == {"message": f"invalid feed: {feed}"}


# --- authentication and the rate budget -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"APCA-API-KEY-ID": "emulator-key-id"},
        {"APCA-API-KEY-ID": "emulator-key-id", "APCA-API-SECRET-KEY": "wrong"},
        {"APCA-API-KEY-ID": "other", "APCA-API-SECRET-KEY": "emulator-secret-key"},
    ],
)
async def test_missing_or_wrong_keys_get_401_in_each_apis_shape(
    emulator: EmulatorProcess, control: EmulatorControl, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(
        base_url=emulator.base_url, headers=headers, verify=shared_ssl_context()
    ) as client:
        data = await client.get(LATEST_QUOTES, params={"symbols": "AAPL"})
        trading = await client.get("/v2/account")

    assert (data.status_code, data.json()) == (401, {"message": "unauthorized."})
    assert trading.status_code == 401
    assert trading.json() == {"code": 40110000, "message": "request is not authorized"}


async def test_rate_budget_runs_out_into_429_with_headers(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.configure(rate_limit_per_minute=3)

    answers = [await alpaca.get("/v2/clock") for _ in range(4)]
    data = await alpaca.get("/v2/stocks/AAPL/quotes/latest")

    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json() == {"code": 42910000, "message": "rate limit exceeded"}
    assert (data.status_code, data.json()) == (429, {"message": "too many requests."})
    reset_at = int(answers[3].headers["X-RateLimit-Reset"])
    assert time.time() < reset_at <= time.time() + 61
    assert all(a.headers["X-RateLimit-Limit"] == "3" for a in answers)
    await control.reset()
    assert (await alpaca.get("/v2/clock")).status_code == 200


# --- historical bars --------------------------------------------------------------------------


async def _all_pages(
    alpaca: httpx.AsyncClient, query: dict[str, str]
) -> list[tuple[dict[str, Any], str | None]]:
    pages: list[tuple[dict[str, Any], str | None]] = []
    token: str | None = None
    while True:
        page = (
            await alpaca.get(
                "/v2/stocks/bars", params=query | ({"page_token": token} if token else {})
            )
        ).json()
        token = page["next_page_token"]
        pages.append((page["bars"], token))
        if token is None:
            return pages


async def test_bar_pages_hold_limit_bars_across_symbols_in_symbol_then_time_order(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    aapl = [bar(f"2024-01-0{day}T05:00:00Z", 180 + day) for day in (4, 2, 3)]  # stored unsorted
    msft = [bar(f"2024-01-0{day}T05:00:00Z", 370 + day) for day in (2, 3)]
    await control.set_state(bars={"MSFT": msft, "AAPL": aapl})

    pages = await _all_pages(alpaca, {"symbols": "MSFT,AAPL", "timeframe": "1Day", "limit": "2"})

    assert [bars for bars, _ in pages] == [
        {"AAPL": [aapl[1], aapl[2]]},
        {"AAPL": [aapl[0]], "MSFT": [msft[0]]},
        {"MSFT": [msft[1]]},
    ]
    tokens = [token for _, token in pages]
    assert tokens[-1] is None
    assert all(base64.b64decode(t, validate=True) for t in tokens[:-1] if t is not None)


async def test_bars_sort_desc_reverses_time_but_not_symbols(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    aapl = [bar("2024-01-02T05:00:00Z", 1), bar("2024-01-03T05:00:00Z", 2)]
    msft = [bar("2024-01-02T05:00:00Z", 3)]
    await control.set_state(bars={"AAPL": aapl, "MSFT": msft})

    pages = await _all_pages(
        alpaca, {"symbols": "AAPL,MSFT", "timeframe": "1D", "sort": "desc", "limit": "1"}
    )

    assert [bars for bars, _ in pages] == [{"AAPL": [aapl[1]]}, {"AAPL": [aapl[0]]}, {"MSFT": msft}]


@pytest.mark.parametrize(
    ("start", "end", "expected_days"),
    [
        ("2024-01-03", "2024-01-03", [3]),  # a date covers the whole (UTC) day, end inclusive
        ("2024-01-03T05:00:00Z", None, [3, 4]),  # inclusive start
        (None, "2024-01-03T00:00:00-05:00", [2, 3]),  # offsets are honoured: 05:00Z
        ("2024-01-02T05:00:00.000000001Z", "2024-01-04T04:59:59.999999999Z", [3]),
    ],
)
async def test_bars_are_filtered_by_start_and_end(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    start: str | None,
    end: str | None,
    expected_days: list[int],
) -> None:
    bars = [bar(f"2024-01-0{day}T05:00:00Z", day) for day in (2, 3, 4)]
    await control.set_bars("AAPL", bars)
    query = (
        {"timeframe": "1Day"} | ({"start": start} if start else {}) | ({"end": end} if end else {})
    )

    response = await alpaca.get("/v2/stocks/AAPL/bars", params=query)

    assert [b["c"] for b in response.json()["bars"]] == expected_days


@pytest.mark.parametrize(
    "timeframe",
    ["1Min", "5Min", "59T", "1Hour", "12H", "1Day", "1D", "1Week", "1W", "1Month", "3M", "12Month"],
)
async def test_timeframe_aliases_are_accepted_and_bars_returned_as_stored(
    control: EmulatorControl, alpaca: httpx.AsyncClient, timeframe: str
) -> None:
    stored = [bar("2024-01-02T14:30:00Z", 1)]
    await control.set_bars("AAPL", stored)

    response = await alpaca.get(
        "/v2/stocks/bars", params={"symbols": "AAPL", "timeframe": timeframe}
    )

    assert response.json() == {"bars": {"AAPL": stored}, "next_page_token": None}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"timeframe": "60Min"}, "invalid timeframe: 60Min"),
        ({"timeframe": "2Day"}, "invalid timeframe: 2Day"),
        ({"timeframe": "1Sec"}, "invalid timeframe: 1Sec"),
        ({}, "missing timeframe"),
        ({"timeframe": "1Day", "limit": "0"}, "invalid limit: 0, must be between 1 and 10000"),
        (
            {"timeframe": "1Day", "limit": "10001"},
            "invalid limit: 10001, must be between 1 and 10000",
        ),
        ({"timeframe": "1Day", "limit": "ten"}, "invalid limit: ten, must be between 1 and 10000"),
        ({"timeframe": "1Day", "start": "2024-01-02 10:00"}, "invalid start: 2024-01-02 10:00"),
        ({"timeframe": "1Day", "sort": "up"}, "invalid sort: up"),
        ({"timeframe": "1Day", "page_token": "not-a-token"}, "invalid page token: not-a-token"),
    ],
)
async def test_invalid_bar_parameters_are_refused_with_400(
    control: EmulatorControl, alpaca: httpx.AsyncClient, query: dict[str, str], message: str
) -> None:
    response = await alpaca.get("/v2/stocks/bars", params={"symbols": "AAPL", **query})

    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_unknown_symbols_have_no_bars(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    response = await alpaca.get("/v2/stocks/bars", params={"symbols": "ZZZZ", "timeframe": "1Min"})

    assert response.json() == {"bars": {}, "next_page_token": None}


async def test_latest_bar_is_the_last_stored_bar(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    bars = [bar("2024-01-03T05:00:00Z", 2), bar("2024-01-02T05:00:00Z", 1)]
    await control.set_bars("AAPL", bars)

    response = await alpaca.get("/v2/stocks/bars/latest", params={"symbols": "AAPL"})

    assert response.json() == {"bars": {"AAPL": bars[0]}}


async def test_bars_stored_for_a_timeframe_answer_that_timeframe_only(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    daily = [bar("2024-01-02T05:00:00Z", 1), bar("2024-01-03T05:00:00Z", 2)]
    minutes = [bar("2024-01-03T14:30:00Z", 3), bar("2024-01-03T14:31:00Z", 4)]
    await control.set_bars("AAPL", daily)  # untimed: any other timeframe
    await control.set_bars("AAPL", minutes, timeframe="1T")  # stored as 1Min

    async def closes(timeframe: str) -> list[int]:
        response = await alpaca.get("/v2/stocks/AAPL/bars", params={"timeframe": timeframe})
        return [b["c"] for b in response.json()["bars"] or []]

    assert await closes("1Min") == [3, 4]
    assert await closes("1T") == [3, 4]
    assert await closes("1Day") == [1, 2]
    assert await closes("5Min") == [1, 2]
    latest = await alpaca.get("/v2/stocks/AAPL/bars/latest")
    assert latest.json()["bar"] == minutes[-1]  # Alpaca's latest bar is a minute bar

    await control.set_bars("AAPL", None, timeframe="1Min")
    assert await closes("1Min") == [1, 2]
    with pytest.raises(EmulatorControlError) as refused:
        await control.set_bars("AAPL", minutes, timeframe="60Min")
    assert refused.value.status_code == 400


async def test_bars_for_a_timeframe_alone_leave_other_timeframes_empty(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_bars("SPY", [bar("2024-01-03T14:30:00Z", 5)], timeframe="1Min")

    hourly = await alpaca.get("/v2/stocks/bars", params={"symbols": "SPY", "timeframe": "1Hour"})
    minutes = await alpaca.get("/v2/stocks/bars", params={"symbols": "SPY", "timeframe": "1Min"})

    assert hourly.json() == {"bars": {}, "next_page_token": None}
    assert [b["c"] for b in minutes.json()["bars"]["SPY"]] == [5]
    assert (await alpaca.get("/v2/assets/SPY")).status_code == 200


# --- values are never invented, rounded or filled ---------------------------------------------


async def test_stored_values_come_back_exactly(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    stale = {
        "t": "2022-03-18T19:59:59.999999999Z",  # days old, nanoseconds
        "bx": "V",
        "bp": 0,  # no active bid: stays 0, not null
        "bs": 0,
        "ax": "V",
        "ap": 172.6201,
        "as": 1,
        "c": ["R"],
        "z": "C",
    }
    penny = {"t": "2024-01-02T14:30:00.000000001Z", "ap": 0.0001, "z": "C"}  # no bp at all
    await control.set_state(quotes={"AAPL": stale, "PNNY": penny})

    response = await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,PNNY"})

    assert response.json() == {"quotes": {"AAPL": stale, "PNNY": penny}}
    assert '"ap":0.0001' in response.text
    assert '"ap":172.6201' in response.text
    assert '"bp":0,' in response.text


async def test_number_text_beyond_float_precision_is_passed_through(
    emulator: EmulatorProcess, control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    raw = '{"t":"2024-01-02T14:30:00Z","bp":172.620000000000000001,"bs":100}'
    async with httpx.AsyncClient(
        base_url=emulator.base_url, verify=shared_ssl_context()
    ) as raw_control:
        stored = await raw_control.put("/_emulator/quotes/AAPL", content=raw)
        assert stored.status_code == 204

    response = await alpaca.get("/v2/stocks/AAPL/quotes/latest")

    assert raw in response.text


# --- trading ----------------------------------------------------------------------------------


async def test_assets_are_known_once_registered_or_given_data(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_quote("AAPL", QUOTE)
    await control.set_asset("OTCX", {"exchange": "OTC", "tradable": False})

    aapl = (await alpaca.get("/v2/assets/AAPL")).json()
    by_id = (await alpaca.get(f"/v2/assets/{aapl['id']}")).json()
    otc = (await alpaca.get("/v2/assets/OTCX")).json()
    missing = await alpaca.get("/v2/assets/ZZZZ")

    assert aapl == by_id
    assert (aapl["symbol"], aapl["class"], aapl["tradable"]) == ("AAPL", "us_equity", True)
    assert (otc["exchange"], otc["tradable"], otc["symbol"]) == ("OTC", False, "OTCX")
    assert (missing.status_code, missing.json()) == (
        404,
        {"code": 40410000, "message": "asset not found"},
    )
    await control.remove_asset("OTCX")
    assert (await alpaca.get("/v2/assets/OTCX")).status_code == 404


async def test_clock_answers_what_was_set(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    closed = {
        "timestamp": "2025-06-28T11:00:00.123456789-04:00",
        "is_open": False,
        "next_open": "2025-06-30T09:30:00-04:00",
        "next_close": "2025-06-30T16:00:00-04:00",
    }
    await control.set_clock(closed)

    assert (await alpaca.get("/v2/clock")).json() == closed


async def test_unknown_paths_answer_404_in_json(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    response = await alpaca.get("/v2/nothing/here")

    assert (response.status_code, response.json()) == (404, {"message": "Not Found"})
    assert await control.calls_to("/v2/nothing/here") == 1


# --- the control API and the process helper ---------------------------------------------------


@pytest.mark.parametrize(
    "bad_setup",
    [
        lambda c: c.set_bars("AAPL", [{"o": 1.0}]),  # bars need a t to be ordered
        lambda c: c.set_bars("AAPL", [{"t": "yesterday"}]),
        lambda c: c.add_fault("/v2/*", "latency"),  # latency needs delay_ms
        lambda c: c.add_fault("/v2/*", "explode"),
        lambda c: c.configure(rate_limit_per_minute=-1),
    ],
)
async def test_control_api_refuses_bad_setup_loudly(
    control: EmulatorControl, bad_setup: Any
) -> None:
    with pytest.raises(EmulatorControlError) as raised:
        await bad_setup(control)

    assert raised.value.status_code == 400


async def test_reset_restores_a_fresh_emulator(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_quote("AAPL", QUOTE)
    await control.configure(
        plan="unlimited", unknown_symbols="null", rate_limit_per_minute=5, max_page_size=3
    )
    await control.set_sdk_shapes(order_extra_fields={"commission": 1.25})
    await control.set_random_walk(7)
    await control.add_fault("/v2/clock", "status_500")
    await alpaca.get("/v2/clock")

    await control.reset()

    assert await control.config() == {
        "unknown_symbols": "omit",
        "plan": "free",
        "rate_limit_per_minute": 10000,
        "max_page_size": None,
        "sdk_shapes": False,
        "order_extra_fields": {},
        "random_walk": None,
        "stream_slot_release_ms": 90000,
        "stream_auth_timeout_ms": 10000,
        "stream_symbol_limit": None,
    }
    assert await control.faults() == []
    assert await control.calls() == {}
    assert (await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL"})).json() == {"quotes": {}}
    assert (await alpaca.get("/v2/assets/AAPL")).status_code == 404


def test_process_failing_to_start_reports_its_stderr() -> None:
    with pytest.raises(EmulatorStartError, match="stderr"):
        EmulatorProcess(host="256.0.0.1").start()


# --- the random walk (off by default) ----------------------------------------------------------

CENT = Decimal("0.01")


async def exact(response: httpx.Response) -> Any:
    """The answer with its numbers as Decimals, so a tick can be checked exactly."""
    assert response.status_code == 200, response.text
    return loads(response.text)


async def test_walk_serves_the_stored_quote_first_then_moves_with_real_time(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    assert (await control.config())["random_walk"] is None
    await control.set_state(quotes={"AAPL": QUOTE}, trades={"AAPL": TRADE})
    await control.set_random_walk(11, step_ms=100)
    started_ns = time.time_ns()

    first = await exact(await alpaca.get("/v2/stocks/AAPL/quotes/latest"))
    await asyncio.sleep(0.5)
    quote = (await exact(await alpaca.get("/v2/stocks/AAPL/quotes/latest")))["quote"]
    trade = (await exact(await alpaca.get("/v2/stocks/AAPL/trades/latest")))["trade"]
    answered_ns = time.time_ns()

    assert first["quote"] == loads(json.dumps(QUOTE))  # the step the walk starts from
    for item in (quote, trade):
        assert started_ns < rfc3339_ns(item["t"]) < answered_ns
    assert 0 < quote["bp"] < quote["ap"]
    assert quote["bp"] % CENT == 0
    assert quote["ap"] % CENT == 0
    assert trade["p"] % CENT == 0
    assert {k: quote[k] for k in ("bx", "ax", "c", "z")} == {
        k: QUOTE[k] for k in ("bx", "ax", "c", "z")
    }
    assert {k: trade[k] for k in ("x", "c", "z")} == {k: TRADE[k] for k in ("x", "c", "z")}
    assert trade["i"] > TRADE["i"]  # one trade id per step


async def test_walk_moves_snapshot_quote_and_trade_but_not_its_bars(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    minute_bar = bar("2022-08-17T10:07:00Z", 172.7)
    await control.set_state(
        quotes={"AAPL": QUOTE},
        trades={"AAPL": TRADE},
        snapshots={"AAPL": {"latestQuote": QUOTE, "latestTrade": TRADE, "minuteBar": minute_bar}},
    )
    await control.set_random_walk(5, step_ms=50)
    await alpaca.get("/v2/stocks/AAPL/snapshot")  # starts the walk
    await asyncio.sleep(0.2)

    snapshot = (await alpaca.get("/v2/stocks/AAPL/snapshot")).json()

    assert snapshot["minuteBar"] == minute_bar
    assert snapshot["latestQuote"]["t"] > QUOTE["t"]
    assert snapshot["latestTrade"]["t"] > TRADE["t"]
    assert snapshot["dailyBar"] is None


async def test_storing_a_quote_again_restarts_the_walk_from_it(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_random_walk(3, step_ms=50)
    await control.set_quote("AAPL", QUOTE)
    await alpaca.get("/v2/stocks/AAPL/quotes/latest")
    await asyncio.sleep(0.2)
    moved = (await alpaca.get("/v2/stocks/AAPL/quotes/latest")).json()["quote"]
    fresh = {**QUOTE, "bp": 50.01, "ap": 50.05}

    await control.set_quote("AAPL", fresh)
    again = (await alpaca.get("/v2/stocks/AAPL/quotes/latest")).json()["quote"]
    await control.set_random_walk(None)
    stopped = (await alpaca.get("/v2/stocks/AAPL/quotes/latest")).json()["quote"]

    assert moved["t"] != QUOTE["t"]
    assert again == fresh
    assert stopped == fresh


async def test_walk_without_stored_data_invents_no_symbol(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_random_walk(1, step_ms=10)
    await control.set_quote("AAPL", {**QUOTE, "bp": 0, "ap": 0})  # no price to walk from

    await asyncio.sleep(0.05)
    quotes = (await alpaca.get(LATEST_QUOTES, params={"symbols": "AAPL,MSFT"})).json()

    assert quotes == {"quotes": {"AAPL": {**QUOTE, "bp": 0, "ap": 0}}}


def test_walk_is_seeded_positive_and_on_its_tick() -> None:
    """Driven with explicit times: the same seed gives the same market, whatever the anchor."""
    step_ns = 1_000_000_000
    start_ns = 1_700_000_000 * step_ns
    settings = RandomWalk(seed=42)
    quote_wire, trade_wire = loads(json.dumps(QUOTE)), loads(json.dumps(TRADE))  # as stored
    assert isinstance(quote_wire, dict)
    assert isinstance(trade_wire, dict)
    sub_dollar_quote = {
        "t": "2024-01-02T15:00:00Z",
        "bp": Decimal("0.0004"),
        "ap": Decimal("0.0005"),
    }
    cases = [
        ("AAPL", quote_wire, trade_wire, CENT),
        ("PENNY", sub_dollar_quote, None, Decimal("0.0001")),
    ]
    for symbol, quote, trade, tick in cases:
        walks = (MarketWalk(), MarketWalk())
        for k in range(0, 5_000, 3):
            now_ns = start_ns + k * step_ns
            a, b = (walk.latest(settings, symbol, quote, trade, now_ns) for walk in walks)
            assert a == b
            walked_quote, walked_trade = a
            assert walked_quote is not None
            if k:
                bid, ask = Decimal(walked_quote["bp"]), Decimal(walked_quote["ap"])
                assert 0 < bid < ask
                assert bid % tick == 0
                assert ask % tick == 0
                assert rfc3339_ns(str(walked_quote["t"])) < now_ns
            assert (walked_trade is None) == (trade is None)
    at_minute = start_ns + 60 * step_ns
    seeded = [MarketWalk() for _ in range(3)]
    for walk, seed in zip(seeded, (42, 42, 43), strict=True):
        assert walk.latest(RandomWalk(seed), "AAPL", quote_wire, trade_wire, start_ns) == (
            quote_wire,
            trade_wire,
        )
    minute = [w.latest(RandomWalk(seed), "AAPL", quote_wire, trade_wire, at_minute) for w, seed in
              zip(seeded, (42, 42, 43), strict=True)]  # fmt: skip
    assert minute[0] == minute[1] != minute[2]


async def test_control_api_refuses_a_bad_random_walk(control: EmulatorControl) -> None:
    for walk in ({"seed": "x"}, {"seed": 1, "step_ms": 0}, {"seed": 1, "speed": 2}, 7):
        with pytest.raises(EmulatorControlError) as refused:
            await control._send("PUT", "/_emulator/config", {"random_walk": walk})
        assert refused.value.status_code == 400
    assert (await control.config())["random_walk"] is None


async def test_process_started_with_a_walk_keeps_it_across_resets() -> None:
    with EmulatorProcess(random_walk_seed=5) as emulator:
        async with EmulatorControl(emulator.base_url) as control:
            await control.reset()
            assert (await control.config())["random_walk"] == {"seed": 5, "step_ms": 1000}
