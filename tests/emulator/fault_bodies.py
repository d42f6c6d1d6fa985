"""Bodies for the faults that answer 200 with broken content.

Each body imitates the matched endpoint's normal answer, built from the stored data (or a
realistic sample for a symbol with nothing stored) and then damaged: ``schema_missing_t``
drops each item's timestamp, ``schema_wrong_type`` turns price fields into strings.
Stored data is deep-copied first so a fault never alters what later answers return.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from enum import Enum

from aiohttp import web

from .faults import FaultKind
from .routes import AlpacaRoute, Endpoint
from .samples import default_asset, sample_bar, sample_quote, sample_snapshot, sample_trade
from .state import STATE_KEY, EmulatorState
from .wire_json import Json, JsonObject


class _Item(Enum):
    """The kinds of object a fault damages, with the field each schema fault targets."""

    QUOTE = ("t", ("bp", "ap"))
    TRADE = ("t", ("p",))
    BAR = ("t", ("o", "h", "l", "c", "vw"))
    CLOCK = ("timestamp", ("is_open",))
    ACCOUNT = ("id", ("cash",))
    ASSET = ("id", ("tradable",))

    def __init__(self, time_field: str, typed_fields: tuple[str, ...]) -> None:
        self.time_field = time_field
        self.typed_fields = typed_fields


_SNAPSHOT_ITEMS = {
    "latestTrade": _Item.TRADE,
    "latestQuote": _Item.QUOTE,
    "minuteBar": _Item.BAR,
    "dailyBar": _Item.BAR,
    "prevDailyBar": _Item.BAR,
}
Damaged = list[tuple[_Item, JsonObject]]


def broken_body(request: web.Request, route: AlpacaRoute | None, kind: FaultKind | None) -> Json:
    """The endpoint's answer with the fault ``kind`` applied (None: left intact)."""
    if route is None:
        return {"message": "Not Found"}
    items: Damaged = []
    body = _BUILDERS[route.endpoint](request, request.app[STATE_KEY], items)
    for item_kind, item in items:
        if kind is FaultKind.SCHEMA_MISSING_T:
            item.pop(item_kind.time_field, None)
        elif kind is FaultKind.SCHEMA_WRONG_TYPE:
            for name in item_kind.typed_fields:
                if name in item:
                    item[name] = _wrong_type(item[name])
    return body


def _wrong_type(value: Json) -> Json:
    """A number becomes its text, a boolean its text, a decimal string a number."""
    if isinstance(value, (bool, int, Decimal)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return 0
    return value


def _symbols(request: web.Request) -> list[str]:
    raw = request.query.get("symbols") or "AAPL"
    return sorted({symbol for symbol in raw.split(",") if symbol})


def _copy(value: JsonObject | None, fallback: Callable[[], JsonObject]) -> JsonObject:
    return fallback() if value is None else copy.deepcopy(value)


def _quote(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    quote = _copy(state.market.quotes.get(symbol), sample_quote)
    items.append((_Item.QUOTE, quote))
    return quote


def _trade(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    trade = _copy(state.market.trades.get(symbol), sample_trade)
    items.append((_Item.TRADE, trade))
    return trade


def _bars(state: EmulatorState, symbol: str, items: Damaged) -> list[Json]:
    stored = state.market.bars.get(symbol) or []
    bars = [copy.deepcopy(bar.wire) for bar in stored] or [sample_bar()]
    items.extend((_Item.BAR, bar) for bar in bars)
    return list[Json](bars)


def _latest_bar(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    stored = state.market.bars.get(symbol)
    bar = copy.deepcopy(stored[-1].wire) if stored else sample_bar()
    items.append((_Item.BAR, bar))
    return bar


def _snapshot(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    snapshot = _copy(state.market.snapshots.get(symbol), sample_snapshot)
    for member, item_kind in _SNAPSHOT_ITEMS.items():
        value = snapshot.get(member)
        if isinstance(value, dict):
            items.append((item_kind, value))
    return snapshot


PerSymbol = Callable[[EmulatorState, str, Damaged], Json]
Builder = Callable[[web.Request, EmulatorState, Damaged], Json]


def _multi(wrapper: str | None, per_symbol: PerSymbol) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        by_symbol: JsonObject = {s: per_symbol(state, s, items) for s in _symbols(request)}
        return by_symbol if wrapper is None else {wrapper: by_symbol}

    return build


def _single(member: str | None, per_symbol: PerSymbol) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        symbol = request.match_info["symbol"]
        value = per_symbol(state, symbol, items)
        if member is None and isinstance(value, dict):
            return {"symbol": symbol, **value}
        return {"symbol": symbol, str(member): value}

    return build


def _bars_multi(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    by_symbol: JsonObject = {s: _bars(state, s, items) for s in _symbols(request)}
    return {"bars": by_symbol, "next_page_token": None}


def _bars_single(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    symbol = request.match_info["symbol"]
    return {"symbol": symbol, "bars": _bars(state, symbol, items), "next_page_token": None}


def _trading(item_kind: _Item, pick: Callable[[web.Request, EmulatorState], JsonObject]) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        value = copy.deepcopy(pick(request, state))
        items.append((item_kind, value))
        return value

    return build


def _asset(request: web.Request, state: EmulatorState) -> JsonObject:
    wanted = request.match_info["symbol_or_asset_id"]
    return state.find_asset(wanted) or default_asset(wanted)


_BUILDERS: dict[Endpoint, Builder] = {
    Endpoint.LATEST_QUOTES: _multi("quotes", _quote),
    Endpoint.LATEST_QUOTE: _single("quote", _quote),
    Endpoint.LATEST_TRADES: _multi("trades", _trade),
    Endpoint.LATEST_TRADE: _single("trade", _trade),
    Endpoint.LATEST_BARS: _multi("bars", _latest_bar),
    Endpoint.LATEST_BAR: _single("bar", _latest_bar),
    Endpoint.SNAPSHOTS: _multi(None, _snapshot),
    Endpoint.SNAPSHOT: _single(None, _snapshot),
    Endpoint.BARS: _bars_multi,
    Endpoint.SYMBOL_BARS: _bars_single,
    Endpoint.CLOCK: _trading(_Item.CLOCK, lambda _, state: state.clock),
    Endpoint.ACCOUNT: _trading(_Item.ACCOUNT, lambda _, state: state.account),
    Endpoint.ASSET: _trading(_Item.ASSET, _asset),
}
