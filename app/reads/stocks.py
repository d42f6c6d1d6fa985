"""The stock read path: which Alpaca calls answer a request, and how missing values are named.

Latest quotes, trades and snapshots go through the one latest-value template; bars and the
market clock are reads of their own. Nothing here invents a value: every item is Alpaca's, or a
typed error (a symbol Alpaca omitted is classified by `MissingSymbols`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from app.alpaca.market_data import SNAPSHOT_MEMBERS, StockDataClient
from app.alpaca.trading import TradingClient
from app.cache import cache_key
from app.errors import ErrorCode, GatewayError
from app.models.market_data import (
    BarSeriesValue,
    ClockValue,
    QuoteValue,
    SnapshotValue,
    TradeValue,
)
from app.models.options import OptionSnapshotValue
from app.reads.bar_spans import BarSpans, Family, Span, bound_key, instant_ns
from app.reads.latest import LatestKind, LatestReads
from app.reads.missing import MissingSymbols
from app.reads.read_through import Outcome, ReadThrough
from app.settings import Settings

_TIMEFRAME = re.compile(r"^([1-9][0-9]?)(Min|T|Hour|H|Day|D|Week|W|Month|M)$")
_UNIT_SECONDS = {"Min": 60, "T": 60, "Hour": 3600, "H": 3600, "Day": 86_400, "D": 86_400}
_UNIT_SECONDS |= {"Week": 604_800, "W": 604_800, "Month": 2_678_400, "M": 2_678_400}
_UNIT_LIMITS = {"Min": 59, "T": 59, "Hour": 23, "H": 23, "Day": 1, "D": 1, "Week": 1, "W": 1}
_MONTHS = {1, 2, 3, 4, 6, 12}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# From a bare date's UTC midnight to its last moment anywhere on Earth (UTC-12).
_LAST_DAY_END_S = 86_400 + 12 * 3_600
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


# How long after its bar has closed a range still counts as open: SIP data reaches the free plan
# 15 minutes late and trades are corrected after the fact, so a range ending just now may yet
# gain or change bars. Kept the open-bars TTL until then, not the closed one (a day).
BARS_SETTLE_S = 15 * 60


def range_end_s(end: str) -> float:
    """The latest moment an `end` may cover, to decide whether a range has closed. Alpaca does
    not say in which zone a bare date ends (the emulator: its last UTC nanosecond; New York
    would be 5 h later), so a date counts as over once it is over everywhere."""
    end_s = time_bound("end", end)
    return end_s + _LAST_DAY_END_S if _DATE.fullmatch(end) else end_s


def _bars_key(family: Family, query: BarsQuery) -> str:
    feed, symbol, timeframe, end, limit, adjustment = family
    start, token = bound_key(query.start), query.page_token or "-"
    return cache_key("bar", feed, symbol, timeframe, start, end, limit, adjustment, token)


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


def latest_time(value: QuoteValue | TradeValue) -> Iterable[str]:
    """A quote's or trade's observation time."""
    return (value["timestamp"],)


def snapshot_times(value: SnapshotValue | OptionSnapshotValue) -> Iterable[str]:
    """The observation times of a snapshot's members."""
    return (m["timestamp"] for name in SNAPSHOT_MEMBERS if (m := value[name]) is not None)


def bar_times(value: BarSeriesValue) -> Iterable[str]:
    return (bar["timestamp"] for bar in value["bars"])


