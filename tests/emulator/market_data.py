"""Market-data handlers: latest quotes/trades/bars, snapshots and historical bars.

Answers contain exactly what tests stored (unless ``random_walk`` is on: then latest quotes
and trades, and those members of snapshots, come from the walk). Multi-symbol maps are written
with sorted keys, as Alpaca's Go encoder writes maps; a valid symbol with no data is left out
(or sent as ``null`` when configured), while single-symbol endpoints answer 200 with a null
payload. Historical bars are those stored for the asked timeframe, else those stored without one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from . import params
from .pagination import PageCursor, bar_page
from .responses import data_error, json_response
from .state import STATE_KEY, EmulatorState
from .wire_json import Json, JsonObject

Lookup = Callable[[EmulatorState, str], JsonObject | None]
SNAPSHOT_MEMBERS = ("latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar")


def latest_quote_and_trade(
    state: EmulatorState, symbol: str
) -> tuple[JsonObject | None, JsonObject | None]:
    """The stored latest quote and trade, or with ``random_walk`` on, where the walk is now."""
    quote, trade = state.market.quotes.get(symbol), state.market.trades.get(symbol)
    settings = state.config.random_walk
    if settings is None:
        return quote, trade
    return state.walk.latest(settings, symbol, quote, trade, time.time_ns())


def _quote(state: EmulatorState, symbol: str) -> JsonObject | None:
    return latest_quote_and_trade(state, symbol)[0]


def _trade(state: EmulatorState, symbol: str) -> JsonObject | None:
    return latest_quote_and_trade(state, symbol)[1]


def _latest_bar(state: EmulatorState, symbol: str) -> JsonObject | None:
    return state.market.latest_bar(symbol)


def _snapshot(state: EmulatorState, symbol: str) -> JsonObject | None:
    """The stored snapshot; a walking symbol's latestQuote/latestTrade members walk too."""
    stored = state.market.snapshots.get(symbol)
    if stored is None or state.config.random_walk is None:
        return stored
    quote, trade = latest_quote_and_trade(state, symbol)
    live = dict(stored)
    for member, value in (("latestQuote", quote), ("latestTrade", trade)):
        if isinstance(stored.get(member), dict) and value is not None:
            live[member] = value
    return live


def _check_latest_feed(request: web.Request) -> None:
    """Validate ``feed`` and refuse recent SIP data to a free plan, like Alpaca's Basic plan."""
    feed = params.feed(request.query, params.LATEST_FEEDS)
    if feed == "sip" and request.app[STATE_KEY].config.plan == "free":
        raise data_error(403, "subscription does not permit querying recent SIP data")


def _by_symbol(request: web.Request, lookup: Lookup) -> JsonObject:
    """The per-symbol map of a multi-symbol latest or snapshot answer."""
    symbols = params.symbols(request.query)
    _check_latest_feed(request)
    state = request.app[STATE_KEY]
    answer: JsonObject = {}
    for symbol in sorted(symbols):
        value = lookup(state, symbol)
        if value is not None or state.config.unknown_symbols == "null":
            answer[symbol] = value
    return answer


def _one_symbol(request: web.Request, lookup: Lookup) -> tuple[str, JsonObject | None]:
    symbol = params.check_symbol(request.match_info["symbol"])
    _check_latest_feed(request)
    return symbol, lookup(request.app[STATE_KEY], symbol)


async def latest_quotes(request: web.Request) -> web.Response:
    """GET /v2/stocks/quotes/latest"""
    return json_response({"quotes": _by_symbol(request, _quote)})


async def latest_quote(request: web.Request) -> web.Response:
    """GET /v2/stocks/{symbol}/quotes/latest"""
    symbol, quote = _one_symbol(request, _quote)
    return json_response({"symbol": symbol, "quote": quote})


async def latest_trades(request: web.Request) -> web.Response:
    """GET /v2/stocks/trades/latest"""
    return json_response({"trades": _by_symbol(request, _trade)})


async def latest_trade(request: web.Request) -> web.Response:
    """GET /v2/stocks/{symbol}/trades/latest"""
    symbol, trade = _one_symbol(request, _trade)
    return json_response({"symbol": symbol, "trade": trade})


async def latest_bars(request: web.Request) -> web.Response:
    """GET /v2/stocks/bars/latest: the last stored bar of each symbol."""
    return json_response({"bars": _by_symbol(request, _latest_bar)})


async def latest_bar(request: web.Request) -> web.Response:
    """GET /v2/stocks/{symbol}/bars/latest"""
    symbol, bar = _one_symbol(request, _latest_bar)
    return json_response({"symbol": symbol, "bar": bar})


async def snapshots(request: web.Request) -> web.Response:
    """GET /v2/stocks/snapshots: the root object is the map, with no wrapper key."""
    return json_response(_by_symbol(request, _snapshot))


async def snapshot(request: web.Request) -> web.Response:
    """GET /v2/stocks/{symbol}/snapshot: flat, the five members null when absent."""
    symbol, stored = _one_symbol(request, _snapshot)
    answer: JsonObject = {"symbol": symbol}
    answer.update(dict.fromkeys(SNAPSHOT_MEMBERS))
    answer.update(stored or {})
    return json_response(answer)


def _bars_page(
    request: web.Request, symbols: list[str]
) -> tuple[dict[str, list[JsonObject]], Json]:
    """Validate the historical-bars parameters and cut the requested page."""
    query = request.query
    timeframe = params.timeframe(query)
    window = params.time_range(query)
    limit = params.limit(query)
    params.feed(query, params.HISTORICAL_FEEDS)
    params.check_adjustment(query)
    descending = params.descending(query)
    token = query.get("page_token")
    try:
        cursor = None if token is None else PageCursor.decode(token)
    except ValueError as exc:
        raise data_error(400, str(exc)) from exc
    max_page = request.app[STATE_KEY].config.max_page_size
    page = bar_page(
        request.app[STATE_KEY].market.bars_for(timeframe),
        symbols,
        window,
        limit=limit if max_page is None else min(limit, max_page),
        descending=descending,
        cursor=cursor,
    )
    return page.bars, None if page.next_cursor is None else page.next_cursor.encode()


async def bars(request: web.Request) -> web.Response:
    """GET /v2/stocks/bars: symbol-then-time pages; ``limit`` counts bars across symbols."""
    page, token = _bars_page(request, params.symbols(request.query))
    by_symbol: JsonObject = {symbol: list[Json](items) for symbol, items in page.items()}
    return json_response({"bars": by_symbol, "next_page_token": token})


async def symbol_bars(request: web.Request) -> web.Response:
    """GET /v2/stocks/{symbol}/bars: ``bars`` is null when the page is empty, as Go sends nil."""
    symbol = params.check_symbol(request.match_info["symbol"])
    page, token = _bars_page(request, [symbol])
    items = page.get(symbol)
    answer_bars: Json = None if items is None else list[Json](items)
    return json_response({"symbol": symbol, "bars": answer_bars, "next_page_token": token})
