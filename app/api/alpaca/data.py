"""Alpaca's market-data paths, served from the gateway's cache: what alpaca-py's
`StockHistoricalDataClient(..., url_override=GW + "/alpaca")` and `OptionHistoricalDataClient`
call. Bodies are Alpaca's own objects, unchanged; provenance travels in headers."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.alpaca.passthrough import Wire
from app.api.alpaca import query as q
from app.api.alpaca.access import authorize_face
from app.api.alpaca.errors import PREFIX, face
from app.api.params import gateway_of
from app.api.render import cache_status, rfc3339
from app.errors import ErrorCode, GatewayError
from app.keys import Scope
from app.metrics import DataKind
from app.reads.read_through import Outcome, Served
from app.reads.stocks import range_end_s, timeframe_seconds
from app.settings import STOCK_FEEDS

router = APIRouter(prefix=PREFIX, include_in_schema=False)
HISTORICAL_FEEDS = ("iex", "sip", "otc", "boats")
OPTION_FEEDS = ("indicative", "opra")
# Latest values are cached in Alpaca's default currency only (the cache key has no currency); a
# historical page passes any ISO 4217 code on, since each query is its own cache entry.
_LATEST_STOCKS = {
    "symbols": q.stock_symbols,
    "feed": q.one_of(*STOCK_FEEDS),
    "currency": q.one_of("USD"),
}
_LATEST_OPTIONS = {"symbols": q.option_symbols, "feed": q.one_of(*OPTION_FEEDS)}
_SERIES = {
    "symbols": q.stock_symbols,
    "start": q.moment,
    "end": q.moment,
    "limit": q.integer(1, 10_000),
    "feed": q.one_of(*HISTORICAL_FEEDS),
    "sort": q.sort,
    "page_token": q.page_token,
    "asof": q.date,
    "currency": q.matching("^[A-Z]{3}$", 3),
}
_BARS = {
    **_SERIES,
    "timeframe": q.timeframe,
    "adjustment": q.one_of("raw", "split", "dividend", "spin-off", "all"),
}
_CHAIN = {
    "feed": q.one_of(*OPTION_FEEDS),
    "type": q.one_of("call", "put"),
    "strike_price_gte": q.strike,
    "strike_price_lte": q.strike,
    "expiration_date": q.date,
    "expiration_date_gte": q.date,
    "expiration_date_lte": q.date,
    "root_symbol": q.root_symbol,
    "limit": q.integer(1, 1000),
    "page_token": q.page_token,
}


# --- latest objects: per symbol, shared with every bot that asks for the same symbol -----------
async def _latest(
    request: Request,
    kind: DataKind,
    allowed: Mapping[str, q.Check],
    default_feed: str,
) -> dict[str, Served[Wire]]:
    await authorize_face(request, Scope.DATA_READ)
    query = q.read_query(request, allowed)
    symbols = q.required(query, "symbols").split(",")
    outcomes = await gateway_of(request).alpaca.latest(
        kind, symbols, query.get("feed", default_feed)
    )
    return _served(outcomes)


def _served(outcomes: Mapping[str, Outcome[Wire]]) -> dict[str, Served[Wire]]:
    """The values Alpaca sent; a symbol it had nothing for is left out, as Alpaca leaves it out.
    Any other failure fails the whole answer, as one of Alpaca's own calls would fail."""
    served: dict[str, Served[Wire]] = {}
    for symbol, outcome in outcomes.items():
        if isinstance(outcome, Served):
            served[symbol] = outcome
        elif outcome.code is not ErrorCode.NO_DATA:
            raise outcome if outcome.symbol else outcome.for_symbol(symbol)
    return served


