"""Bodies for the faults that answer 200 with broken content.

Each body imitates the matched endpoint's normal answer, built from the stored data (or a
realistic sample for a symbol with nothing stored) and then damaged: ``schema_missing_t``
drops each item's timestamp (or, for trading objects, their id and timestamps),
``schema_wrong_type`` turns price fields into strings (and decimal strings into numbers).
Stored data is deep-copied first so a fault never alters what later answers return.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import Enum

from aiohttp import web

from .faults import FaultKind
from .occ import parse_occ
from .options_data import underlying_of
from .params import canonical_timeframe
from .routes import AlpacaRoute, Endpoint
from .samples import (
    default_asset,
    default_option_contract,
    sample_bar,
    sample_calendar_day,
    sample_option_quote,
    sample_option_snapshot,
    sample_option_trade,
    sample_order,
    sample_position,
    sample_quote,
    sample_snapshot,
    sample_trade,
)
from .state import STATE_KEY, EmulatorState, Stamped
from .wire_json import Json, JsonObject


class _Item(Enum):
    """The kinds of object a fault damages, with the fields each schema fault targets."""

    QUOTE = (("t",), ("bp", "ap"))
    TRADE = (("t",), ("p",))
    BAR = (("t",), ("o", "h", "l", "c", "vw"))
    CLOCK = (("timestamp",), ("is_open",))
    # A calendar day's date is its time; "09:30" turns into a number.
    CALENDAR_DAY = (("date",), ("open", "close"))
    ACCOUNT = (("id",), ("cash",))
    ASSET = (("id",), ("tradable",))
    CONTRACT = (("id",), ("strike_price",))
    POSITION = (("asset_id",), ("qty", "market_value"))
    # Alpaca's Order schema requires none of its timestamps (alpaca-py does), only
    # time_in_force; dropping it as well makes the object fail both.
    ORDER = (("id", "created_at", "submitted_at", "updated_at", "time_in_force"),
             ("qty", "filled_qty", "limit_price"))  # fmt: skip
    CANCEL_RESULT = (("id",), ("status",))

    def __init__(self, missing_fields: tuple[str, ...], typed_fields: tuple[str, ...]) -> None:
        self.missing_fields = missing_fields
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
            for name in item_kind.missing_fields:
                item.pop(name, None)
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


def _bars(request: web.Request, state: EmulatorState, symbol: str, items: Damaged) -> list[Json]:
    try:
        timeframe: str | None = canonical_timeframe(request.query.get("timeframe", ""))
    except ValueError:
        timeframe = None
    stored = state.market.bars_for(timeframe).get(symbol) or []
    bars = [copy.deepcopy(bar.wire) for bar in stored] or [sample_bar()]
    items.extend((_Item.BAR, bar) for bar in bars)
    return list[Json](bars)


def _history(
    stored: Mapping[str, Sequence[Stamped]],
    symbol: str,
    sample: Callable[[], JsonObject],
    item_kind: _Item,
    items: Damaged,
) -> list[Json]:
    series = [copy.deepcopy(one.wire) for one in stored.get(symbol, ())] or [sample()]
    items.extend((item_kind, one) for one in series)
    return list[Json](series)


def _history_multi(member: str, item_kind: _Item, sample: Callable[[], JsonObject]) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        stored = _history_store(state, member)
        by_symbol: JsonObject = {
            s: _history(stored, s, sample, item_kind, items) for s in _symbols(request)
        }
        return {member: by_symbol, "next_page_token": None}

    return build


def _history_single(member: str, item_kind: _Item, sample: Callable[[], JsonObject]) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        symbol = request.match_info["symbol"]
        series = _history(_history_store(state, member), symbol, sample, item_kind, items)
        return {"symbol": symbol, member: series, "next_page_token": None}

    return build


def _history_store(state: EmulatorState, member: str) -> Mapping[str, Sequence[Stamped]]:
    return state.market.quote_history if member == "quotes" else state.market.trade_history


def _latest_bar(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    stored = state.market.latest_bar(symbol)
    bar = copy.deepcopy(stored) if stored is not None else sample_bar()
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
    by_symbol: JsonObject = {s: _bars(request, state, s, items) for s in _symbols(request)}
    return {"bars": by_symbol, "next_page_token": None}


def _bars_single(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    symbol = request.match_info["symbol"]
    bars = _bars(request, state, symbol, items)
    return {"symbol": symbol, "bars": bars, "next_page_token": None}


def _trading(item_kind: _Item, pick: Callable[[web.Request, EmulatorState], JsonObject]) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        value = copy.deepcopy(pick(request, state))
        items.append((item_kind, value))
        return value

    return build


def _calendar(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    days = [copy.deepcopy(day) for day in state.calendar] or [sample_calendar_day()]
    items.extend((_Item.CALENDAR_DAY, day) for day in days)
    return list[Json](days)


def _assets(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    listed = [copy.deepcopy(found) for found in state.assets.values()]
    listed = listed or [default_asset("AAPL")]
    items.extend((_Item.ASSET, found) for found in listed)
    return list[Json](listed)


def _asset(request: web.Request, state: EmulatorState) -> JsonObject:
    wanted = request.match_info["symbol_or_asset_id"]
    return state.find_asset(wanted) or default_asset(wanted)


_SAMPLE_OCC = "AAPL240426C00162500"


def _option_symbols(request: web.Request) -> list[str]:
    raw = request.query.get("symbols") or _SAMPLE_OCC
    return sorted({symbol for symbol in raw.split(",") if symbol})


def _option_quote(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    quote = _copy(state.options.quotes.get(symbol), sample_option_quote)
    items.append((_Item.QUOTE, quote))
    return quote


def _option_trade(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    trade = _copy(state.options.trades.get(symbol), sample_option_trade)
    items.append((_Item.TRADE, trade))
    return trade


def _option_snapshot(state: EmulatorState, symbol: str, items: Damaged) -> JsonObject:
    snapshot = _copy(state.options.snapshots.get(symbol), sample_option_snapshot)
    for member, item_kind in _SNAPSHOT_ITEMS.items():
        value = snapshot.get(member)
        if isinstance(value, dict):
            items.append((item_kind, value))
    return snapshot


def _option_latest(wrapper: str, per_symbol: PerSymbol) -> Builder:
    def build(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
        by_symbol: JsonObject = {s: per_symbol(state, s, items) for s in _option_symbols(request)}
        return {wrapper: by_symbol}

    return build


def _option_snapshots(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    by_symbol: JsonObject = {s: _option_snapshot(state, s, items) for s in _option_symbols(request)}
    return {"snapshots": by_symbol, "next_page_token": None}


def _option_chain(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    underlying = request.match_info["underlying_symbol"]
    members = sorted(
        s for s in state.options.snapshots if underlying_of(state, parse_occ(s)) == underlying
    )
    by_symbol: JsonObject = {s: _option_snapshot(state, s, items) for s in members or [_SAMPLE_OCC]}
    return {"snapshots": by_symbol, "next_page_token": None}


def _contract(request: web.Request, state: EmulatorState) -> JsonObject:
    wanted = request.match_info["symbol_or_id"]
    found = state.find_option_contract(wanted)
    return found or default_option_contract(_SAMPLE_OCC)


def _contracts(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    stored = [copy.deepcopy(c) for c in state.option_contracts.values()]
    contracts = stored or [default_option_contract(_SAMPLE_OCC)]
    items.extend((_Item.CONTRACT, contract) for contract in contracts)
    return {"option_contracts": list[Json](contracts), "next_page_token": None}


def _position(request: web.Request, state: EmulatorState) -> JsonObject:
    found = state.find_position(request.match_info["symbol_or_asset_id"])
    return found or sample_position()


def _positions(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    stored = [copy.deepcopy(p) for p in state.positions.values()]
    positions = stored or [sample_position()]
    items.extend((_Item.POSITION, position) for position in positions)
    return list[Json](positions)


def _stored_orders(state: EmulatorState) -> list[JsonObject]:
    return [copy.deepcopy(order.wire) for order in state.orders.all()] or [sample_order()]


def _orders(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    orders = _stored_orders(state)
    items.extend((_Item.ORDER, order) for order in orders)
    return list[Json](orders)


def _order(request: web.Request, state: EmulatorState) -> JsonObject:
    found = state.orders.get(request.match_info.get("order_id", ""))
    if found is None:
        wanted = request.query.get("client_order_id", "")
        found = state.orders.by_client_order_id(wanted)
    return sample_order() if found is None else found.wire


def _cancel_results(request: web.Request, state: EmulatorState, items: Damaged) -> Json:
    results: list[JsonObject] = [
        {"id": str(order["id"]), "status": 200} for order in _stored_orders(state)
    ]
    items.extend((_Item.CANCEL_RESULT, result) for result in results)
    return list[Json](results)


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
    Endpoint.QUOTES: _history_multi("quotes", _Item.QUOTE, sample_quote),
    Endpoint.SYMBOL_QUOTES: _history_single("quotes", _Item.QUOTE, sample_quote),
    Endpoint.TRADES: _history_multi("trades", _Item.TRADE, sample_trade),
    Endpoint.SYMBOL_TRADES: _history_single("trades", _Item.TRADE, sample_trade),
    Endpoint.CLOCK: _trading(_Item.CLOCK, lambda _, state: state.clock),
    Endpoint.CALENDAR: _calendar,
    Endpoint.ASSETS: _assets,
    Endpoint.ACCOUNT: _trading(_Item.ACCOUNT, lambda _, state: state.account),
    Endpoint.ASSET: _trading(_Item.ASSET, _asset),
    Endpoint.OPTION_LATEST_QUOTES: _option_latest("quotes", _option_quote),
    Endpoint.OPTION_LATEST_TRADES: _option_latest("trades", _option_trade),
    Endpoint.OPTION_SNAPSHOTS: _option_snapshots,
    Endpoint.OPTION_CHAIN: _option_chain,
    Endpoint.OPTION_CONTRACTS: _contracts,
    Endpoint.OPTION_CONTRACT: _trading(_Item.CONTRACT, _contract),
    Endpoint.POSITIONS: _positions,
    Endpoint.POSITION: _trading(_Item.POSITION, _position),
    Endpoint.ORDERS: _orders,
    Endpoint.ORDER: _trading(_Item.ORDER, _order),
    Endpoint.ORDER_BY_CLIENT_ID: _trading(_Item.ORDER, _order),
    Endpoint.SUBMIT_ORDER: _trading(_Item.ORDER, _order),
    Endpoint.REPLACE_ORDER: _trading(_Item.ORDER, _order),
    Endpoint.CANCEL_ORDER: _trading(_Item.ORDER, _order),
    Endpoint.CANCEL_ORDERS: _cancel_results,
}
