"""Public options vocabulary. Greeks and implied volatility are Alpaca's or null: never computed
here. Trading-API decimals (strike, size, multiplier) stay the strings Alpaca sent."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.models.market_data import BarData, Number
from app.models.provenance import Provenance


class OptionQuoteData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    bid_price: Number | None = Field(description="null when Alpaca reports no active bid")
    bid_size: Number | None
    bid_exchange: str | None
    ask_price: Number | None = Field(description="null when Alpaca reports no active ask")
    ask_size: Number | None
    ask_exchange: str | None
    condition: str | None = Field(description="Alpaca's single condition code (`c`)")
    timestamp: str


class OptionQuote(OptionQuoteData):
    provenance: Provenance


class OptionTradeData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    price: Number
    size: Number
    exchange: str | None
    condition: str | None
    timestamp: str


class Greeks(BaseModel):
    model_config = ConfigDict(frozen=True)

    delta: Number
    gamma: Number
    theta: Number
    vega: Number
    rho: Number


class OptionSnapshotData(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    latest_quote: OptionQuoteData | None
    latest_trade: OptionTradeData | None
    greeks: Greeks | None = Field(description="Exactly as Alpaca sent them; null when absent")
    implied_volatility: Number | None = Field(description="Alpaca's; null when absent")
    minute_bar: BarData | None
    daily_bar: BarData | None
    prev_daily_bar: BarData | None


class OptionTrade(OptionTradeData):
    provenance: Provenance


class OptionBar(BarData):
    provenance: Provenance


class OptionSnapshot(BaseModel):
    """A chain entry. Each member has its own provenance; the entry's `provenance` (newest
    member time) covers greeks and implied volatility, which Alpaca sends without a time."""

    symbol: str
    provenance: Provenance
    latest_quote: OptionQuote | None
    latest_trade: OptionTrade | None
    greeks: Greeks | None
    implied_volatility: Number | None
    minute_bar: OptionBar | None
    daily_bar: OptionBar | None
    prev_daily_bar: OptionBar | None


class OptionChain(BaseModel):
    underlying: str
    feed: str
    snapshots: dict[str, OptionSnapshot]
    next_page_token: str | None = Field(
        description="Alpaca's token when the page cap stopped the walk; null when complete"
    )


class OptionContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    id: str
    symbol: str
    name: str
    status: str
    tradable: bool
    expiration_date: str
    root_symbol: str | None = None
    underlying_symbol: str
    underlying_asset_id: str
    type: str
    style: str
    strike_price: str
    multiplier: str | None = Field(default=None, description="absent when Alpaca leaves it out")
    size: str
    open_interest: str | None = None
    open_interest_date: str | None = None
    close_price: str | None = None
    close_price_date: str | None = None


class OptionContracts(BaseModel):
    contracts: list[OptionContract]
    next_page_token: str | None