@router.get("/v2/stocks/quotes/latest")
@face
async def stock_quotes_latest(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_data_feed
    served = await _latest(request, "alpaca_quote", _LATEST_STOCKS, feed)
    return _answer({"quotes": _objects(served)}, served)


@router.get("/v2/stocks/trades/latest")
@face
async def stock_trades_latest(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_data_feed
    served = await _latest(request, "alpaca_trade", _LATEST_STOCKS, feed)
    return _answer({"trades": _objects(served)}, served)


@router.get("/v2/stocks/bars/latest")
@face
async def stock_bars_latest(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_data_feed
    served = await _latest(request, "alpaca_bar", _LATEST_STOCKS, feed)
    return _answer({"bars": _objects(served)}, served)


@router.get("/v2/stocks/snapshots")
@face
async def stock_snapshots(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_data_feed
    served = await _latest(request, "alpaca_snapshot", _LATEST_STOCKS, feed)
    # Stock snapshots are Alpaca's root map, with no wrapper member.
    return _answer(_objects(served), served)


@router.get("/v1beta1/options/quotes/latest")
@face
async def option_quotes_latest(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_options_feed
    served = await _latest(request, "alpaca_option_quote", _LATEST_OPTIONS, feed)
    return _answer({"quotes": _objects(served)}, served)


@router.get("/v1beta1/options/trades/latest")
@face
async def option_trades_latest(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_options_feed
    served = await _latest(request, "alpaca_option_trade", _LATEST_OPTIONS, feed)
    return _answer({"trades": _objects(served)}, served)


@router.get("/v1beta1/options/snapshots")
@face
async def option_snapshots(request: Request) -> Response:
    feed = gateway_of(request).settings.alpaca_options_feed
    allowed = {**_LATEST_OPTIONS, "limit": q.integer(1, 1000), "page_token": q.page_token}
    served = await _latest(request, "alpaca_option_snapshot", allowed, feed)
    # Up to 100 symbols fit one of Alpaca's pages: there is never a next one.
    return _answer({"snapshots": _objects(served), "next_page_token": None}, served)


# --- pages: historical series and option chains, kept per query
@router.get("/v2/stocks/bars")
@face
async def stock_bars(request: Request) -> Response:
    return await _series(request, "bars", _BARS)


@router.get("/v2/stocks/quotes")
@face
async def stock_quotes(request: Request) -> Response:
    return await _series(request, "quotes", _SERIES)


@router.get("/v2/stocks/trades")
@face
async def stock_trades(request: Request) -> Response:
    return await _series(request, "trades", _SERIES)


async def _series(request: Request, member: str, allowed: Mapping[str, q.Check]) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    gateway = gateway_of(request)
    query = q.read_query(request, allowed)
    q.required(query, "symbols")
    if member == "bars":
        q.required(query, "timeframe")
    # `feed` is always sent explicitly (and is part of the cache key), as on /v1.
    query.setdefault("feed", gateway.settings.alpaca_data_feed)
    return _page(await gateway.alpaca.series(member, query, _closed_before(member, query)))


def _closed_before(member: str, query: Mapping[str, str]) -> float | None:
    """When the asked range stops changing (epoch seconds), as on /v1: ticks once `end` is over
    (a bare date once it is over everywhere), bars once the bar holding `end` has closed."""
    end = query.get("end")
    if end is None:
        return None
    end_s = range_end_s(end)
    if member != "bars":
        return end_s
    try:
        return end_s + timeframe_seconds(query["timeframe"])
    except GatewayError:
        return None  # a timeframe Alpaca refuses, in its own words: never cached long


@router.get("/v1beta1/options/snapshots/{underlying}")
@face
async def option_chain(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    gateway = gateway_of(request)
    underlying = q.single_stock_symbol("underlying", request.path_params["underlying"])
    query = q.read_query(request, _CHAIN)
    query.setdefault("feed", gateway.settings.alpaca_options_feed)
    return _page(await gateway.alpaca.chain(underlying, query))


def _page(outcome: Outcome[Wire]) -> Response:
    if isinstance(outcome, GatewayError):
        raise outcome
    return _answer(outcome.value, {"page": outcome})


# --- answers: Alpaca's JSON, provenance in headers ----------------------------------------------
def _objects(served: Mapping[str, Served[Wire]]) -> dict[str, Wire]:
    # Alpaca writes its maps with sorted keys (Go); so does the face.
    return {symbol: served[symbol].value for symbol in sorted(served)}


def _answer(body: Any, served: Mapping[str, Served[Any]]) -> Response:
    """Alpaca's JSON; the provenance a /v1 body carries goes in headers instead (nothing is
    added to a body the SDK parses): RFC 9211 Cache-Status, Age (seconds since the oldest value
    was fetched), and Gateway-Provenance, an RFC 8941 list with each item's observed-at (Alpaca's
    `t`, when the object has one), fetched-at and cache state."""
    headers: dict[str, str] = {}
    if served:
        headers["Cache-Status"] = cache_status({s.cache for s in served.values()})
        oldest = min(s.fetched_at for s in served.values())
        headers["Age"] = str(max(0, int(time.time() - oldest)))
        headers["Gateway-Provenance"] = ", ".join(
            _provenance(name, s) for name, s in sorted(served.items())
        )
    return Response(
        json.dumps(body, separators=(",", ":"), allow_nan=False).encode(),
        media_type="application/json",
        headers=headers,
    )


def _provenance(name: str, served: Served[Any]) -> str:
    observed = served.value.get("t") if isinstance(served.value, dict) else None
    at = f';observed-at="{observed}"' if isinstance(observed, str) else ""
    return f'{name}{at};fetched-at="{rfc3339(served.fetched_at)}";cache={served.cache}'
