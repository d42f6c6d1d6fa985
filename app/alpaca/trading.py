"""Alpaca's trading API as far as market data needs it: assets (unknown vs no data) and clock."""

from __future__ import annotations

from typing import Any

from app.alpaca import wire
from app.alpaca.transport import NOT_FOUND, AlpacaTransport, Reply
from app.models.market_data import AssetData, ClockData

ASSET_NOT_FOUND_CODE = 40410000


def parse_asset(raw: Any) -> AssetData:
    what = "asset"
    a = wire.mapping(raw, what, "trading")
    return AssetData(
        symbol=wire.text(a, "symbol", what, "trading"),
        status=wire.text(a, "status", what, "trading"),
        tradable=wire.boolean(a, "tradable", what, "trading"),
        asset_class=wire.text(a, "class", what, "trading"),
    )


def parse_asset_reply(reply: Reply) -> AssetData | None:
    """404 from the asset endpoint means Alpaca does not know the symbol: None, not an error."""
    if reply.status == NOT_FOUND:
        # Only Alpaca's own not-found body counts; a bare 404 (a proxy, a wrong base URL) does not.
        body = reply.payload
        if isinstance(body, dict) and body.get("code") == ASSET_NOT_FOUND_CODE:
            return None
        raise wire.bad_response("asset: HTTP 404 without Alpaca's not-found body", "trading")
    return parse_asset(reply.payload)


def parse_clock(raw: Any) -> ClockData:
    what = "clock"
    c = wire.mapping(raw, what, "trading")
    return ClockData(
        timestamp=wire.timestamp(c, "timestamp", what, "trading"),
        is_open=wire.boolean(c, "is_open", what, "trading"),
        next_open=wire.timestamp(c, "next_open", what, "trading"),
        next_close=wire.timestamp(c, "next_close", what, "trading"),
    )


class TradingClient:
    def __init__(self, transport: AlpacaTransport) -> None:
        self.transport = transport

    async def asset(self, symbol: str) -> AssetData | None:
        return await self.transport.call(
            self.transport.url("v2", "assets", symbol),
            {},
            endpoint="asset",
            parse=parse_asset_reply,
            expect=frozenset({NOT_FOUND}),
        )

    async def clock(self) -> ClockData:
        return await self.transport.call(
            self.transport.url("v2", "clock"),
            {},
            endpoint="clock",
            parse=lambda reply: parse_clock(reply.payload),
        )
