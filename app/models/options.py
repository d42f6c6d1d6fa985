"""Options vocabulary: one typed value per kind, as for stocks (`app/models/market_data.py`).

Greeks and implied volatility are Alpaca's or null: never computed here. Trading-API decimals
(strike, size, multiplier) are the exact text Alpaca sent.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from app.models.market_data import Bar, BarValue, Number
from app.models.provenance import Provenance

_STRICT = ConfigDict(extra="forbid")


class OptionQuoteValue(TypedDict):
    symbol: str
    bid_price: Annotated[Number | None, Field(description="null when Alpaca reports no active bid")]
    bid_size: Number | None
    bid_exchange: str | None
    ask_price: Annotated[Number | None, Field(description="null when Alpaca reports no active ask")]
    ask_size: Number | None
    ask_exchange: str | None
    condition: Annotated[str | None, Field(description="Alpaca's single condition code (`c`)")]
    timestamp: str


@with_config(_STRICT)
class OptionQuote(OptionQuoteValue):
    provenance: Provenance


class OptionTradeValue(TypedDict):
    symbol: str
    price: Number
    size: Number
    exchange: str | None
    condition: str | None
    timestamp: str


@with_config(_STRICT)
class OptionTrade(OptionTradeValue):
    provenance: Provenance


@with_config(_STRICT)
class Greeks(TypedDict):
    delta: Number
    gamma: Number
    theta: Number
    vega: Number
    rho: Number


class OptionSnapshotValue(TypedDict):
    """At least one observed member is set (greeks alone have no time to carry)."""

    symbol: str
    latest_quote: OptionQuoteValue | None
    latest_trade: OptionTradeValue | None
    greeks: Annotated[
        Greeks | None, Field(description="Exactly as Alpaca sent them; null when absent")
    ]
    implied_volatility: Annotated[Number | None, Field(description="Alpaca's; null when absent")]
    minute_bar: BarValue | None
    daily_bar: BarValue | None
    prev_daily_bar: BarValue | None


@with_config(_STRICT)
class OptionSnapshot(TypedDict):
    """A chain entry. Each member has its own provenance; the entry's `provenance` (newest
    member time) covers greeks and implied volatility, which Alpaca sends without a time."""

    symbol: str
    provenance: Provenance
    latest_quote: OptionQuote | None
    latest_trade: OptionTrade | None
    greeks: Greeks | None
    implied_volatility: Number | None
    minute_bar: Bar | None
    daily_bar: Bar | None
    prev_daily_bar: Bar | None


class OptionChainValue(TypedDict):
    """At least one snapshot, keyed by OCC symbol."""

    snapshots: dict[str, OptionSnapshotValue]
    next_page_token: str | None


@with_config(_STRICT)
class OptionChain(TypedDict):
    underlying: str
    feed: str
    snapshots: dict[str, OptionSnapshot]
    next_page_token: Annotated[
        str | None,
        Field(description="Alpaca's token when the page cap stopped the walk; null when complete"),
    ]


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
