"""The Alpaca endpoints the emulator serves: one table for routing, faults and the contract test.

Paths are written as in Alpaca's OpenAPI documents (``{symbol}``), and ``query`` lists every
query parameter the handler reads; ``tests/contract/test_emulator_openapi.py`` checks both
against the documents, so the table cannot drift from Alpaca's published contract.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from aiohttp import web

from . import market_data, trading
from .responses import ApiFamily

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LATEST = ("feed", "currency")
_MULTI_LATEST = ("symbols", *_LATEST)
_HISTORICAL = (
    "timeframe", "start", "end", "limit", "adjustment", "asof", "feed", "currency",
    "page_token", "sort",
)  # fmt: skip


class Endpoint(Enum):
    """What an answer looks like, so fault bodies can imitate any endpoint."""

    LATEST_QUOTES = "latest_quotes"
    LATEST_QUOTE = "latest_quote"
    LATEST_TRADES = "latest_trades"
    LATEST_TRADE = "latest_trade"
    LATEST_BARS = "latest_bars"
    LATEST_BAR = "latest_bar"
    SNAPSHOTS = "snapshots"
    SNAPSHOT = "snapshot"
    BARS = "bars"
    SYMBOL_BARS = "symbol_bars"
    CLOCK = "clock"
    ASSET = "asset"
    ACCOUNT = "account"


@dataclass(frozen=True)
class AlpacaRoute:
    """One served Alpaca endpoint."""

    method: str
    path: str
    family: ApiFamily
    endpoint: Endpoint
    query: tuple[str, ...]
    handler: Handler


_DATA = ApiFamily.MARKET_DATA
_TRADING = ApiFamily.TRADING

ROUTES: tuple[AlpacaRoute, ...] = (
    AlpacaRoute("GET", "/v2/stocks/quotes/latest", _DATA, Endpoint.LATEST_QUOTES, _MULTI_LATEST,
                market_data.latest_quotes),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/quotes/latest", _DATA, Endpoint.LATEST_QUOTE,
                _LATEST, market_data.latest_quote),
    AlpacaRoute("GET", "/v2/stocks/trades/latest", _DATA, Endpoint.LATEST_TRADES, _MULTI_LATEST,
                market_data.latest_trades),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/trades/latest", _DATA, Endpoint.LATEST_TRADE,
                _LATEST, market_data.latest_trade),
    AlpacaRoute("GET", "/v2/stocks/bars/latest", _DATA, Endpoint.LATEST_BARS, _MULTI_LATEST,
                market_data.latest_bars),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/bars/latest", _DATA, Endpoint.LATEST_BAR, _LATEST,
                market_data.latest_bar),
    AlpacaRoute("GET", "/v2/stocks/snapshots", _DATA, Endpoint.SNAPSHOTS, _MULTI_LATEST,
                market_data.snapshots),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/snapshot", _DATA, Endpoint.SNAPSHOT, _LATEST,
                market_data.snapshot),
    AlpacaRoute("GET", "/v2/stocks/bars", _DATA, Endpoint.BARS, ("symbols", *_HISTORICAL),
                market_data.bars),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/bars", _DATA, Endpoint.SYMBOL_BARS, _HISTORICAL,
                market_data.symbol_bars),
    AlpacaRoute("GET", "/v2/clock", _TRADING, Endpoint.CLOCK, (), trading.clock),
    AlpacaRoute("GET", "/v2/assets/{symbol_or_asset_id}", _TRADING, Endpoint.ASSET, (),
                trading.asset),
    AlpacaRoute("GET", "/v2/account", _TRADING, Endpoint.ACCOUNT, (), trading.account),
)  # fmt: skip

_BY_PATH = {route.path: route for route in ROUTES}


def route_of(request: web.Request) -> AlpacaRoute | None:
    """The table entry that aiohttp matched for this request, if any."""
    info = request.match_info.route.resource
    return None if info is None else _BY_PATH.get(info.canonical)


def add_alpaca_routes(app: web.Application) -> None:
    """Register every table entry on the application's router."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
