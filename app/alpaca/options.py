"""Alpaca's options APIs: market data (`/v1beta1/options`, data host) and contracts
(`/v2/options/contracts`, trading host). Paths, parameters and pure parsers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.alpaca import wire
from app.alpaca.market_data import SNAPSHOT_MEMBERS, parse_bar
from app.alpaca.trading import ASSET_NOT_FOUND_CODE
from app.alpaca.transport import NOT_FOUND, AlpacaTransport, Reply
from app.models.options import Greeks, OptionQuoteValue, OptionSnapshotValue, OptionTradeValue

LATEST_QUOTES = ("v1beta1", "options", "quotes", "latest")
SNAPSHOTS = ("v1beta1", "options", "snapshots")
CONTRACTS = ("v2", "options", "contracts")
MAX_SNAPSHOTS_PER_PAGE = 1000
_CONTRACT_TEXT = (
    *("id", "symbol", "name", "status", "expiration_date"),
    *("underlying_symbol", "underlying_asset_id", "type", "style"),
)
_CONTRACT_DECIMALS = ("strike_price", "multiplier", "size", "open_interest", "close_price")
# alpaca-py's OptionContract has no `multiplier`, and Alpaca's answers may leave it out.
_CONTRACT_REQUIRED_DECIMALS = ("strike_price", "size")


def parse_option_quote(symbol: str, raw: Any) -> OptionQuoteValue:
    """Option quote (`c` is one string, no tape). A side at 0 or absent is None as a whole."""
    what = f"option quote for {symbol}"
    q = wire.mapping(raw, what, "options")
    observed_at = wire.timestamp(q, "t", what, "options")
    bid, ask = wire.optional_number(q, "bp", what), wire.optional_number(q, "ap", what)
    has_bid, has_ask = bid not in (None, 0), ask not in (None, 0)
    return OptionQuoteValue(
        symbol=symbol,
        bid_price=bid if has_bid else None,
        bid_size=wire.optional_number(q, "bs", what) if has_bid else None,
        bid_exchange=wire.optional_text(q, "bx", what, "options") if has_bid else None,
        ask_price=ask if has_ask else None,
        ask_size=wire.optional_number(q, "as", what) if has_ask else None,
        ask_exchange=wire.optional_text(q, "ax", what, "options") if has_ask else None,
        condition=wire.optional_text(q, "c", what, "options"),
        timestamp=observed_at,
    )


def option_quote_is_empty(quote: OptionQuoteValue) -> bool:
    return quote["bid_price"] is None and quote["ask_price"] is None


def parse_option_trade(symbol: str, raw: Any) -> OptionTradeValue:
    what = f"option trade for {symbol}"
    t = wire.mapping(raw, what, "options")
    return OptionTradeValue(
        symbol=symbol,
        price=wire.number(t, "p", what),
        size=wire.number(t, "s", what),
        exchange=wire.optional_text(t, "x", what, "options"),
        condition=wire.optional_text(t, "c", what, "options"),
        timestamp=wire.timestamp(t, "t", what, "options"),
    )


def parse_greeks(symbol: str, raw: Any) -> Greeks | None:
    if raw is None:
        return None
    what = f"greeks for {symbol}"
    g = wire.mapping(raw, what, "options")
    values = {
        k: wire.optional_signed_number(g, k, what)
        for k in ("delta", "gamma", "theta", "vega", "rho")
    }
    delta, gamma, theta, vega, rho = values.values()
    if delta is None or gamma is None or theta is None or vega is None or rho is None:
        # Alpaca sends all five or no `greeks` member; a partial set is not Alpaca's schema.
        missing = [k for k, v in values.items() if v is None]
        raise wire.bad_response(f"{what}: missing {', '.join(missing)}", "options")
    return Greeks(delta=delta, gamma=gamma, theta=theta, vega=vega, rho=rho)


def parse_option_snapshot(symbol: str, raw: Any) -> OptionSnapshotValue | None:
    what = f"option snapshot for {symbol}"
    s = wire.mapping(raw, what, "options")
    quote = None if s.get("latestQuote") is None else parse_option_quote(symbol, s["latestQuote"])
    snapshot = OptionSnapshotValue(
        symbol=symbol,
        latest_quote=None if quote is None or option_quote_is_empty(quote) else quote,
        latest_trade=None
        if s.get("latestTrade") is None
        else parse_option_trade(symbol, s["latestTrade"]),
        greeks=parse_greeks(symbol, s.get("greeks")),
        implied_volatility=wire.optional_number(s, "impliedVolatility", what),
        minute_bar=None if s.get("minuteBar") is None else parse_bar(symbol, s["minuteBar"]),
        daily_bar=None if s.get("dailyBar") is None else parse_bar(symbol, s["dailyBar"]),
        prev_daily_bar=None
        if s.get("prevDailyBar") is None
        else parse_bar(symbol, s["prevDailyBar"]),
    )
    if all(snapshot[m] is None for m in SNAPSHOT_MEMBERS):
        # Greeks without any observed value have no time to carry: not a usable snapshot.
        return None
    return snapshot


def parse_option_quotes(payload: Any, symbols: Sequence[str]) -> dict[str, OptionQuoteValue | None]:
    root = wire.mapping(payload, "option quotes", "options")
    if "quotes" not in root:
        raise wire.bad_response("option quotes: `quotes` is missing", "options")
    raw = root["quotes"]
    quotes = {} if raw is None else wire.mapping(raw, "option quotes.quotes", "options")
    found = {
        s: None if quotes.get(s) is None else parse_option_quote(s, quotes[s]) for s in symbols
    }
    # A quote with neither side is no quote.
    return {s: None if q is None or option_quote_is_empty(q) else q for s, q in found.items()}


def parse_snapshots_page(payload: Any) -> tuple[dict[str, OptionSnapshotValue], str | None]:
    """`{"snapshots": {OCC: snapshot}, "next_page_token"}` (wrapped, unlike stock snapshots)."""
    root = wire.mapping(payload, "option snapshots", "options")
    if "snapshots" not in root:
        raise wire.bad_response("option snapshots: `snapshots` is missing", "options")
    raw = root["snapshots"]
    raw = {} if raw is None else wire.mapping(raw, "option snapshots.snapshots", "options")
    token = root.get("next_page_token")
    if token is not None and not isinstance(token, str):
        raise wire.bad_response("option snapshots: `next_page_token` is not a string", "options")
    parsed = {
        occ: parse_option_snapshot(occ, snap) for occ, snap in raw.items() if snap is not None
    }
    return {occ: snap for occ, snap in parsed.items() if snap is not None}, token or None


def parse_contract(raw: Any) -> dict[str, Any]:
    """An option contract, checked field by field and passed on as Alpaca sent it; its decimals
    (strike, size, multiplier...) as the exact text Alpaca wrote, string or number."""
    what = "option contract"
    c = wire.mapping(raw, what, "trading")
    for key in _CONTRACT_TEXT:
        wire.text(c, key, what, "trading")
    wire.boolean(c, "tradable", what, "trading")
    for key in _CONTRACT_REQUIRED_DECIMALS:
        if c.get(key) is None:
            raise wire.bad_response(f"{what}: `{key}` is missing", "trading")
    return wire.with_decimals(c, _CONTRACT_DECIMALS, what)


def parse_contracts_page(payload: Any) -> tuple[list[dict[str, Any]], str | None]:
    root = wire.mapping(payload, "option contracts", "trading")
    contracts = root.get("option_contracts")
    if not isinstance(contracts, list):
        raise wire.bad_response("option contracts: `option_contracts` is not a list", "trading")
    token = root.get("next_page_token")
    if token is not None and not isinstance(token, str):
        raise wire.bad_response("option contracts: `next_page_token` is not a string", "trading")
    return [parse_contract(c) for c in contracts], token or None


def parse_contract_reply(reply: Reply) -> dict[str, Any] | None:
    if reply.status == NOT_FOUND:
        body = reply.payload
        if isinstance(body, dict) and body.get("code") == ASSET_NOT_FOUND_CODE:
            return None
        raise wire.bad_response("option contract: HTTP 404 without Alpaca's body", "trading")
    return parse_contract(reply.payload)


class OptionDataClient:
    """Options market data: one upstream call per method call, except the chain walk."""

    def __init__(self, transport: AlpacaTransport) -> None:
        self.transport = transport

    async def latest_quotes(
        self, symbols: Sequence[str], feed: str
    ) -> dict[str, OptionQuoteValue | None]:
        return await self.transport.call(
            self.transport.url(*LATEST_QUOTES),
            {"symbols": ",".join(symbols), "feed": feed},
            endpoint="option_quotes_latest",
            parse=lambda reply: parse_option_quotes(reply.payload, symbols),
            outcome=lambda found: "ok" if any(found.values()) else "no_data",
        )

    async def chain(
        self,
        underlying: str,
        params: Mapping[str, str],
        max_pages: int,
        page_token: str | None = None,
    ) -> tuple[dict[str, OptionSnapshotValue], str | None]:
        """Follow the chain's pages up to `max_pages`; return Alpaca's token if more remain."""
        collected: dict[str, OptionSnapshotValue] = {}
        token = page_token
        for _ in range(max_pages):
            query = {**params, "limit": str(MAX_SNAPSHOTS_PER_PAGE)}
            if token:
                query["page_token"] = token
            page, token = await self.transport.call(
                self.transport.url(*SNAPSHOTS, underlying),
                query,
                endpoint="option_chain",
                parse=lambda reply: parse_snapshots_page(reply.payload),
                outcome=lambda page: "ok" if page[0] else "no_data",
            )
            collected.update(page)
            if token is None:
                break
        return collected, token


class OptionContractsClient:
    """Option contracts live on the trading host, behind the trading breaker."""

    def __init__(self, transport: AlpacaTransport) -> None:
        self.transport = transport

    async def contracts(self, params: Mapping[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        return await self.transport.call(
            self.transport.url(*CONTRACTS),
            params,
            endpoint="option_contracts",
            parse=lambda reply: parse_contracts_page(reply.payload),
        )

    async def contract(self, symbol: str) -> dict[str, Any] | None:
        return await self.transport.call(
            self.transport.url(*CONTRACTS, symbol),
            {},
            endpoint="option_contract",
            parse=parse_contract_reply,
            expect=frozenset({NOT_FOUND}),
            outcome=lambda contract: "ok" if contract is not None else "not_found",
        )
