"""Alpaca's real-time feeds the gateway relays: their paths, channels and message types.

Alpaca serves stocks on `stream.data.alpaca.markets/v2/{feed}`, options on `/v1beta1/{feed}`
and the account's trade updates on `{paper-}api.alpaca.markets/stream`. The gateway serves the
same paths under its `/alpaca` prefix, one upstream connection per feed behind them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal, get_args

FeedName = Literal["iex", "sip", "delayed_sip", "test", "indicative", "opra", "trade_updates"]
FEED_NAMES: tuple[FeedName, ...] = get_args(FeedName)
ALPACA_STREAM_URL = "wss://stream.data.alpaca.markets"
WILDCARD = "*"


class FeedFamily(Enum):
    """What a feed carries, which decides its messages, channels and framing."""

    STOCKS = "stocks"
    OPTIONS = "options"
    TRADING = "trading"


@dataclass(frozen=True, slots=True)
class Feed:
    """One Alpaca stream endpoint; `path` is Alpaca's (and the gateway's, under /alpaca)."""

    name: FeedName
    path: str
    family: FeedFamily

    @property
    def channels(self) -> tuple[str, ...]:
        return CHANNELS[self.family]


# The channels a `subscription` message lists, in Alpaca's order. Corrections and cancel/errors
# are not subscribed to: they follow trades.
CHANNELS: dict[FeedFamily, tuple[str, ...]] = {
    FeedFamily.STOCKS: (
        *("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds"),
        *("corrections", "cancelErrors"),
    ),
    FeedFamily.OPTIONS: ("trades", "quotes"),
    FeedFamily.TRADING: (),
}
FOLLOW_TRADES = frozenset({"corrections", "cancelErrors"})
# Message type -> the channel whose subscribers receive it (market data only).
CHANNEL_OF_TYPE: dict[str, str] = {
    "t": "trades",
    "q": "quotes",
    "b": "bars",
    "u": "updatedBars",
    "d": "dailyBars",
    "s": "statuses",
    "l": "lulds",
    "c": "trades",  # corrections follow trades
    "x": "trades",  # so do cancel/errors
}

FEEDS: tuple[Feed, ...] = (
    Feed("iex", "/v2/iex", FeedFamily.STOCKS),
    Feed("sip", "/v2/sip", FeedFamily.STOCKS),
    Feed("delayed_sip", "/v2/delayed_sip", FeedFamily.STOCKS),
    Feed("test", "/v2/test", FeedFamily.STOCKS),
    Feed("indicative", "/v1beta1/indicative", FeedFamily.OPTIONS),
    Feed("opra", "/v1beta1/opra", FeedFamily.OPTIONS),
    Feed("trade_updates", "/stream", FeedFamily.TRADING),
)
BY_NAME: dict[FeedName, Feed] = {feed.name: feed for feed in FEEDS}


def subscribable(feed: Feed) -> tuple[str, ...]:
    """The channels a client names in `subscribe` on `feed` (Alpaca's `subscription` lists
    corrections and cancelErrors too, following trades)."""
    return tuple(channel for channel in feed.channels if channel not in FOLLOW_TRADES)


def upstream_url(feed: Feed, market_data_url: str, trading_url: str) -> str:
    """The websocket URL of `feed` at Alpaca (or at the overridden hosts)."""
    base = trading_url if feed.family is FeedFamily.TRADING else market_data_url
    return as_websocket_url(base) + feed.path


def as_websocket_url(base: str) -> str:
    """`https://host` -> `wss://host`, `http://host` -> `ws://host`; ws(s) URLs unchanged."""
    base = base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://")
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://")
    return base


__all__ = ["FEED_NAMES", "WILDCARD", "Feed", "FeedFamily", "FeedName"]