class StockReads:
    def __init__(
        self,
        stocks: StockDataClient,
        reference: TradingClient,
        missing: MissingSymbols,
        read_through: ReadThrough,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._stocks = stocks
        self._reference = reference
        self._missing = missing
        self._reads = read_through
        self._settings = settings
        self._clock = clock
        self._spans = BarSpans(settings.cache_bar_spans_max_entries)
        per_call = settings.data_symbols_per_call
        self._quotes = LatestReads(
            read_through,
            LatestKind(
                "quote",
                stocks.latest_quotes,
                self._explain("quote"),
                self._refusal("quotes_latest"),
                latest_time,
                settings.cache_quote_ttl_s,
                per_call,
            ),
        )
        self._trades = LatestReads(
            read_through,
            LatestKind(
                "trade",
                stocks.latest_trades,
                self._explain("trade"),
                self._refusal("trades_latest"),
                latest_time,
                settings.cache_trade_ttl_s,
                per_call,
            ),
        )
        self._snapshots = LatestReads(
            read_through,
            LatestKind(
                "snapshot",
                stocks.snapshots,
                self._explain("snapshot"),
                self._refusal("snapshots"),
                snapshot_times,
                settings.cache_snapshot_ttl_s,
                per_call,
            ),
        )

    def _refusal(self, endpoint: str) -> Callable[[], GatewayError | None]:
        return lambda: self._stocks.transport.refusal(endpoint)

    def _explain(self, what: str) -> Callable[[Sequence[str]], Awaitable[dict[str, GatewayError]]]:
        return lambda symbols: self._missing.stocks(symbols, what, "data")

    async def quotes(
        self, symbols: Sequence[str], feed: str, stale_if_error_s: float | None
    ) -> dict[str, Outcome[QuoteValue]]:
        return await self._quotes.read(symbols, feed, stale_if_error_s)

    async def quote(
        self, symbol: str, feed: str, stale_if_error_s: float | None
    ) -> Outcome[QuoteValue]:
        return (
            self._quotes.answer_now(symbol, feed, stale_if_error_s)
            or (await self._quotes.read([symbol], feed, stale_if_error_s))[symbol]
        )

    async def trade(
        self, symbol: str, feed: str, stale_if_error_s: float | None
    ) -> Outcome[TradeValue]:
        return (
            self._trades.answer_now(symbol, feed, stale_if_error_s)
            or (await self._trades.read([symbol], feed, stale_if_error_s))[symbol]
        )

    async def snapshot(
        self, symbol: str, feed: str, stale_if_error_s: float | None
    ) -> Outcome[SnapshotValue]:
        return (await self._snapshots.read([symbol], feed, stale_if_error_s))[symbol]

    def bar_spans(self) -> int:
        """Spans the bar index holds (a gauge; bounded by CACHE_BAR_SPANS_MAX_ENTRIES)."""
        return self._spans.size()

    async def bars(
        self, query: BarsQuery, stale_if_error_s: float | None
    ) -> Outcome[BarSeriesValue]:
        bar_s = timeframe_seconds(query.timeframe)
        end_s = time_bound("end", query.end) if query.end else None
        start_s = time_bound("start", query.start) if query.start else None
        if start_s is not None and end_s is not None and start_s > end_s:
            raise _invalid("start", "start is after end")
        # Bars of intervals that have closed (and settled) never change; anything reaching
        # "now" may.
        closed = (
            query.end is not None
            and range_end_s(query.end) + bar_s + BARS_SETTLE_S <= self._clock()
        )
        ttl_s = (
            self._settings.cache_closed_bars_ttl_s
            if closed
            else self._settings.cache_open_bars_ttl_s
        )
        # Keyed by the instants asked for, not their spelling (`app.reads.bar_spans`).
        family: Family = (
            query.feed,
            query.symbol,
            query.timeframe,
            bound_key(query.end),
            str(query.limit),
            query.adjustment,
        )
        # Only a closed range without a page token can be answered by another start's series.
        spannable = closed and query.page_token is None
        span_start = instant_ns(query.start) if spannable and query.start else None
        span = self._spans.find(family, span_start) if span_start is not None else None
        key = span.key if span is not None else _bars_key(family, query)

        async def fetch(chunk: list[str]) -> dict[str, BarSeriesValue | GatewayError]:
            bars, next_token = await self._stocks.bars(
                query.symbol,
                query.params(),
                query.limit,
                self._settings.bars_max_pages,
                query.page_token,
            )
            if bars:
                return {query.symbol: BarSeriesValue(bars=bars, next_page_token=next_token)}
            what = "bars in the requested range"
            return dict(await self._missing.stocks([query.symbol], what, "data"))

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
        outcome = outcomes[query.symbol]
        if span_start is not None and span is None:
            self._remember_span(family, span_start, key, outcome)
        return outcome

    def _remember_span(
        self, family: Family, start_ns: int, key: str, outcome: Outcome[BarSeriesValue]
    ) -> None:
        """A complete series of a closed range: starts up to its first bar get the same."""
        if isinstance(outcome, GatewayError) or outcome.value["next_page_token"] is not None:
            return
        bars = outcome.value["bars"]
        first_ns = instant_ns(bars[0]["timestamp"]) if bars else None
        if first_ns is not None:
            self._spans.record(family, Span(start_ns, first_ns, key))

    async def clock(self) -> Outcome[ClockValue]:
        async def fetch(chunk: list[str]) -> dict[str, ClockValue | GatewayError]:
            return {"clock": await self._reference.clock()}

        outcomes = await self._reads.read(
            "clock",
            {"clock": cache_key("clock", "-", "-")},
            fetch,
            fresh_ttl_s=self._settings.cache_clock_ttl_s,
            chunk_size=1,
        )
        return outcomes["clock"]
