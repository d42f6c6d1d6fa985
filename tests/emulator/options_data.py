"""Option market-data handlers: latest quotes and trades, snapshots and the option chain.

Symbols are OCC (``AAPL240426C00162500``); anything else fails the whole call with 400
``invalid symbol: X``, and at most 100 may be asked at once. Answers hold exactly what tests
stored: ``greeks`` and ``impliedVolatility`` appear only in snapshots that were stored with
them, as Alpaca often leaves them out. Snapshot pages are sorted by OCC symbol; their
``next_page_token`` is the base64 of the first symbol of the next page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import date
from decimal import Decimal

from aiohttp import web

from . import params
from .decimals import parse_decimal
from .occ import OccSymbol, parse_occ
from .responses import data_error, json_response
from .state import STATE_KEY, EmulatorState
from .timestamps import query_time_ns, rfc3339_ns, strict_date
from .wire_json import Json, JsonObject

OPTION_FEEDS = frozenset({"opra", "indicative"})
MAX_SYMBOLS = 100
SNAPSHOT_DEFAULT_LIMIT = 100
SNAPSHOT_MAX_LIMIT = 1000
_TIMED_MEMBERS = ("latestQuote", "latestTrade", "minuteBar", "dailyBar", "prevDailyBar")

Query = params.Query
Lookup = Callable[[EmulatorState, str], JsonObject | None]


def check_occ(symbol: str) -> OccSymbol:
    """The parsed OCC symbol, or 400 ``invalid symbol: X``."""
    try:
        return parse_occ(symbol)
    except ValueError:
        raise data_error(400, f"invalid symbol: {symbol}") from None


def option_symbols(query: Query) -> list[str]:
    """The ``symbols`` csv of OCC symbols (1..100), deduplicated; one invalid fails all."""
    raw = query.get("symbols")
    if raw is None:
        raise data_error(400, "missing symbols")
    seen: dict[str, None] = {}
    for symbol in raw.split(","):
        seen[check_occ(symbol).symbol] = None
    if len(seen) > MAX_SYMBOLS:
        raise data_error(400, f"too many symbols: {len(seen)}, the maximum is {MAX_SYMBOLS}")
    return list(seen)


def _check_feed(request: web.Request) -> None:
    """``feed`` is opra or indicative; a free plan may not query OPRA (real-time) data."""
    feed = params.feed(request.query, OPTION_FEEDS)
    if feed == "opra" and request.app[STATE_KEY].config.plan == "free":
        raise data_error(403, "subscription does not permit querying OPRA data")


def _latest(request: web.Request, lookup: Lookup) -> JsonObject:
    symbols = option_symbols(request.query)
    _check_feed(request)
    state = request.app[STATE_KEY]
    answer: JsonObject = {}
    for symbol in sorted(symbols):
        value = lookup(state, symbol)
        if value is not None or state.config.unknown_symbols == "null":
            answer[symbol] = value
    return answer


async def latest_quotes(request: web.Request) -> web.Response:
    """GET /v1beta1/options/quotes/latest"""
    quotes = _latest(request, lambda state, occ: state.options.quotes.get(occ))
    return json_response({"quotes": quotes})


async def latest_trades(request: web.Request) -> web.Response:
    """GET /v1beta1/options/trades/latest"""
    trades = _latest(request, lambda state, occ: state.options.trades.get(occ))
    return json_response({"trades": trades})


# --- snapshots and the chain -------------------------------------------------------------------


def _encode_token(symbol: str) -> str:
    return base64.b64encode(symbol.encode()).decode("ascii")


def _decode_token(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        return base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise data_error(400, f"invalid page token: {token}") from None


def _updated_since(query: Query) -> int | None:
    text = query.get("updated_since")
    if text is None:
        return None
    try:
        return query_time_ns(text, end_of_day=False)
    except ValueError:
        raise data_error(400, f"invalid updated_since: {text}") from None


def _latest_t_ns(snapshot: JsonObject) -> int | None:
    """The newest ``t`` among the snapshot's members, None if it has none."""
    times: list[int] = []
    for member in _TIMED_MEMBERS:
        value = snapshot.get(member)
        t = value.get("t") if isinstance(value, dict) else None
        if isinstance(t, str):
            try:
                times.append(rfc3339_ns(t))
            except ValueError:
                continue
    return max(times, default=None)


