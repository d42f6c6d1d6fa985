"""The stock read path: which Alpaca calls answer a request, and how missing values are named.

Alpaca answers 200 and simply omits a symbol it has no value for, so a missing symbol is
classified through the (cached) asset endpoint: unknown asset -> SYMBOL_NOT_FOUND, known asset
-> NO_DATA. Nothing here invents a value: every item is Alpaca's, or a typed error.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.alpaca.market_data import StockDataClient, quote_is_empty
from app.alpaca.trading import TradingClient
from app.cache import cache_key
from app.errors import ErrorCode, GatewayError
from app.quotas import MemoryQuotas
from app.read_through import Outcome, ReadThrough, Result, Served
from app.settings import Settings

_TIMEFRAME = re.compile(r"^([1-9][0-9]?)(Min|T|Hour|H|Day|D|Week|W|Month|M)$")
_UNIT_SECONDS = {"Min": 60, "T": 60, "Hour": 3600, "H": 3600, "Day": 86_400, "D": 86_400}
_UNIT_SECONDS |= {"Week": 604_800, "W": 604_800, "Month": 2_678_400, "M": 2_678_400}
_UNIT_LIMITS = {"Min": 59, "T": 59, "Hour": 23, "H": 23, "Day": 1, "D": 1, "Week": 1, "W": 1}
_MONTHS = {1, 2, 3, 4, 6, 12}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def timeframe_seconds(timeframe: str) -> int:
    """Length of one bar, or VALIDATION_ERROR for a timeframe Alpaca would refuse."""
    match = _TIMEFRAME.fullmatch(timeframe)
    amount, unit = (int(match[1]), match[2]) if match else (0, "")
    valid = bool(match) and (
        amount in _MONTHS if unit in ("Month", "M") else amount <= _UNIT_LIMITS.get(unit, 0)
    )
    if not valid:
        raise _invalid(
            "timeframe", f"{timeframe!r} is not an Alpaca timeframe (e.g. 1Min, 15Min, 1Hour, 1Day)"
        )
    return amount * _UNIT_SECONDS[unit]


def time_bound(name: str, value: str) -> float:
    """Epoch seconds for a `start`/`end` given as RFC 3339 or YYYY-MM-DD (UTC midnight)."""
    if _DATE.fullmatch(value):
        text = f"{value}T00:00:00+00:00"
    elif _RFC3339.fullmatch(value):
        text = value
    else:
        raise _invalid(name, f"{name} must be RFC 3339 or YYYY-MM-DD")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise _invalid(name, f"{name} is not a real date") from exc


def latest_time(value: Mapping[str, Any]) -> Iterable[str]:
    """A quote's or trade's observation time."""
    return (value["timestamp"],)


SNAPSHOT_MEMBERS = ("latest_trade", "latest_quote", "minute_bar", "daily_bar", "prev_daily_bar")


def snapshot_times(value: Mapping[str, Any]) -> Iterable[str]:
    """The observation times of a snapshot's members (stock or option)."""
    return (value[m]["timestamp"] for m in SNAPSHOT_MEMBERS if value.get(m) is not None)


def bar_times(value: Mapping[str, Any]) -> Iterable[str]:
    return (bar["timestamp"] for bar in value["bars"])


def _invalid(name: str, detail: str) -> GatewayError:
    return GatewayError(
        ErrorCode.VALIDATION_ERROR,
        detail,
        extensions={"invalid_params": [{"name": name, "reason": detail}]},
    )


@dataclass(frozen=True, slots=True)
class BarsQuery:
    symbol: str
    timeframe: str
    start: str | None
    end: str | None
    limit: int
    feed: str
    adjustment: str
    page_token: str | None = None

    def params(self) -> dict[str, str]:
        query = {"timeframe": self.timeframe, "feed": self.feed, "adjustment": self.adjustment}
        if self.start:
            query["start"] = self.start
        if self.end:
            query["end"] = self.end
        return query


