"""Market-data handlers: latest quotes/trades/bars, snapshots, and historical bars, quotes and
trades.

Answers contain exactly what tests stored (unless ``random_walk`` is on: then latest quotes
and trades, and those members of snapshots, come from the walk). Multi-symbol maps are written
with sorted keys, as Alpaca's Go encoder writes maps; a valid symbol with no data is left out
(or sent as ``null`` when configured), while single-symbol endpoints answer 200 with a null
payload. Historical bars are those stored for the asked timeframe, else those stored without one;
historical quotes and trades are the series stored for them, apart from the latest values.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web

from . import params
from .pagination import PageCursor, series_page
from .responses import data_error, json_response
from .state import STATE_KEY, EmulatorState, Stamped
from .wire_json import Json, JsonObject

Lookup = Callable[[EmulatorState, str], JsonObject | None]
Handler = Callable[[web.Request], Awaitable[web.Response]]
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


def _series_page(
    request: web.Request, symbols: list[str], stored: Mapping[str, Sequence[Stamped]]
) -> tuple[dict[str, list[JsonObject]], Json]:
    """Validate the parameters every historical series takes and cut the requested page."""
    query = request.query
    window = params.time_range(query)
    limit = params.limit(query)
    params.feed(query, params.HISTORICAL_FEEDS)
    params.check_asof(query)
    descending = params.descending(query)
    token = query.get("page_token")
    try:
        cursor = None if token is None else PageCursor.decode(token)
    except ValueError as exc:
        raise data_error(400, str(exc)) from exc
    max_page = request.app[STATE_KEY].config.max_page_size
    page = series_page(
        stored,
        symbols,
        window,
        limit=limit if max_page is None else min(limit, max_page),
        descending=descending,
        cursor=cursor,
    )
    return page.items, None if page.next_cursor is None else page.next_cursor.encode()


def _stored_bars(request: web.Request) -> Mapping[str, Sequence[Stamped]]:
    """The bars for the asked timeframe (validated first, with ``adjustment``)."""
    timeframe = params.timeframe(request.query)
    params.check_adjustment(request.query)
    return request.app[STATE_KEY].market.bars_for(timeframe)


def _stored_quotes(request: web.Request) -> Mapping[str, Sequence[Stamped]]:
    return request.app[STATE_KEY].market.quote_history


def _stored_trades(request: web.Request) -> Mapping[str, Sequence[Stamped]]:
    return request.app[STATE_KEY].market.trade_history


Series = Callable[[web.Request], Mapping[str, Sequence[Stamped]]]


def _multi_series(member: str, series: Series) -> Handler:
    """GET /v2/stocks/{member}: symbol-then-time pages; ``limit`` counts items across symbols.
    A symbol with nothing in the range is left out of the map."""

    async def handle(request: web.Request) -> web.Response:
        symbols = params.symbols(request.query)
        page, token = _series_page(request, symbols, series(request))
        by_symbol: JsonObject = {symbol: list[Json](items) for symbol, items in page.items()}
        return json_response({member: by_symbol, "next_page_token": token})

    return handle


def _single_series(member: str, series: Series) -> Handler:
    """GET /v2/stocks/{symbol}/{member}: the list is null when the page is empty, as Go sends a
    nil slice."""

    async def handle(request: web.Request) -> web.Response:
        symbol = params.check_symbol(request.match_info["symbol"])
        page, token = _series_page(request, [symbol], series(request))
        items = page.get(symbol)
        answer: Json = None if items is None else list[Json](items)
        return json_response({"symbol": symbol, member: answer, "next_page_token": token})

    return handle


bars = _multi_series("bars", _stored_bars)
symbol_bars = _single_series("bars", _stored_bars)
quotes = _multi_series("quotes", _stored_quotes)
symbol_quotes = _single_series("quotes", _stored_quotes)
trades = _multi_series("trades", _stored_trades)
symbol_trades = _single_series("trades", _stored_trades)
