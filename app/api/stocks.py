"""Stock market-data routes: thin, they validate, read through the cache, and render."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import params, render
from app.api.auth import authorize
from app.api.operation import MARKET_DATA, Operation
from app.api.params import (
    FEED,
    MAX_AGE_MS,
    STALE_IF_ERROR_MS,
    SYMBOL,
    Param,
    gateway_of,
    invalid,
)
from app.api.problems import problem, record_problem
from app.errors import ErrorCode, GatewayError
from app.keys import Scope
from app.metrics import DataKind
from app.models.market_data import BarSeries, Quote, QuoteBatch, Snapshot, Trade
from app.models.patterns import PAGE_TOKEN_PATTERN, TIME_BOUND_PATTERN, TIMEFRAME_PATTERN
from app.reads.read_through import Served, V
from app.reads.stocks import BarsQuery
from app.state import GatewayState
from app.symbols import stock_symbol

router = APIRouter(prefix="/v1/stocks", tags=["stocks"])

HISTORICAL_FEEDS = ("iex", "sip", "otc", "boats")
ADJUSTMENTS = ("raw", "split", "dividend", "spin-off", "all")
# The settings' ceiling for QUOTES_MAX_SYMBOLS; the document shows the configured limit.
MAX_BATCH = 1000

SYMBOLS = Param(
    "symbols",
    "Comma-separated symbols: up to QUOTES_MAX_SYMBOLS items (100 by default), empty ones"
    " counted, at least one not blank. Blank items are skipped; an item that is not a symbol"
    " gets its own problem in `errors` (ASCII is checked per item) and the others are served.",
    {
        "type": "array",
        "items": {"type": "string", "maxLength": 64, "pattern": "^[^,]*$"},
        "minItems": 1,
        "maxItems": MAX_BATCH,
        "contains": {"type": "string", "pattern": "[^ ]"},
    },
    required=True,
    example="AAPL,MSFT",
)
TIMEFRAME = Param(
    "timeframe",
    "1Min..59Min, 1Hour..23Hour, 1Day, 1Week, 1/2/3/4/6/12Month (or T, H, D, W, M)",
    {"type": "string", "maxLength": 7, "pattern": TIMEFRAME_PATTERN},
    required=True,
    example="1Day",
)
_TIME_BOUND = {"type": "string", "maxLength": 35, "pattern": TIME_BOUND_PATTERN}
START = Param("start", "RFC 3339 or YYYY-MM-DD (UTC midnight); not after `end`", _TIME_BOUND)
END = Param("end", "RFC 3339 or YYYY-MM-DD (UTC midnight)", _TIME_BOUND)
LIMIT = Param(
    "limit", "Bars to return at most", {"type": "integer", "minimum": 1, "maximum": 10_000}
)
ADJUSTMENT = Param(
    "adjustment", "Corporate-action adjustment", {"type": "string", "enum": list(ADJUSTMENTS)}
)
PAGE_TOKEN = Param(
    "page_token",
    "A `next_page_token` from an earlier answer, to continue the series (Alpaca judges it)",
    {"type": "string", "maxLength": 512, "pattern": PAGE_TOKEN_PATTERN},
)
HISTORICAL_FEED = Param(
    "feed",
    "Alpaca historical feed; default from ALPACA_DATA_FEED, sent to Alpaca explicitly",
    {"type": "string", "enum": list(HISTORICAL_FEEDS)},
)
LATEST = Operation(
    Scope.DATA_READ,
    (SYMBOL, FEED, MAX_AGE_MS, STALE_IF_ERROR_MS),
    MARKET_DATA | {ErrorCode.DATA_STALE},
    success_headers=("Cache-Status",),
)
BATCH = Operation(
    Scope.DATA_READ,
    (SYMBOLS, FEED, MAX_AGE_MS, STALE_IF_ERROR_MS),
    success_headers=("Cache-Status",),
)
BARS = Operation(
    Scope.DATA_READ,
    (
        SYMBOL,
        TIMEFRAME,
        START,
        END,
        LIMIT,
        ADJUSTMENT,
        PAGE_TOKEN,
        HISTORICAL_FEED,
        STALE_IF_ERROR_MS,
    ),
    MARKET_DATA,
    success_headers=("Cache-Status",),
)


def _feed(gateway: GatewayState, request: Request, param: Param = FEED) -> str:
    chosen = param.text(request) or gateway.settings.alpaca_data_feed
    if chosen not in param.schema["enum"]:
        raise invalid("feed", f"must be one of {', '.join(param.schema['enum'])}")
    return chosen


def _max_age(gateway: GatewayState, request: Request) -> int | None:
    max_age_ms = MAX_AGE_MS.integer(request)
    return max_age_ms if max_age_ms is not None else gateway.settings.default_max_age_ms


def _value(outcome: Served[V] | GatewayError, symbol: str) -> Served[V]:
    if isinstance(outcome, GatewayError):
        raise outcome if outcome.symbol else outcome.for_symbol(symbol)
    return outcome


@router.get(
    "/{symbol}/quote",
    response_model=Quote,
    summary="Latest quote",
    openapi_extra=LATEST.openapi_extra(),
)
async def latest_quote(request: Request) -> Response:
    await authorize(request, LATEST.scope)
    gateway, symbol = gateway_of(request), params.symbol(request)
    # Every parameter is checked before anything is asked of Alpaca.
    feed, max_age_ms = _feed(gateway, request), _max_age(gateway, request)
    outcome = await gateway.stocks.quote(symbol, feed, params.stale_if_error_s(request))
    return render.latest_value(request, gateway, outcome, symbol, "quote", feed, max_age_ms)


@router.get(
    "/quotes",
    response_model=QuoteBatch,
    summary="Latest quotes for up to 100 symbols",
    openapi_extra=BATCH.openapi_extra(),
)
async def latest_quotes(request: Request) -> Response:
    await authorize(request, BATCH.scope)
    gateway = gateway_of(request)
    items = SYMBOLS.items(request) or []
    chosen, max_age = _feed(gateway, request), _max_age(gateway, request)
    stale_s = params.stale_if_error_s(request)
    limit = gateway.settings.quotes_max_symbols
    if len(items) > limit:
        raise invalid("symbols", f"must list 1 to {limit} items")
    # Blank means spaces only, as the schema's `contains` says.
    raw = [s for s in items if s.strip(" ")]
    errors: dict[str, Any] = {}
    valid: list[str] = []
    for item in raw:
        try:
            symbol = stock_symbol(item)
        except GatewayError as exc:
            # Alpaca fails a whole call on one bad symbol; we reject that one alone.
            errors[item.strip()[:32]] = _item_problem(request, exc)
            continue
        if symbol not in valid:
            valid.append(symbol)
    outcomes = await gateway.stocks.quotes(valid, chosen, stale_s) if valid else {}
    now = render.now()
    quotes: list[bytes] = []
    states: set[str] = set()
    for symbol, outcome in outcomes.items():
        try:
            served = _value(outcome, symbol)
            answer = render.encoded_latest(served, gateway, symbol, "quote", chosen, max_age, now)
        except GatewayError as exc:
            errors[symbol] = _item_problem(request, exc if exc.symbol else exc.for_symbol(symbol))
            continue
        states.add(served.cache)
        quotes.append(json.dumps(symbol).encode() + b":" + answer)
    # Each served quote is its encoded answer, exactly as /v1/stocks/{symbol}/quote gives it.
    body = b'{"quotes":{' + b",".join(quotes) + b'},"errors":' + render.dumps(errors).encode()
    return render.EncodedJSON(body + b"}", render.least_fresh(states))


def _item_problem(request: Request, error: GatewayError) -> dict[str, Any]:
    """One symbol's failure inside a batch: recorded like an answer of its own, then rendered."""
    instance = "/v1/stocks/quotes"
    record_problem(request, error, instance)
    return problem(error, instance)


