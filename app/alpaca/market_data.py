"""Alpaca's stock market-data API: paths, parameters and pure parsers into our models.

The gateway uses the multi-symbol endpoints for single symbols too: one parser per kind, and the
symbol travels in a query parameter, never in a URL path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args

from app.alpaca import wire
from app.alpaca.transport import AlpacaTransport
from app.metrics import UpstreamOutcome
from app.models.market_data import BarValue, QuoteValue, SnapshotValue, TradeValue

LATEST_QUOTES = ("v2", "stocks", "quotes", "latest")
LATEST_TRADES = ("v2", "stocks", "trades", "latest")
SNAPSHOTS = ("v2", "stocks", "snapshots")
BARS = ("v2", "stocks", "bars")

MAX_BARS_PER_PAGE = 10_000
# A snapshot's observed members, stock or option; the option one adds greeks and IV (untimed).
SnapshotMember = Literal[
    "latest_trade", "latest_quote", "minute_bar", "daily_bar", "prev_daily_bar"
]
SNAPSHOT_MEMBERS: tuple[SnapshotMember, ...] = get_args(SnapshotMember)
Found = TypeVar("Found", bound=Mapping[str, Any])


def parse_quote(symbol: str, raw: Any) -> QuoteValue:
    """Alpaca stock quote -> QuoteData. A side with price 0 or absent is None as a whole."""
    what = f"quote for {symbol}"
    q = wire.mapping(raw, what)
    observed_at = wire.timestamp(q, "t", what)
    bid_price = wire.optional_number(q, "bp", what)
    ask_price = wire.optional_number(q, "ap", what)
    # 0 is Alpaca's "no active bid/ask": the side does not exist, so none of its fields do.
    has_bid = bid_price is not None and bid_price != 0
    has_ask = ask_price is not None and ask_price != 0
    return QuoteValue(
        symbol=symbol,
        bid_price=bid_price if has_bid else None,
        bid_size=wire.optional_number(q, "bs", what) if has_bid else None,
        bid_exchange=wire.optional_text(q, "bx", what) if has_bid else None,
        ask_price=ask_price if has_ask else None,
        ask_size=wire.optional_number(q, "as", what) if has_ask else None,
        ask_exchange=wire.optional_text(q, "ax", what) if has_ask else None,
        conditions=wire.text_list(q, "c", what),
        tape=wire.optional_text(q, "z", what),
        timestamp=observed_at,
    )


def quote_is_empty(quote: QuoteValue) -> bool:
    """Neither side: Alpaca has no quote to give, whatever else the object carries."""
    return quote["bid_price"] is None and quote["ask_price"] is None


def parse_trade(symbol: str, raw: Any) -> TradeValue:
    what = f"trade for {symbol}"
    t = wire.mapping(raw, what)
    return TradeValue(
        symbol=symbol,
        price=wire.number(t, "p", what),
        size=wire.number(t, "s", what),
        exchange=wire.optional_text(t, "x", what),
        id=wire.optional_integer(t, "i", what),
        conditions=wire.text_list(t, "c", what),
        tape=wire.optional_text(t, "z", what),
        update=wire.optional_text(t, "u", what),
        timestamp=wire.timestamp(t, "t", what),
    )


def parse_bar(symbol: str, raw: Any) -> BarValue:
    what = f"bar for {symbol}"
    b = wire.mapping(raw, what)
    return BarValue(
        timestamp=wire.timestamp(b, "t", what),
        open=wire.number(b, "o", what),
        high=wire.number(b, "h", what),
        low=wire.number(b, "l", what),
        close=wire.number(b, "c", what),
        volume=wire.number(b, "v", what),
        trade_count=wire.optional_integer(b, "n", what),
        vwap=wire.optional_number(b, "vw", what),
    )


def _symbol_map(payload: Any, member: str | None, what: str) -> Mapping[str, Any]:
    root = wire.mapping(payload, what)
    if member is None:
        return root
    inner = root.get(member)
    if inner is None:
        # Alpaca sends `{"quotes": {}}` for no data; a missing member is a different schema.
        if member not in root:
            raise wire.bad_response(f"{what}: `{member}` is missing")
        return {}
    return wire.mapping(inner, f"{what}.{member}")


def parse_latest_quotes(payload: Any, symbols: Sequence[str]) -> dict[str, QuoteValue | None]:
    """`{"quotes": {SYM: quote}}` -> quote or None (omitted, null, or with neither side: Alpaca
    has no quote for it)."""
    quotes = _symbol_map(payload, "quotes", "latest quotes")
    found = {s: None if quotes.get(s) is None else parse_quote(s, quotes[s]) for s in symbols}
    return {s: None if q is None or quote_is_empty(q) else q for s, q in found.items()}


def parse_latest_trades(payload: Any, symbols: Sequence[str]) -> dict[str, TradeValue | None]:
    trades = _symbol_map(payload, "trades", "latest trades")
    return {s: None if trades.get(s) is None else parse_trade(s, trades[s]) for s in symbols}


def parse_snapshot(symbol: str, raw: Any) -> SnapshotValue | None:
    what = f"snapshot for {symbol}"
    s = wire.mapping(raw, what)

    def bar(key: str) -> BarValue | None:
        return None if s.get(key) is None else parse_bar(symbol, s[key])

    quote = None if s.get("latestQuote") is None else parse_quote(symbol, s["latestQuote"])
    snapshot = SnapshotValue(
        symbol=symbol,
        latest_trade=None
        if s.get("latestTrade") is None
        else parse_trade(symbol, s["latestTrade"]),
        latest_quote=None if quote is None or quote_is_empty(quote) else quote,
        minute_bar=bar("minuteBar"),
        daily_bar=bar("dailyBar"),
        prev_daily_bar=bar("prevDailyBar"),
    )
    if all(snapshot[m] is None for m in SNAPSHOT_MEMBERS):
        return None
    return snapshot


def parse_snapshots(payload: Any, symbols: Sequence[str]) -> dict[str, SnapshotValue | None]:
    """Stock snapshots are the root map `{SYM: snapshot}`: no wrapper key, unlike options."""
    root = _symbol_map(payload, None, "snapshots")
    return {s: None if root.get(s) is None else parse_snapshot(s, root[s]) for s in symbols}


def parse_bars_page(payload: Any, symbol: str) -> tuple[list[BarValue], str | None]:
    """One page of `{"bars": {SYM: [bar]}, "next_page_token": str|null}`."""
    bars = _symbol_map(payload, "bars", "bars")
    root = wire.mapping(payload, "bars")
    token = root.get("next_page_token")
    if token is not None and not isinstance(token, str):
        raise wire.bad_response("bars: `next_page_token` is not a string")
    raw_bars = bars.get(symbol)
    if raw_bars is None:
        return [], token or None
    if not isinstance(raw_bars, list):
        raise wire.bad_response(f"bars for {symbol}: expected a list")
    return [parse_bar(symbol, b) for b in raw_bars], token or None


def _no_data_if_empty(found: Mapping[str, Any]) -> UpstreamOutcome:
    """A call answered without a single value for what was asked is `no_data`, not `ok`."""
    return "ok" if any(value is not None for value in found.values()) else "no_data"


class StockDataClient:
    """The stock endpoints the gateway uses, one upstream call per method call."""

    def __init__(self, transport: AlpacaTransport) -> None:
        self.transport = transport

    async def latest_quotes(
        self, symbols: Sequence[str], feed: str
    ) -> dict[str, QuoteValue | None]:
        return await self._latest(
            LATEST_QUOTES, "quotes_latest", symbols, feed, parse_latest_quotes
        )

    async def latest_trades(
        self, symbols: Sequence[str], feed: str
    ) -> dict[str, TradeValue | None]:
        return await self._latest(
            LATEST_TRADES, "trades_latest", symbols, feed, parse_latest_trades
        )

    async def snapshots(self, symbols: Sequence[str], feed: str) -> dict[str, SnapshotValue | None]:
        return await self._latest(SNAPSHOTS, "snapshots", symbols, feed, parse_snapshots)

    async def _latest(
        self,
        path: tuple[str, ...],
        endpoint: str,
        symbols: Sequence[str],
        feed: str,
        parse: Callable[[Any, Sequence[str]], Found],
    ) -> Found:
        # `feed` is always explicit: without it Alpaca picks one by the account's plan.
        return await self.transport.call(
            self.transport.url(*path),
            {"symbols": ",".join(symbols), "feed": feed},
            endpoint=endpoint,
            parse=lambda reply: parse(reply.payload, symbols),
            outcome=_no_data_if_empty,
        )

    async def bars(
        self,
        symbol: str,
        params: Mapping[str, str],
        limit: int,
        max_pages: int,
        page_token: str | None = None,
    ) -> tuple[list[BarValue], str | None]:
        """Follow `next_page_token` until `limit` bars, the last page, or `max_pages` calls.

        Returns the bars and Alpaca's token for what was not fetched (None when complete), so a
        client can continue instead of mistaking a capped series for the whole range.
        """
        collected: list[BarValue] = []
        token = page_token
        for _ in range(max_pages):
            query = {
                **params,
                "symbols": symbol,
                "limit": str(min(MAX_BARS_PER_PAGE, limit - len(collected))),
            }
            if token:
                query["page_token"] = token
            page, token = await self.transport.call(
                self.transport.url(*BARS),
                query,
                endpoint="bars",
                parse=lambda reply: parse_bars_page(reply.payload, symbol),
                outcome=lambda answer: "ok" if answer[0] else "no_data",
            )
            collected.extend(page)
            if token is None or len(collected) >= limit:
                break
        return collected, token
