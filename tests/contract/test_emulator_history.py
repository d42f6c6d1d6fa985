"""Historical quotes and trades (GET /v2/stocks/quotes, /v2/stocks/trades and their single-symbol
forms) behave like Alpaca's: the stored series in symbol-then-time pages of ``limit`` items across
symbols, opaque page tokens, inclusive ``start``/``end``, Alpaca's 400s, and faults on their paths.
Each test drives the real process."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.emulator.control import EmulatorControl, EmulatorControlError

pytestmark = pytest.mark.contract

QUOTES, TRADES = "/v2/stocks/quotes", "/v2/stocks/trades"


def quote(t: str, bid: float, ask: float) -> dict[str, Any]:
    return {"t": t, "bx": "Q", "bp": bid, "bs": 2, "ax": "Q", "ap": ask, "as": 1, "c": ["R"],
            "z": "C"}  # fmt: skip


def trade(t: str, price: float, trade_id: int) -> dict[str, Any]:
    return {"t": t, "x": "V", "p": price, "s": 100, "i": trade_id, "c": ["@"], "z": "C"}


async def all_pages(
    alpaca: httpx.AsyncClient, path: str, member: str, query: dict[str, str]
) -> list[tuple[Any, str | None]]:
    """Every page of one query, following next_page_token: (the page's items, its token)."""
    pages: list[tuple[Any, str | None]] = []
    token: str | None = None
    while True:
        response = await alpaca.get(path, params=query | ({"page_token": token} if token else {}))
        assert response.status_code == 200, response.text
        token = response.json()["next_page_token"]
        pages.append((response.json()[member], token))
        if token is None:
            return pages


AAPL_QUOTES = [quote(f"2024-01-02T14:30:0{s}.000000001Z", 180 + s, 181 + s) for s in (2, 0, 1)]
MSFT_QUOTES = [quote(f"2024-01-02T14:30:0{s}Z", 370 + s, 371 + s) for s in (0, 1)]


async def test_quote_pages_hold_limit_quotes_across_symbols_in_symbol_then_time_order(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_state(quotes_history={"MSFT": MSFT_QUOTES, "AAPL": AAPL_QUOTES})

    pages = await all_pages(alpaca, QUOTES, "quotes", {"symbols": "MSFT,AAPL", "limit": "2"})

    aapl = [AAPL_QUOTES[1], AAPL_QUOTES[2], AAPL_QUOTES[0]]  # stored unsorted, served by t
    assert [items for items, _ in pages] == [
        {"AAPL": aapl[:2]},
        {"AAPL": aapl[2:], "MSFT": MSFT_QUOTES[:1]},
        {"MSFT": MSFT_QUOTES[1:]},
    ]
    assert all(base64.b64decode(token, validate=True) for _, token in pages[:-1] if token)


async def test_single_symbol_trades_page_by_max_page_size_and_keep_a_shared_nanosecond(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    same_t = "2024-01-02T17:00:00.029591476Z"  # prints share a nanosecond, as in Alpaca's example
    stored = [trade(same_t, 181.47, 73833), trade(same_t, 181.47, 73834), trade(same_t, 181.5, 9)]
    await control.set_trades_history("AAPL", stored)
    await control.configure(max_page_size=1)

    pages = await all_pages(alpaca, "/v2/stocks/AAPL/trades", "trades", {"limit": "10000"})

    assert [items for items, _ in pages] == [[one] for one in stored]  # in the order given


async def test_sort_desc_reverses_time_but_not_symbols(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    aapl = [trade("2024-01-02T14:30:00Z", 1, 1), trade("2024-01-02T14:30:01Z", 2, 2)]
    msft = [trade("2024-01-02T14:30:00Z", 3, 3)]
    await control.set_state(trades_history={"AAPL": aapl, "MSFT": msft})

    pages = await all_pages(
        alpaca, TRADES, "trades", {"symbols": "AAPL,MSFT", "sort": "desc", "limit": "1"}
    )

    assert [items for items, _ in pages] == [
        {"AAPL": [aapl[1]]},
        {"AAPL": [aapl[0]]},
        {"MSFT": msft},
    ]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("2024-01-02", "2024-01-02", [0, 1, 2]),  # a date covers the whole (UTC) day
        ("2024-01-02T14:30:00.000000001Z", None, [1, 2]),  # nanoseconds count, start inclusive
        (None, "2024-01-02T09:30:00.000000001-05:00", [0, 1]),  # offsets honoured, end inclusive
        ("2024-01-03", None, []),
    ],
)
async def test_quotes_are_filtered_by_start_and_end_to_the_nanosecond(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    start: str | None,
    end: str | None,
    expected: list[int],
) -> None:
    stored = [quote(f"2024-01-02T14:30:00.00000000{n}Z", n, n + 1) for n in range(3)]
    await control.set_quotes_history("AAPL", stored)
    query = ({"start": start} if start else {}) | ({"end": end} if end else {})

    single = (await alpaca.get("/v2/stocks/AAPL/quotes", params=query)).json()
    multi = (await alpaca.get(QUOTES, params={"symbols": "AAPL", **query})).json()

    wanted = [stored[n] for n in expected]
    assert single == {"symbol": "AAPL", "quotes": wanted or None, "next_page_token": None}
    assert multi == {"quotes": {"AAPL": wanted} if wanted else {}, "next_page_token": None}


async def test_symbols_without_history_are_left_out_or_null(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_quote("AAPL", quote("2024-01-02T14:30:00Z", 1, 2))  # latest, not history
    await control.set_trade("AAPL", trade("2024-01-02T14:30:00Z", 1, 1))

    multi = await alpaca.get(QUOTES, params={"symbols": "AAPL,ZZZZ"})
    single = await alpaca.get("/v2/stocks/AAPL/trades")

    assert multi.json() == {"quotes": {}, "next_page_token": None}
    assert single.json() == {"symbol": "AAPL", "trades": None, "next_page_token": None}


async def test_history_registers_the_asset_and_reset_forgets_it(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_trades_history("IBM", [trade("2024-01-02T14:30:00Z", 160, 1)])
    known = await alpaca.get("/v2/assets/IBM")
    latest = await alpaca.get("/v2/stocks/trades/latest", params={"symbols": "IBM"})
    await control.set_trades_history("IBM", None)
    removed = await alpaca.get("/v2/stocks/IBM/trades")
    await control.set_trades_history("IBM", [trade("2024-01-02T14:30:00Z", 160, 1)])
    await control.reset()
    after_reset = await alpaca.get("/v2/stocks/IBM/trades")

    assert known.status_code == 200
    assert latest.json() == {"trades": {}}  # the history is not the latest trade
    assert removed.json()["trades"] is None
    assert after_reset.json()["trades"] is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "missing symbols"),
        ({"symbols": "AAPL,aapl"}, "invalid symbol: aapl"),
        ({"symbols": "AAPL", "limit": "0"}, "invalid limit: 0, must be between 1 and 10000"),
        ({"symbols": "AAPL", "limit": "10001"},
         "invalid limit: 10001, must be between 1 and 10000"),
        ({"symbols": "AAPL", "start": "yesterday"}, "invalid start: yesterday"),
        ({"symbols": "AAPL", "start": "2024-01-03", "end": "2024-01-02"},
         "end should not be before start"),
        ({"symbols": "AAPL", "sort": "up"}, "invalid sort: up"),
        ({"symbols": "AAPL", "feed": "delayed_sip"}, "invalid feed: delayed_sip"),
        ({"symbols": "AAPL", "asof": "2024-13-01"}, "invalid asof: 2024-13-01"),
        ({"symbols": "AAPL", "page_token": "not-a-token"}, "invalid page token: not-a-token"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("path", [QUOTES, TRADES])
async def test_invalid_parameters_are_refused_with_400(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    path: str,
    query: dict[str, str],
    message: str,
) -> None:
    response = await alpaca.get(path, params=query)

    assert response.status_code == 400
    assert response.json() == {"message": message}


async def test_historical_sip_asof_and_currency_are_accepted_on_the_free_plan(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    stored = [trade("2024-01-02T14:30:00Z", 1.5, 1)]
    await control.set_trades_history("AAPL", stored)

    for asof in ("-", "2024-01-02"):
        response = await alpaca.get(
            "/v2/stocks/AAPL/trades", params={"feed": "sip", "asof": asof, "currency": "USD"}
        )
        assert response.json()["trades"] == stored


async def test_the_control_api_refuses_history_without_times_and_changes_nothing(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    stored = [quote("2024-01-02T14:30:00Z", 1, 2)]
    await control.set_quotes_history("AAPL", stored)

    with pytest.raises(EmulatorControlError) as no_t:
        await control.set_quotes_history("AAPL", [{"bp": 1}])
    with pytest.raises(EmulatorControlError) as bad_t:
        await control.set_state(trades_history={"AAPL": [trade("at noon", 1, 1)]})
    with pytest.raises(EmulatorControlError) as not_a_list:
        await control.set_state(quotes_history={"AAPL": quote("2024-01-02T14:30:00Z", 1, 2)})  # type: ignore[dict-item]

    assert [e.value.status_code for e in (no_t, bad_t, not_a_list)] == [400, 400, 400]
    assert "quote 0 needs a string t" in no_t.value.body
    assert (await alpaca.get("/v2/stocks/AAPL/quotes")).json()["quotes"] == stored
    assert (await alpaca.get("/v2/stocks/AAPL/trades")).json()["trades"] is None


async def test_faults_match_the_history_paths(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    stored = [trade("2024-01-02T14:30:00Z", 1.5, 1), trade("2024-01-02T14:30:01Z", 1.6, 2)]
    await control.set_trades_history("AAPL", stored)
    await control.add_fault(QUOTES, "status_500", count=1)
    await control.add_fault("/v2/stocks/*/trades", "schema_missing_t", count=1)
    await control.add_fault(TRADES, "rate_limited", count=1)

    failed = await alpaca.get(QUOTES, params={"symbols": "AAPL"})
    broken = await alpaca.get("/v2/stocks/AAPL/trades")
    limited = await alpaca.get(TRADES, params={"symbols": "AAPL"})
    healed = await alpaca.get(TRADES, params={"symbols": "AAPL"})

    assert (failed.status_code, failed.json()) == (500, {"message": "internal server error"})
    assert broken.status_code == 200
    assert broken.json()["trades"] == [{k: v for k, v in t.items() if k != "t"} for t in stored]
    assert (limited.status_code, limited.headers["X-RateLimit-Remaining"]) == (429, "0")
    assert healed.json() == {"trades": {"AAPL": stored}, "next_page_token": None}
