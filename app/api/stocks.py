"""Stock market-data routes: thin, they validate, read through the cache, and render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.api import render
from app.api.dependencies import Feed, Gateway, MaxAgeMs, StaleIfErrorMs, StockSymbol
from app.api.problems import PROBLEM_RESPONSES, problem
from app.errors import ErrorCode, GatewayError
from app.market_data import BarsQuery
from app.models.market_data import BarSeries, Quote, QuoteBatch, Snapshot, Trade
from app.read_through import Served
from app.settings import STOCK_FEEDS
from app.symbols import stock_symbol

router = APIRouter(prefix="/v1/stocks", tags=["stocks"], responses=PROBLEM_RESPONSES)

HISTORICAL_FEEDS = ("iex", "sip", "otc", "boats")
ADJUSTMENTS = ("raw", "split", "dividend", "spin-off", "all")


def _feed(gateway: Gateway, feed: str | None, allowed: tuple[str, ...] = STOCK_FEEDS) -> str:
    chosen = feed or gateway.settings.alpaca_data_feed
    if chosen not in allowed:
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"feed must be one of {', '.join(allowed)}",
            extensions={"invalid_params": [{"name": "feed", "reason": "unknown feed"}]},
        )
    return chosen


def _max_age(gateway: Gateway, max_age_ms: int | None) -> int | None:
    return max_age_ms if max_age_ms is not None else gateway.settings.default_max_age_ms


def _stale_s(stale_if_error_ms: int | None) -> float | None:
    return None if stale_if_error_ms is None else stale_if_error_ms / 1000


def _value(outcome: Served | GatewayError, symbol: str) -> Served:
    if isinstance(outcome, GatewayError):
        raise outcome if outcome.symbol else outcome.for_symbol(symbol)
    return outcome


def _latest(
    gateway: Gateway,
    outcome: Served | GatewayError,
    symbol: str,
    kind: str,
    feed: str,
    max_age_ms: int | None,
) -> Response:
    """One latest value (quote or trade) with its provenance, or its typed error."""
    served = _value(outcome, symbol)
    now = render.now()
    render.check_max_age(served.value["timestamp"], now, _max_age(gateway, max_age_ms), symbol)
    body = render.with_provenance(
        served.value,
        served,
        kind=kind,
        feed=feed,
        source=gateway.source,
        now=now,
        metrics=gateway.metrics,
    )
    return render.json_response(body, cache_states={served.cache})


@router.get("/{symbol}/quote", response_model=Quote, summary="Latest quote")
async def latest_quote(
    gateway: Gateway,
    symbol: StockSymbol,
    feed: Feed = None,
    max_age_ms: MaxAgeMs = None,
    stale_if_error_ms: StaleIfErrorMs = None,
) -> Response:
    chosen = _feed(gateway, feed)
    outcomes = await gateway.stocks.quotes([symbol], chosen, _stale_s(stale_if_error_ms))
    return _latest(gateway, outcomes[symbol], symbol, "quote", chosen, max_age_ms)


@router.get("/quotes", response_model=QuoteBatch, summary="Latest quotes for up to 100 symbols")
async def latest_quotes(
    gateway: Gateway,
    symbols: Annotated[str, Query(description="Comma-separated symbols", examples=["AAPL,MSFT"])],
    feed: Feed = None,
    max_age_ms: MaxAgeMs = None,
    stale_if_error_ms: StaleIfErrorMs = None,
) -> Response:
    chosen = _feed(gateway, feed)
    limit = gateway.settings.quotes_max_symbols
    raw = [s for s in symbols.split(",") if s.strip()]
    if not raw or len(raw) > limit:
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"symbols must list 1 to {limit} symbols",
            extensions={"invalid_params": [{"name": "symbols", "reason": f"1..{limit} symbols"}]},
        )
    errors: dict[str, Any] = {}
    valid: list[str] = []
    for item in raw:
        try:
            symbol = stock_symbol(item)
        except GatewayError as exc:
            # Alpaca fails a whole call on one bad symbol; we reject that one alone.
            errors[item.strip()[:32]] = problem(exc, "/v1/stocks/quotes")
            continue
        if symbol not in valid:
            valid.append(symbol)
    outcomes = (
        await gateway.stocks.quotes(valid, chosen, _stale_s(stale_if_error_ms)) if valid else {}
    )
    now = render.now()
    max_age = _max_age(gateway, max_age_ms)
    quotes: dict[str, Any] = {}
    states: set[str] = set()
    for symbol, outcome in outcomes.items():
        try:
            served = _value(outcome, symbol)
            render.check_max_age(served.value["timestamp"], now, max_age, symbol)
        except GatewayError as exc:
            errors[symbol] = problem(
                exc if exc.symbol else exc.for_symbol(symbol), "/v1/stocks/quotes"
            )
            gateway.metrics.http_errors.labels(exc.code.name).inc()
            continue
        states.add(served.cache)
        quotes[symbol] = render.with_provenance(
            served.value,
            served,
            kind="quote",
            feed=chosen,
            source=gateway.source,
            now=now,
            metrics=gateway.metrics,
        )
    return render.json_response({"quotes": quotes, "errors": errors}, cache_states=states)


@router.get("/{symbol}/trade", response_model=Trade, summary="Latest trade")
async def latest_trade(
    gateway: Gateway,
    symbol: StockSymbol,
    feed: Feed = None,
    max_age_ms: MaxAgeMs = None,
    stale_if_error_ms: StaleIfErrorMs = None,
) -> Response:
    chosen = _feed(gateway, feed)
    outcome = await gateway.stocks.trade(symbol, chosen, _stale_s(stale_if_error_ms))
    return _latest(gateway, outcome, symbol, "trade", chosen, max_age_ms)


_SNAPSHOT_MEMBERS = {
    "latest_trade": "trade",
    "latest_quote": "quote",
    "minute_bar": "bar",
    "daily_bar": "bar",
    "prev_daily_bar": "bar",
}


@router.get("/{symbol}/snapshot", response_model=Snapshot, summary="Latest trade, quote and bars")
async def snapshot(
    gateway: Gateway,
    symbol: StockSymbol,
    feed: Feed = None,
    max_age_ms: MaxAgeMs = None,
    stale_if_error_ms: StaleIfErrorMs = None,
) -> Response:
    chosen = _feed(gateway, feed)
    served = _value(
        await gateway.stocks.snapshot(symbol, chosen, _stale_s(stale_if_error_ms)), symbol
    )
    now = render.now()
    latest = [
        served.value[m]["timestamp"] for m in ("latest_trade", "latest_quote") if served.value[m]
    ]
    if latest:
        # max_age_ms judges the snapshot by its newest trade or quote.
        newest = min(latest, key=lambda t: render.age_ms(t, now))
        render.check_max_age(newest, now, _max_age(gateway, max_age_ms), symbol)
    body: dict[str, Any] = {"symbol": symbol}
    for member, kind in _SNAPSHOT_MEMBERS.items():
        item = served.value[member]
        body[member] = (
            None
            if item is None
            else render.with_provenance(
                item,
                served,
                kind=kind,
                feed=chosen,
                source=gateway.source,
                now=now,
                metrics=gateway.metrics,
            )
        )
    return render.json_response(body, cache_states={served.cache})


@router.get("/{symbol}/bars", response_model=BarSeries, summary="Historical bars")
async def bars(
    gateway: Gateway,
    symbol: StockSymbol,
    timeframe: Annotated[
        str,
        Query(
            description="1Min..59Min, 1Hour..23Hour, 1Day, 1Week, 1/2/3/4/6/12Month",
            examples=["1Day"],
        ),
    ],
    start: Annotated[str | None, Query(description="RFC 3339 or YYYY-MM-DD")] = None,
    end: Annotated[str | None, Query(description="RFC 3339 or YYYY-MM-DD")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Bars to return at most")] = 1000,
    adjustment: Annotated[str, Query(json_schema_extra={"enum": list(ADJUSTMENTS)})] = "raw",
    page_token: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9+/=_\-]{1,512}$",
            description="A `next_page_token` from an earlier answer, to continue the series",
        ),
    ] = None,
    feed: Feed = None,
    stale_if_error_ms: StaleIfErrorMs = None,
) -> Response:
    chosen = _feed(gateway, feed, HISTORICAL_FEEDS)
    if adjustment not in ADJUSTMENTS:
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            f"adjustment must be one of {', '.join(ADJUSTMENTS)}",
            extensions={"invalid_params": [{"name": "adjustment", "reason": "unknown adjustment"}]},
        )
    query = BarsQuery(symbol, timeframe, start, end, limit, chosen, adjustment, page_token)
    served = _value(await gateway.stocks.bars(query, _stale_s(stale_if_error_ms)), symbol)
    series = served.value["bars"]
    now = render.now()
    newest = min(series, key=lambda b: render.age_ms(b["timestamp"], now))["timestamp"]
    gateway.metrics.data_age.labels("bar", served.cache).observe(
        max(0.0, render.age_ms(newest, now) / 1000)
    )
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
