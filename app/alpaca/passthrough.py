"""Alpaca's own answers, checked and kept as Alpaca wrote them: what the Alpaca-compatible face
passes on (`/alpaca/...`, for bots that use alpaca-py unchanged).

Every object is checked by the same strict parser the /v1 routes use (a broken payload is
UPSTREAM_BAD_RESPONSE here too), but what is kept is Alpaca's object itself: a `bp` of 0 stays 0,
field names stay Alpaca's one-letter keys, members we do not model stay. Nothing is added.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.alpaca import wire
from app.alpaca.market_data import parse_bar, parse_quote, parse_snapshot, parse_trade
from app.alpaca.options import (
    parse_option_quote,
    parse_option_snapshot,
    parse_option_trade,
    parse_snapshots_page,
)
from app.alpaca.transport import AlpacaTransport, Reply
from app.metrics import UpstreamOutcome

Wire = dict[str, Any]
Check = Callable[[str, Any], object]  # (symbol, Alpaca's object) -> parsed, or raises


@dataclass(frozen=True, slots=True)
class LatestEndpoint:
    """One of Alpaca's multi-symbol "latest" endpoints: `{member: {SYM: object}}` (a root map
    when `member` is None: stock snapshots)."""

    path: tuple[str, ...]
    member: str | None
    endpoint: str
    check: Check


STOCK_QUOTES = LatestEndpoint(
    ("v2", "stocks", "quotes", "latest"), "quotes", "quotes_latest", parse_quote
)
STOCK_TRADES = LatestEndpoint(
    ("v2", "stocks", "trades", "latest"), "trades", "trades_latest", parse_trade
)
STOCK_BARS = LatestEndpoint(("v2", "stocks", "bars", "latest"), "bars", "bars_latest", parse_bar)
STOCK_SNAPSHOTS = LatestEndpoint(("v2", "stocks", "snapshots"), None, "snapshots", parse_snapshot)
OPTION_QUOTES = LatestEndpoint(
    ("v1beta1", "options", "quotes", "latest"), "quotes", "option_quotes_latest", parse_option_quote
)
OPTION_TRADES = LatestEndpoint(
    ("v1beta1", "options", "trades", "latest"), "trades", "option_trades_latest", parse_option_trade
)
OPTION_SNAPSHOTS = LatestEndpoint(
    ("v1beta1", "options", "snapshots"), "snapshots", "option_snapshots", parse_option_snapshot
)


def latest_objects(
    payload: Any, endpoint: LatestEndpoint, symbols: Sequence[str]
) -> dict[str, Wire | None]:
    """Each asked symbol's object as Alpaca sent it, checked; None where Alpaca sent none."""
    what = f"latest {endpoint.member or 'snapshots'}"
    root = wire.mapping(payload, what)
    if endpoint.member is None:
        found: Mapping[str, Any] = root
    else:
        if endpoint.member not in root:
            raise wire.bad_response(f"{what}: `{endpoint.member}` is missing")
        inner = root[endpoint.member]
        found = {} if inner is None else wire.mapping(inner, f"{what}.{endpoint.member}")
    objects: dict[str, Wire | None] = {}
    for symbol in symbols:
        item = found.get(symbol)
        if item is not None:
            endpoint.check(symbol, item)
        objects[symbol] = item
    return objects


async def latest(
    transport: AlpacaTransport,
    endpoint: LatestEndpoint,
    symbols: Sequence[str],
    params: Mapping[str, str],
) -> dict[str, Wire | None]:
    """One upstream call for `symbols` (the face's query, already checked, in `params`)."""
    return await transport.call(
        transport.url(*endpoint.path),
        {**params, "symbols": ",".join(symbols)},
        endpoint=endpoint.endpoint,
        parse=lambda reply: latest_objects(reply.payload, endpoint, symbols),
        outcome=_found,
    )


def _found(objects: Mapping[str, Wire | None]) -> UpstreamOutcome:
    return "ok" if any(o is not None for o in objects.values()) else "no_data"


# --- pages (historical series, option chains): one page as Alpaca sent it ----------------------
def check_series_page(payload: Any, member: str) -> Wire:
    """`{member: {SYM: [object]}, "next_page_token"}` with every object checked."""
    check: Check = {"bars": parse_bar, "quotes": parse_quote, "trades": parse_trade}[member]
    root = wire.mapping(payload, member)
    series = root.get(member)
    series = {} if series is None else wire.mapping(series, f"{member} page")
    for symbol, items in series.items():
        if not isinstance(items, list):
            raise wire.bad_response(f"{member} for {symbol}: expected a list")
        for item in items:
            check(symbol, item)
    _token(root, member)
    return dict(root)


def check_chain_page(payload: Any) -> Wire:
    parse_snapshots_page(payload)  # raises on anything broken
    return dict(wire.mapping(payload, "option snapshots"))


def _token(root: Mapping[str, Any], what: str) -> None:
    token = root.get("next_page_token")
    if token is not None and not isinstance(token, str):
        raise wire.bad_response(f"{what}: `next_page_token` is not a string")


async def page(
    transport: AlpacaTransport,
    path: tuple[str, ...],
    params: Mapping[str, str],
    endpoint: str,
    check: Callable[[Any], Wire],
) -> Wire:
    return await transport.call(
        transport.url(*path),
        params,
        endpoint=endpoint,
        parse=lambda reply: check(reply.payload),
    )


# --- trading: the body itself, after the check ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Passed:
    """Alpaca's answer to pass on: its status and its body, byte for byte."""

    status: int
    body: bytes


def passed(check: Callable[[Any], object]) -> Callable[[Reply], Passed]:
    """A parse step that checks Alpaca's JSON and keeps the bytes it came in."""

    def parse(reply: Reply) -> Passed:
        if 200 <= reply.status < 300 and reply.raw:
            check(reply.payload)
        return Passed(reply.status, reply.raw)

    return parse