class StockReads:
    def __init__(
        self,
        stocks: StockDataClient,
        trading: TradingClient,
        read_through: ReadThrough,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stocks = stocks
        self._trading = trading
        self._reads = read_through
        self._settings = settings
        self._clock = clock
        self._lookups = MemoryQuotas(
            settings.asset_lookups_per_minute, max(1, settings.asset_lookups_per_minute // 3)
        )

    def _refusal(self, endpoint: str) -> Callable[[], GatewayError | None]:
        return lambda: self._stocks.transport.refusal(endpoint)

    async def quotes(
        self, symbols: Sequence[str], feed: str, stale_if_error_s: float | None
    ) -> dict[str, Outcome]:
        async def one(symbol: str) -> Result:
            try:
                return (await fetch([symbol]))[symbol]
            except GatewayError as exc:
                return exc.for_symbol(symbol)

        async def fetch(chunk: list[str]) -> dict[str, Result]:
            try:
                found = await self._stocks.latest_quotes(chunk, feed)
            except GatewayError as exc:
                if exc.code is not ErrorCode.VALIDATION_ERROR or len(chunk) == 1:
                    raise
                # Alpaca refused one symbol and failed them all: ask for each on its own so
                # only the symbol it refuses gets the error.
                singles = await asyncio.gather(*(one(s) for s in chunk))
                return dict(zip(chunk, singles, strict=True))
            values = {s: q.model_dump() for s, q in found.items() if q and not quote_is_empty(q)}
            return values | await self.explain_missing([s for s in chunk if s not in values])

        return await self._reads.read(
            "quote",
            {s: cache_key("quote", feed, s) for s in symbols},
            fetch,
            fresh_ttl_s=self._settings.cache_quote_ttl_s,
            chunk_size=self._settings.data_symbols_per_call,
            stale_if_error_s=stale_if_error_s,
            refusal=self._refusal("quotes_latest"),
            observed=latest_time,
        )

    async def trade(self, symbol: str, feed: str, stale_if_error_s: float | None) -> Outcome:
        async def fetch(chunk: list[str]) -> dict[str, Result]:
            found = await self._stocks.latest_trades(chunk, feed)
            values = {s: t.model_dump() for s, t in found.items() if t is not None}
            return values | await self.explain_missing([s for s in chunk if s not in values])

        outcomes = await self._reads.read(
            "trade",
            {symbol: cache_key("trade", feed, symbol)},
            fetch,
            fresh_ttl_s=self._settings.cache_trade_ttl_s,
            chunk_size=1,
            stale_if_error_s=stale_if_error_s,
            refusal=self._refusal("trades_latest"),
            observed=latest_time,
        )
        return outcomes[symbol]

    async def snapshot(self, symbol: str, feed: str, stale_if_error_s: float | None) -> Outcome:
        async def fetch(chunk: list[str]) -> dict[str, Result]:
            found = await self._stocks.snapshots(chunk, feed)
            values = {s: snap.model_dump() for s, snap in found.items() if snap is not None}
            return values | await self.explain_missing([s for s in chunk if s not in values])

        outcomes = await self._reads.read(
            "snapshot",
            {symbol: cache_key("snapshot", feed, symbol)},
            fetch,
            fresh_ttl_s=self._settings.cache_snapshot_ttl_s,
            chunk_size=1,
            stale_if_error_s=stale_if_error_s,
            refusal=self._refusal("snapshots"),
            observed=snapshot_times,
        )
        return outcomes[symbol]

    async def bars(self, query: BarsQuery, stale_if_error_s: float | None) -> Outcome:
        bar_s = timeframe_seconds(query.timeframe)
        end_s = time_bound("end", query.end) if query.end else None
        start_s = time_bound("start", query.start) if query.start else None
        if start_s is not None and end_s is not None and start_s > end_s:
            raise _invalid("start", "start is after end")
        # Bars of intervals that have closed never change; anything reaching "now" may.
        closed = end_s is not None and end_s + bar_s <= self._clock()
        ttl_s = (
            self._settings.cache_closed_bars_ttl_s
            if closed
            else self._settings.cache_open_bars_ttl_s
        )
        key = cache_key(
            "bars",
            query.feed,
            query.symbol,
            query.timeframe,
            query.start or "-",
            query.end or "-",
            str(query.limit),
            query.adjustment,
            query.page_token or "-",
        )

        async def fetch(chunk: list[str]) -> dict[str, Result]:
            bars, next_token = await self._stocks.bars(
                query.symbol,
                query.params(),
                query.limit,
                self._settings.bars_max_pages,
                query.page_token,
            )
            if bars:
                series = [b.model_dump() for b in bars]
                return {query.symbol: {"bars": series, "next_page_token": next_token}}
            return await self.explain_missing([query.symbol], "bars in the requested range")

        outcomes = await self._reads.read(
            "bar",
            {query.symbol: key},
            fetch,
            fresh_ttl_s=ttl_s,
            chunk_size=1,
            stale_if_error_s=stale_if_error_s,
            refusal=self._refusal("bars"),
            observed=bar_times,
        )
        return outcomes[query.symbol]

    async def clock(self) -> Outcome:
        async def fetch(chunk: list[str]) -> dict[str, Result]:
            return {"clock": (await self._trading.clock()).model_dump()}

        outcomes = await self._reads.read(
            "clock",
            {"clock": cache_key("clock", "-", "-")},
            fetch,
            fresh_ttl_s=self._settings.cache_clock_ttl_s,
            chunk_size=1,
        )
        return outcomes["clock"]

    async def explain_missing(
        self, symbols: Sequence[str], what: str = "value"
    ) -> dict[str, GatewayError]:
        """Alpaca omitted these symbols: ask the asset endpoint whether each exists at all."""
        if not symbols:
            return {}
        assets = await self._assets(symbols)
        explained: dict[str, GatewayError] = {}
        for symbol in symbols:
            asset = assets[symbol]
            if isinstance(asset, Served):
                explained[symbol] = GatewayError(
                    ErrorCode.NO_DATA,
                    f"Alpaca knows {symbol} but has no {what} for it now",
                    upstream="data",
                    symbol=symbol,
                )
            elif asset.code is ErrorCode.SYMBOL_NOT_FOUND:
                explained[symbol] = asset
            else:
                # The lookup itself failed: we cannot tell unknown from empty, so say that.
                explained[symbol] = asset.for_symbol(symbol)
        return explained

    async def _assets(self, symbols: Sequence[str]) -> Mapping[str, Outcome]:
        async def fetch(chunk: list[str]) -> dict[str, Result]:
            # Alpaca has no batch lookup by symbol; these are cached for an hour.
            found = await asyncio.gather(*(self._asset(s) for s in chunk))
            return dict(zip(chunk, found, strict=True))

        return await self._reads.read(
            "asset",
            {s: cache_key("asset", "-", s) for s in symbols},
            fetch,
            fresh_ttl_s=self._settings.cache_asset_ttl_s,
            chunk_size=len(symbols),
        )

    async def _asset(self, symbol: str) -> Any:
        # Lookups spend the trading API's budget, which orders share: a batch of made-up
        # symbols must not be able to spend it. Past the budget the symbol is unclassified.
        wait_s = await self._lookups.take("asset-lookups")
        if wait_s > 0:
            return GatewayError(
                ErrorCode.UPSTREAM_RATE_LIMITED,
                f"Too many unknown symbols to look up now; {symbol} could not be classified",
                upstream="reference",
                symbol=symbol,
                retry_after_s=max(1, int(wait_s + 0.999)),
            )
        try:
            asset = await self._trading.asset(symbol)
        except GatewayError as exc:
            return exc
        if asset is None:
            return GatewayError(
                ErrorCode.SYMBOL_NOT_FOUND,
                f"Alpaca does not know the symbol {symbol}",
                upstream="reference",
                symbol=symbol,
            )
        return asset.model_dump()
