"""Stock market-data vocabulary: one typed value per kind, field names as alpaca-py's models use.

A `*Value` is what a parser makes of Alpaca's wire object and what the cache keeps: a plain dict
(TypedDicts cost nothing at run time). The answer types add `provenance` and are what the routes
declare as their response models. Numbers are exactly the JSON numbers Alpaca sent; a side
Alpaca sent as 0 or absent is `None`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

from app.models.provenance import Provenance

Number = int | float
_STRICT = ConfigDict(extra="forbid")

_QUOTE_EXAMPLE: dict[str, Any] = {
    "symbol": "AAPL",
    "bid_price": 172.62,
    "bid_size": 2,
    "bid_exchange": "Q",
    "ask_price": 172.7,
    "ask_size": 1,
    "ask_exchange": "Q",
    "conditions": ["R"],
    "tape": "C",
    "timestamp": "2022-08-17T10:07:40.286587431Z",
    "provenance": {
        "source": "alpaca",
        "feed": "iex",
        "observed_at": "2022-08-17T10:07:40.286587431Z",
        "fetched_at": "2022-08-17T10:07:40.301122Z",
        "age_ms": 31,
        "cache": "miss",
    },
}
_TRADE_EXAMPLE: dict[str, Any] = {
    "symbol": "AAPL",
    "price": 172.61,
    "size": 160,
    "exchange": "Q",
    "id": 1011,
    "conditions": ["@", "T"],
    "tape": "C",
    "update": None,
    "timestamp": "2022-08-17T10:18:24.114694956Z",
    "provenance": {**_QUOTE_EXAMPLE["provenance"], "observed_at": "2022-08-17T10:18:24.114694956Z"},
}
_BAR_EXAMPLE: dict[str, Any] = {
    "timestamp": "2022-08-16T04:00:00Z",
    "open": 172.62,
    "high": 173.71,
    "low": 171.6618,
    "close": 173.03,
    "volume": 56457696,
    "trade_count": 515139,
    "vwap": 172.743391,
}


class QuoteValue(TypedDict):
    symbol: str
    bid_price: Annotated[
        Number | None, Field(description="null when Alpaca reports no active bid (0/absent)")
    ]
    bid_size: Number | None
    bid_exchange: str | None
    ask_price: Annotated[
        Number | None, Field(description="null when Alpaca reports no active ask (0/absent)")
    ]
    ask_size: Number | None
    ask_exchange: str | None
    conditions: list[str] | None
    tape: str | None
    timestamp: Annotated[str, Field(description="Alpaca's own timestamp text (nanoseconds kept)")]


@with_config(ConfigDict(extra="forbid", json_schema_extra={"example": _QUOTE_EXAMPLE}))
class Quote(QuoteValue):
    provenance: Provenance


class TradeValue(TypedDict):
    symbol: str
    price: Number
    size: Number
    exchange: str | None
    id: int | None
    conditions: list[str] | None
    tape: str | None
    update: Annotated[str | None, Field(description="Alpaca's `u`: canceled/incorrect/corrected")]
    timestamp: str


@with_config(ConfigDict(extra="forbid", json_schema_extra={"example": _TRADE_EXAMPLE}))
class Trade(TradeValue):
    provenance: Provenance


class BarValue(TypedDict):
    timestamp: str
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    trade_count: int | None
    vwap: Number | None


@with_config(_STRICT)
class Bar(BarValue):
    provenance: Provenance


class SnapshotValue(TypedDict):
    """At least one member is set (a snapshot with none is no value)."""

    symbol: str
    latest_trade: TradeValue | None
    latest_quote: QuoteValue | None
    minute_bar: BarValue | None
    daily_bar: BarValue | None
    prev_daily_bar: BarValue | None


@with_config(_STRICT)
class Snapshot(TypedDict):
    """Alpaca's snapshot; each member carries its own provenance because each has its own time."""

    symbol: str
    latest_trade: Trade | None
    latest_quote: Quote | None
    minute_bar: Bar | None
    daily_bar: Bar | None
    prev_daily_bar: Bar | None


class BarSeriesValue(TypedDict):
    """At least one bar (no bars is NO_DATA, never an empty series)."""

    bars: list[BarValue]
    next_page_token: str | None


@with_config(
    ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "symbol": "AAPL",
                "timeframe": "1Day",
                "feed": "iex",
                "adjustment": "raw",
                "bars": [_BAR_EXAMPLE],
                "next_page_token": None,
                "provenance": {
                    **_QUOTE_EXAMPLE["provenance"],
                    "observed_at": "2022-08-16T04:00:00Z",
                    "cache": "hit",
                },
            }
        },
    )
)
class BarSeries(TypedDict):
    """Bars for one symbol. `provenance.observed_at` is the newest bar's time."""

    symbol: str
    timeframe: str
    feed: str
    adjustment: str
    bars: list[BarValue]
    next_page_token: Annotated[
        str | None,
        Field(
            description="Alpaca's token for bars not fetched (limit or page cap reached); "
            "null if none"
        ),
    ]
    provenance: Provenance


@with_config(
    ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "quotes": {"AAPL": _QUOTE_EXAMPLE},
                "errors": {
                    "ZZZZ": {
                        "type": "https://github.com/alpaca-real-data-gateway/problems/symbol-not-found",
                        "title": "Unknown symbol",
                        "status": 404,
                        "detail": "Alpaca does not know the symbol ZZZZ",
                        "instance": "/v1/stocks/quotes",
                        "code": "SYMBOL_NOT_FOUND",
                        "request_id": "5f0c6c1e2b7d4a0e9f1b3c2d4e5f6a7b",
                        "retryable": False,
                        "upstream": "reference",
                        "symbol": "ZZZZ",
                    }
                },
            }
        },
    )
)
class QuoteBatch(TypedDict):
    quotes: dict[str, Quote]
    errors: Annotated[
        dict[str, dict[str, Any]],
        Field(description="problem+json object per symbol that has no real quote"),
    ]


class ClockValue(TypedDict):
    timestamp: str
    is_open: bool
    next_open: str
    next_close: str


@with_config(_STRICT)
class MarketClock(ClockValue):
    provenance: Provenance


class AssetValue(TypedDict):
    """What the gateway keeps of an asset: enough to say "known" (and how)."""

    symbol: str
    status: str
    tradable: bool
    asset_class: str
