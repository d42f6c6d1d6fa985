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

from . import market_data, options_data, orders, trading
from .responses import ApiFamily

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LATEST = ("feed", "currency")
_MULTI_LATEST = ("symbols", *_LATEST)
_SERIES = ("start", "end", "limit", "asof", "feed", "currency", "page_token", "sort")
_HISTORICAL = ("timeframe", "adjustment", *_SERIES)


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
    QUOTES = "quotes"
    SYMBOL_QUOTES = "symbol_quotes"
    TRADES = "trades"
    SYMBOL_TRADES = "symbol_trades"
    CLOCK = "clock"
    CALENDAR = "calendar"
    ASSETS = "assets"
    ASSET = "asset"
    ACCOUNT = "account"
    OPTION_LATEST_QUOTES = "option_latest_quotes"
    OPTION_LATEST_TRADES = "option_latest_trades"
    OPTION_SNAPSHOTS = "option_snapshots"
    OPTION_CHAIN = "option_chain"
    OPTION_CONTRACTS = "option_contracts"
    OPTION_CONTRACT = "option_contract"
    POSITIONS = "positions"
    POSITION = "position"
    ORDERS = "orders"
    ORDER = "order"
    ORDER_BY_CLIENT_ID = "order_by_client_id"
    SUBMIT_ORDER = "submit_order"
    REPLACE_ORDER = "replace_order"
    CANCEL_ORDER = "cancel_order"
    CANCEL_ORDERS = "cancel_orders"


@dataclass(frozen=True)
class AlpacaRoute:
    """One served Alpaca endpoint."""

    method: str
    path: str
    family: ApiFamily
    endpoint: Endpoint
    query: tuple[str, ...]
    handler: Handler


_OPTION_LATEST = ("symbols", "feed")
_OPTION_PAGE = ("feed", "limit", "updated_since", "page_token")
_CHAIN_FILTERS = (
    "type", "strike_price_gte", "strike_price_lte", "expiration_date", "expiration_date_gte",
    "expiration_date_lte", "root_symbol",
)  # fmt: skip
_CONTRACT_FILTERS = (
    "underlying_symbols", "show_deliverables", "status", "expiration_date",
    "expiration_date_gte", "expiration_date_lte", "root_symbol", "type", "style",
    "strike_price_gte", "strike_price_lte", "page_token", "limit", "ppind",
)  # fmt: skip
_ASSET_FILTERS = ("status", "asset_class", "exchange", "attributes")
_CALENDAR = ("start", "end", "date_type")
_ORDER_FILTERS = (
    "status", "limit", "after", "until", "direction", "nested", "symbols", "side", "asset_class",
)  # fmt: skip

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
    AlpacaRoute("GET", "/v2/stocks/quotes", _DATA, Endpoint.QUOTES, ("symbols", *_SERIES),
                market_data.quotes),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/quotes", _DATA, Endpoint.SYMBOL_QUOTES, _SERIES,
                market_data.symbol_quotes),
    AlpacaRoute("GET", "/v2/stocks/trades", _DATA, Endpoint.TRADES, ("symbols", *_SERIES),
                market_data.trades),
    AlpacaRoute("GET", "/v2/stocks/{symbol}/trades", _DATA, Endpoint.SYMBOL_TRADES, _SERIES,
                market_data.symbol_trades),
    AlpacaRoute("GET", "/v2/clock", _TRADING, Endpoint.CLOCK, (), trading.clock),
    AlpacaRoute("GET", "/v2/calendar", _TRADING, Endpoint.CALENDAR, _CALENDAR, trading.calendar),
    AlpacaRoute("GET", "/v2/assets", _TRADING, Endpoint.ASSETS, _ASSET_FILTERS, trading.assets),
    AlpacaRoute("GET", "/v2/assets/{symbol_or_asset_id}", _TRADING, Endpoint.ASSET, (),
                trading.asset),
    AlpacaRoute("GET", "/v2/account", _TRADING, Endpoint.ACCOUNT, (), trading.account),
    AlpacaRoute("GET", "/v1beta1/options/quotes/latest", _DATA, Endpoint.OPTION_LATEST_QUOTES,
                _OPTION_LATEST, options_data.latest_quotes),
    AlpacaRoute("GET", "/v1beta1/options/trades/latest", _DATA, Endpoint.OPTION_LATEST_TRADES,
                _OPTION_LATEST, options_data.latest_trades),
    AlpacaRoute("GET", "/v1beta1/options/snapshots", _DATA, Endpoint.OPTION_SNAPSHOTS,
                ("symbols", *_OPTION_PAGE), options_data.snapshots),
    AlpacaRoute("GET", "/v1beta1/options/snapshots/{underlying_symbol}", _DATA,
                Endpoint.OPTION_CHAIN, (*_OPTION_PAGE, *_CHAIN_FILTERS), options_data.chain),
    AlpacaRoute("GET", "/v2/options/contracts", _TRADING, Endpoint.OPTION_CONTRACTS,
                _CONTRACT_FILTERS, trading.option_contracts),
    AlpacaRoute("GET", "/v2/options/contracts/{symbol_or_id}", _TRADING,
                Endpoint.OPTION_CONTRACT, (), trading.option_contract),
    AlpacaRoute("GET", "/v2/positions", _TRADING, Endpoint.POSITIONS, (), trading.positions),
    AlpacaRoute("GET", "/v2/positions/{symbol_or_asset_id}", _TRADING, Endpoint.POSITION, (),
                trading.position),
    AlpacaRoute("GET", "/v2/orders", _TRADING, Endpoint.ORDERS, _ORDER_FILTERS,
                orders.list_orders),
    AlpacaRoute("POST", "/v2/orders", _TRADING, Endpoint.SUBMIT_ORDER, (), orders.submit_order),
    AlpacaRoute("DELETE", "/v2/orders", _TRADING, Endpoint.CANCEL_ORDERS, (),
                orders.cancel_all_orders),
    AlpacaRoute("GET", "/v2/orders/{order_id}", _TRADING, Endpoint.ORDER, ("nested",),
                orders.get_order),
    AlpacaRoute("PATCH", "/v2/orders/{order_id}", _TRADING, Endpoint.REPLACE_ORDER, (),
                orders.replace_order),
    AlpacaRoute("DELETE", "/v2/orders/{order_id}", _TRADING, Endpoint.CANCEL_ORDER, (),
                orders.cancel_order),
    AlpacaRoute("GET", "/v2/orders:by_client_order_id", _TRADING, Endpoint.ORDER_BY_CLIENT_ID,
                ("client_order_id",), orders.order_by_client_order_id),
)  # fmt: skip

_BY_KEY = {(route.method, route.path): route for route in ROUTES}


def route_of(request: web.Request) -> AlpacaRoute | None:
    """The table entry that aiohttp matched for this request (method and path), if any."""
    info = request.match_info.route.resource
    return None if info is None else _BY_KEY.get((request.method, info.canonical))


def add_alpaca_routes(app: web.Application) -> None:
    """Register every table entry on the application's router."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