def _snapshot_page(request: web.Request, candidates: list[str]) -> web.Response:
    """Validate feed/limit/page_token/updated_since and answer one page of ``candidates``."""
    query = request.query
    _check_feed(request)
    limit = params.limit(query, default=SNAPSHOT_DEFAULT_LIMIT, maximum=SNAPSHOT_MAX_LIMIT)
    since_ns = _updated_since(query)
    start_at = _decode_token(query.get("page_token"))
    state = request.app[STATE_KEY]
    max_page = state.config.max_page_size
    if max_page is not None:
        limit = min(limit, max_page)
    rows: list[tuple[str, JsonObject | None]] = []
    for symbol in sorted(candidates):
        snapshot = state.options.snapshots.get(symbol)
        if snapshot is not None and since_ns is not None:
            newest = _latest_t_ns(snapshot)
            if newest is None or newest < since_ns:
                continue
        if snapshot is None and state.config.unknown_symbols == "omit":
            continue
        if start_at is None or symbol >= start_at:
            rows.append((symbol, snapshot))
    page = rows[:limit]
    token: Json = _encode_token(rows[limit][0]) if len(rows) > limit else None
    snapshots: JsonObject = dict(page)
    return json_response({"snapshots": snapshots, "next_page_token": token})


async def snapshots(request: web.Request) -> web.Response:
    """GET /v1beta1/options/snapshots?symbols=: wrapped in ``snapshots``, paged by symbol."""
    return _snapshot_page(request, option_symbols(request.query))


def _date_param(query: Query, name: str) -> date | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return strict_date(text)
    except ValueError:
        raise data_error(400, f"invalid {name}: {text}") from None


def _strike_param(query: Query, name: str) -> Decimal | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return parse_decimal(text)
    except ValueError:
        raise data_error(400, f"invalid {name}: {text}") from None


def underlying_of(state: EmulatorState, occ: OccSymbol) -> str:
    """A stored contract's ``underlying_symbol``, else the OCC root."""
    contract = state.option_contracts.get(occ.symbol)
    underlying = None if contract is None else contract.get("underlying_symbol")
    return underlying if isinstance(underlying, str) else occ.root


async def chain(request: web.Request) -> web.Response:
    """GET /v1beta1/options/snapshots/{underlying_symbol}: stored snapshots of its options.

    Membership: every stored option snapshot whose underlying (a stored contract's
    ``underlying_symbol``, else the OCC root) is the path's symbol, then the filters.
    """
    underlying = params.check_symbol(request.match_info["underlying_symbol"])
    query = request.query
    kind = query.get("type")
    if kind is not None and kind not in ("call", "put"):
        raise data_error(400, f"invalid type: {kind}")
    strike_gte = _strike_param(query, "strike_price_gte")
    strike_lte = _strike_param(query, "strike_price_lte")
    expiration = _date_param(query, "expiration_date")
    expiration_gte = _date_param(query, "expiration_date_gte")
    expiration_lte = _date_param(query, "expiration_date_lte")
    root = query.get("root_symbol")
    state = request.app[STATE_KEY]
    members: list[str] = []
    for symbol in state.options.snapshots:
        occ = parse_occ(symbol)
        if underlying_of(state, occ) != underlying:
            continue
        if (
            (kind is not None and occ.type != kind)
            or (strike_gte is not None and occ.strike < strike_gte)
            or (strike_lte is not None and occ.strike > strike_lte)
            or (expiration is not None and occ.expiration != expiration)
            or (expiration_gte is not None and occ.expiration < expiration_gte)
            or (expiration_lte is not None and occ.expiration > expiration_lte)
            or (root is not None and occ.root != root)
        ):
            continue
        members.append(symbol)
    return _snapshot_page(request, members)
