"""Alpaca's trading API as far as market data needs it: assets (unknown vs no data) and clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
            outcome=lambda asset: "ok" if asset is not None else "not_found",
        )

    async def clock(self) -> ClockData:
        return await self.transport.call(
            self.transport.url("v2", "clock"),
            {},
            endpoint="clock",
            parse=lambda reply: parse_clock(reply.payload),
        )


# --- account, positions and orders -------------------------------------------------------------
ORDERS = ("v2", "orders")
BY_CLIENT_ORDER_ID = ("v2", "orders:by_client_order_id")  # the colon is literal in Alpaca's path
DUPLICATE_CLIENT_ORDER_ID = 40010001
_ORDER_TEXT = ("id", "client_order_id", "symbol", "status", "side", "type", "time_in_force")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Alpaca refused a trading request about the request itself (403/404/422), body kept."""

    status: int
    code: int | None
    message: str


def parse_account(raw: Any) -> dict[str, Any]:
    what = "account"
    a = wire.mapping(raw, what, "trading")
    wire.text(a, "id", what, "trading")
    wire.text(a, "status", what, "trading")
    for key in ("cash", "equity", "buying_power", "portfolio_value"):
        wire.decimal_text(a, key, what)
    return dict(a)


def parse_order(raw: Any) -> dict[str, Any]:
    """An order as Alpaca returned it; decimals stay strings (checked, never converted)."""
    what = "order"
    o = wire.mapping(raw, what, "trading")
    for key in _ORDER_TEXT:
        wire.text(o, key, what, "trading")
    for key in ("qty", "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price"):
        wire.decimal_text(o, key, what)
    return dict(o)


def parse_position(raw: Any) -> dict[str, Any]:
    what = "position"
    p = wire.mapping(raw, what, "trading")
    wire.text(p, "symbol", what, "trading")
    for key in ("qty", "avg_entry_price", "market_value", "cost_basis", "unrealized_pl"):
        wire.decimal_text(p, key, what)
    return dict(p)


def parse_list(raw: Any, item: Callable[[Any], dict[str, Any]], what: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise wire.bad_response(f"{what}: expected a list", "trading")
    return [item(entry) for entry in raw]


def refusal(reply: Reply) -> Refusal:
    body = reply.payload if isinstance(reply.payload, dict) else {}
    code = body.get("code")
    message = body.get("message")
    return Refusal(
        reply.status,
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else f"HTTP {reply.status}",
    )


def order_or_refusal(reply: Reply) -> dict[str, Any] | Refusal:
    return parse_order(reply.payload) if reply.status == 200 else refusal(reply)


def cancel_result(reply: Reply) -> Refusal | None:
    return None if reply.status == 204 else refusal(reply)


class TradingAccountClient:
    """Account, positions and orders: one call per method, never cached, never retried."""

    def __init__(self, transport: AlpacaTransport) -> None:
        self.transport = transport

    async def account(self) -> dict[str, Any]:
        return await self.transport.call(
            self.transport.url("v2", "account"),
            {},
            endpoint="account",
            parse=lambda reply: parse_account(reply.payload),
        )

    async def positions(self) -> list[dict[str, Any]]:
        return await self.transport.call(
            self.transport.url("v2", "positions"),
            {},
            endpoint="positions",
            parse=lambda reply: parse_list(reply.payload, parse_position, "positions"),
        )

    async def orders(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        return await self.transport.call(
            self.transport.url(*ORDERS),
            params,
            endpoint="orders",
            parse=lambda reply: parse_list(reply.payload, parse_order, "orders"),
        )

    async def order(self, order_id: str) -> dict[str, Any] | Refusal:
        return await self.transport.call(
            self.transport.url(*ORDERS, order_id),
            {},
            endpoint="order",
            parse=order_or_refusal,
            expect=frozenset({404}),
        )

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | Refusal:
        return await self.transport.call(
            self.transport.url(*BY_CLIENT_ORDER_ID),
            {"client_order_id": client_order_id},
            endpoint="order_by_client_id",
            parse=order_or_refusal,
            expect=frozenset({404}),
        )

    async def submit(self, body: Mapping[str, Any]) -> dict[str, Any] | Refusal:
        return await self.transport.call(
            self.transport.url(*ORDERS),
            {},
            endpoint="submit_order",
            parse=order_or_refusal,
            expect=frozenset({403, 422}),
            method="POST",
            json_body=body,
        )

    async def cancel(self, order_id: str) -> Refusal | None:
        return await self.transport.call(
            self.transport.url(*ORDERS, order_id),
            {},
            endpoint="cancel_order",
            parse=cancel_result,
            expect=frozenset({404, 422}),
            method="DELETE",
        )