@router.get(
    "/{symbol}/trade",
    response_model=Trade,
    summary="Latest trade",
    openapi_extra=LATEST.openapi_extra(),
)
async def latest_trade(request: Request) -> Response:
    await authorize(request, LATEST.scope)
    gateway, symbol = gateway_of(request), params.symbol(request)
    # Every parameter is checked before anything is asked of Alpaca.
    feed, max_age_ms = _feed(gateway, request), _max_age(gateway, request)
    outcome = await gateway.stocks.trade(symbol, feed, params.stale_if_error_s(request))
    return render.latest_value(request, gateway, outcome, symbol, "trade", feed, max_age_ms)


_SNAPSHOT_MEMBERS: dict[str, DataKind] = {
    "latest_trade": "trade",
    "latest_quote": "quote",
    "minute_bar": "bar",
    "daily_bar": "bar",
    "prev_daily_bar": "bar",
}


@router.get(
    "/{symbol}/snapshot",
    response_model=Snapshot,
    summary="Latest trade, quote and bars",
    openapi_extra=LATEST.openapi_extra(),
)
async def snapshot(request: Request) -> Response:
    await authorize(request, LATEST.scope)
    gateway, symbol = gateway_of(request), params.symbol(request)
    chosen, max_age_ms = _feed(gateway, request), _max_age(gateway, request)
    outcome = await gateway.stocks.snapshot(symbol, chosen, params.stale_if_error_s(request))
    served = _value(outcome, symbol)
    now = render.now()
    body, newest = render.members(
        served.value,
        _SNAPSHOT_MEMBERS,
        served,
        feed=chosen,
        source=gateway.source,
        now=now,
        metrics=gateway.metrics,
    )
    # max_age_ms judges the snapshot by its newest member.
    render.check_max_age(newest, now, max_age_ms, symbol)
    body = {"symbol": symbol, **body}
    return render.json_response(body, cache_states={served.cache})


@router.get(
    "/{symbol}/bars",
    response_model=BarSeries,
    summary="Historical bars",
    openapi_extra=BARS.openapi_extra(),
)
async def bars(request: Request) -> Response:
    await authorize(request, BARS.scope)
    gateway, symbol = gateway_of(request), params.symbol(request)
    chosen = _feed(gateway, request, HISTORICAL_FEED)
    timeframe = TIMEFRAME.text(request) or ""
    adjustment = ADJUSTMENT.text(request) or "raw"
    limit = LIMIT.integer(request) or 1000
    query = BarsQuery(
        symbol,
        timeframe,
        START.text(request),
        END.text(request),
        limit,
        chosen,
        adjustment,
        PAGE_TOKEN.text(request),
    )
    stale_s = params.stale_if_error_s(request)
    served = _value(await gateway.stocks.bars(query, stale_s), symbol)
    series = served.value["bars"]
    now = render.now()
    newest = min(series, key=lambda b: render.age_ms(b["timestamp"], now))["timestamp"]
    gateway.metrics.served_age("bar", served.cache, max(0.0, render.age_ms(newest, now) / 1000))
    body = {
        "symbol": symbol,
        "timeframe": timeframe,
        "feed": chosen,
        "adjustment": adjustment,
        "bars": series,
        "next_page_token": served.value["next_page_token"],
        "provenance": render.provenance(
            newest, served, feed=chosen, source=gateway.source, now=now
        ),
    }
    return render.json_response(body, cache_states={served.cache})
