"""Options routes: contracts, the latest option quote, and an underlying's chain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import params, render
from app.api.auth import authorize
from app.api.operation import MARKET_DATA, UPSTREAM, Operation
from app.api.params import (
    MAX_AGE_MS,
    STALE_IF_ERROR_MS,
    SYMBOL,
    Param,
    gateway_of,
    invalid,
)
from app.errors import ErrorCode, GatewayError
from app.keys import Scope
from app.metrics import DataKind, Metrics
from app.models.options import OptionChain, OptionContracts, OptionQuote, OptionSnapshotValue
from app.models.patterns import (
    DATE_PATTERN,
    OCC_PATTERN,
    PAGE_TOKEN_PATTERN,
    ROOT_SYMBOL_PATTERN,
    STRIKE_PATTERN,
)
from app.reads.read_through import Served
from app.symbols import option_contract, stock_symbol

router = APIRouter(prefix="/v1/options", tags=["options"])

_DATE = {"type": "string", "format": "date", "maxLength": 10, "pattern": DATE_PATTERN}
_STRIKE = {"type": "string", "maxLength": 11, "pattern": STRIKE_PATTERN}
OPTION_FEED = Param(
    "feed",
    "Options feed; default from ALPACA_OPTIONS_FEED (`indicative` is delayed/modified by Alpaca)",
    {"type": "string", "enum": ["indicative", "opra"]},
)
CONTRACT = Param(
    "contract",
    "OCC option symbol: ROOT + YYMMDD (a calendar date) + C|P + strike x 1000 (8 digits);"
    " upper-cased",
    {"type": "string", "maxLength": 21, "pattern": OCC_PATTERN},
    "path",
    example="AAPL250117C00200000",
)
UNDERLYING_PATH = Param(
    "underlying", "Underlying stock symbol", SYMBOL.schema, "path", example="AAPL"
)
UNDERLYING = Param(
    "underlying", "Underlying stock symbol", SYMBOL.schema, required=True, example="AAPL"
)
TYPE = Param("type", "call or put", {"type": "string", "enum": ["call", "put"]})
EXPIRATION = Param("expiration_date", "YYYY-MM-DD", _DATE)
EXPIRATION_GTE = Param("expiration_date_gte", "YYYY-MM-DD", _DATE)
EXPIRATION_LTE = Param("expiration_date_lte", "YYYY-MM-DD", _DATE)
STRIKE_GTE = Param(
    "strike_price_gte", "Decimal string; for a chain, not above strike_price_lte", _STRIKE
)
STRIKE_LTE = Param("strike_price_lte", "Decimal string", _STRIKE)
ROOT = Param(
    "root_symbol",
    "OCC root symbol",
    {"type": "string", "maxLength": 6, "pattern": ROOT_SYMBOL_PATTERN},
)
CONTRACTS_LIMIT = Param(
    "limit",
    "Contracts per page (Alpaca's limit)",
    {"type": "integer", "minimum": 1, "maximum": 10_000},
)
PAGE_TOKEN = Param(
    "page_token",
    "A `next_page_token` from an earlier answer, to continue",
    {"type": "string", "maxLength": 512, "pattern": PAGE_TOKEN_PATTERN},
)
FILTERS = (TYPE, EXPIRATION, EXPIRATION_GTE, EXPIRATION_LTE, STRIKE_GTE, STRIKE_LTE)
CONTRACTS = Operation(
    Scope.DATA_READ,
    (UNDERLYING, *FILTERS, ROOT, CONTRACTS_LIMIT, PAGE_TOKEN),
    UPSTREAM,
    success_headers=("Cache-Status",),
)
QUOTE = Operation(
    Scope.DATA_READ,
    (CONTRACT, OPTION_FEED, MAX_AGE_MS, STALE_IF_ERROR_MS),
    MARKET_DATA | {ErrorCode.CONTRACT_NOT_FOUND, ErrorCode.DATA_STALE},
    success_headers=("Cache-Status",),
)
CHAIN = Operation(
    Scope.DATA_READ,
    (UNDERLYING_PATH, OPTION_FEED, *FILTERS, ROOT, PAGE_TOKEN, STALE_IF_ERROR_MS),
    MARKET_DATA,
    success_headers=("Cache-Status",),
)


def _feed(request: Request) -> str:
    return OPTION_FEED.text(request) or gateway_of(request).settings.alpaca_options_feed


def _filters(request: Request, chosen: tuple[Param, ...]) -> dict[str, str]:
    return {p.name: value for p in chosen if (value := p.text(request)) is not None}


@router.get(
    "/contracts",
    response_model=OptionContracts,
    summary="Option contracts for an underlying (Alpaca's /v2/options/contracts)",
    openapi_extra=CONTRACTS.openapi_extra(),
)
async def contracts(request: Request) -> Response:
    await authorize(request, CONTRACTS.scope)
    gateway = gateway_of(request)
    underlying = stock_symbol(UNDERLYING.text(request) or "")
    query = {"underlying_symbols": underlying, "status": "active"}
    query |= _filters(request, (*FILTERS, ROOT, PAGE_TOKEN))
    if (limit := CONTRACTS_LIMIT.integer(request)) is not None:
        query["limit"] = str(limit)
    outcome = await gateway.options.contracts(query)
    if isinstance(outcome, GatewayError):
        raise outcome
    body = dict(outcome.value)
    # Contracts are reference data without an observation time: say where and when from.
    body["provenance"] = {
        "source": gateway.source,
        "fetched_at": render.rfc3339(outcome.fetched_at),
        "cache": outcome.cache,
    }
    return render.json_response(body, cache_states={outcome.cache})


@router.get(
    "/{contract}/quote",
    response_model=OptionQuote,
    summary="Latest option quote",
    openapi_extra=QUOTE.openapi_extra(),
)
async def option_quote(request: Request) -> Response:
    await authorize(request, QUOTE.scope)
    gateway = gateway_of(request)
    contract = option_contract(CONTRACT.text(request) or "")
    feed, max_age_ms = _feed(request), MAX_AGE_MS.integer(request)
    max_age_ms = max_age_ms if max_age_ms is not None else gateway.settings.default_max_age_ms
    outcome = await gateway.options.quote(contract, feed, params.stale_if_error_s(request))
    return render.latest_value(
        request, gateway, outcome, contract, "option_quote", feed, max_age_ms
    )


_MEMBERS: dict[str, DataKind] = {
    "latest_quote": "option_quote",
    "latest_trade": "option_trade",
    "minute_bar": "bar",
    "daily_bar": "bar",
    "prev_daily_bar": "bar",
}


@router.get(
    "/chain/{underlying}",
    response_model=OptionChain,
    summary="Option chain snapshots (greeks and IV exactly as Alpaca sent them, or null)",
    openapi_extra=CHAIN.openapi_extra(),
)
async def chain(request: Request) -> Response:
    await authorize(request, CHAIN.scope)
    gateway = gateway_of(request)
    underlying = stock_symbol(UNDERLYING_PATH.text(request) or "")
    feed = _feed(request)
    query = {"feed": feed} | _filters(request, (*FILTERS, ROOT))
    strike_low, strike_high = query.get("strike_price_gte"), query.get("strike_price_lte")
    if strike_low and strike_high and float(strike_low) > float(strike_high):
        raise invalid("strike_price_gte", "is above strike_price_lte")
    page_token, stale_s = PAGE_TOKEN.text(request), params.stale_if_error_s(request)
    outcome = await gateway.options.chain(underlying, query, page_token, stale_s)
    if isinstance(outcome, GatewayError):
        raise outcome if outcome.symbol else outcome.for_symbol(underlying)
    now = render.now()
    snapshots = {
        occ: _snapshot(snap, outcome, feed, gateway.source, now, gateway.metrics)
        for occ, snap in outcome.value["snapshots"].items()
    }
    body = {
        "underlying": underlying,
        "feed": feed,
        "snapshots": snapshots,
        "next_page_token": outcome.value["next_page_token"],
    }
    return render.json_response(body, cache_states={outcome.cache})


def _snapshot(
    snap: OptionSnapshotValue,
    served: Served[Any],
    feed: str,
    source: str,
    now: float,
    metrics: Metrics,
) -> dict[str, Any]:
    body, newest = render.members(
        snap, _MEMBERS, served, feed=feed, source=source, now=now, metrics=metrics
    )
    return {
        "symbol": snap["symbol"],
        **body,
        # Alpaca sends greeks and IV without a time; the entry's provenance covers them.
        "greeks": snap["greeks"],
        "implied_volatility": snap["implied_volatility"],
        "provenance": render.provenance(newest, served, feed=feed, source=source, now=now),
    }
