"""Public stock market-data vocabulary: field names as alpaca-py's models use them.

Numbers are exactly the JSON numbers Alpaca sent; a side Alpaca sent as 0 or absent is `None`.
The `*Data` models are what parsers produce and caches keep; the public models add provenance.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.models.provenance import Provenance

Number = int | float

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


class QuoteData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    bid_price: Number | None = Field(
        description="null when Alpaca reports no active bid (0/absent)"
    )
    bid_size: Number | None
    bid_exchange: str | None
    ask_price: Number | None = Field(
        description="null when Alpaca reports no active ask (0/absent)"
    )
    ask_size: Number | None
    ask_exchange: str | None
    conditions: list[str] | None
    tape: str | None
    timestamp: str = Field(description="Alpaca's own timestamp text (nanoseconds kept)")


class Quote(QuoteData):
    model_config = ConfigDict(frozen=True, json_schema_extra={"example": _QUOTE_EXAMPLE})

    provenance: Provenance


class TradeData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: Number
    size: Number
    exchange: str | None
    id: int | None
    conditions: list[str] | None
    tape: str | None
    update: str | None = Field(
        default=None, description="Alpaca's `u`: canceled/incorrect/corrected"
    )
    timestamp: str


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


class Trade(TradeData):
    model_config = ConfigDict(frozen=True, json_schema_extra={"example": _TRADE_EXAMPLE})

    provenance: Provenance


class BarData(BaseModel):
    model_config = ConfigDict(frozen=True)

    timestamp: str
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    trade_count: int | None
    vwap: Number | None


class Bar(BarData):
    provenance: Provenance


class Snapshot(BaseModel):
    """Alpaca's snapshot; each member carries its own provenance because each has its own time."""

    symbol: str
    latest_trade: Trade | None
    latest_quote: Quote | None
    minute_bar: Bar | None
    daily_bar: Bar | None
    prev_daily_bar: Bar | None


class BarSeries(BaseModel):
    """Bars for one symbol. `provenance.observed_at` is the newest bar's time."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "symbol": "AAPL",
                "timeframe": "1Day",
                "feed": "iex",
                "adjustment": "raw",
                "bars": [
                    {
                        "timestamp": "2022-08-16T04:00:00Z",
                        "open": 172.62,
                        "high": 173.71,
                        "low": 171.6618,
                        "close": 173.03,
                        "volume": 56457696,
                        "trade_count": 515139,
                        "vwap": 172.743391,
                    }
                ],
                "next_page_token": None,
                "provenance": {
                    **_QUOTE_EXAMPLE["provenance"],
                    "observed_at": "2022-08-16T04:00:00Z",
                    "cache": "hit",
                },
            }
        }
    )

    symbol: str
    timeframe: str
    feed: str
    adjustment: str
    bars: list[BarData]
    next_page_token: str | None = Field(
        description="Alpaca's token for bars not fetched (limit or page cap reached); null if none"
    )
    provenance: Provenance


class QuoteBatch(BaseModel):
    model_config = ConfigDict(
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
                        "upstream": "trading",
                        "symbol": "ZZZZ",
                    }
                },
            }
        }
    )

    quotes: dict[str, Quote]
    errors: dict[str, dict[str, Any]] = Field(
        description="problem+json object per symbol that has no real quote"
    )


class MarketClock(BaseModel):
    timestamp: str
    is_open: bool
    next_open: str
    next_close: str
    provenance: Provenance


class SnapshotData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    latest_trade: TradeData | None
    latest_quote: QuoteData | None
    minute_bar: BarData | None
    daily_bar: BarData | None
    prev_daily_bar: BarData | None


class ClockData(BaseModel):
    model_config = ConfigDict(frozen=True)

    timestamp: str
    is_open: bool
    next_open: str
    next_close: str


class AssetData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    status: str
    tradable: bool
    asset_class: str
