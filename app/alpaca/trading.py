"""Alpaca's trading API as far as market data needs it: assets (unknown vs no data) and clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger

from app.alpaca import wire
from app.alpaca.transport import NOT_FOUND, AlpacaTransport, Reply
from app.errors import GatewayError
from app.models.market_data import AssetValue, ClockValue

ASSET_NOT_FOUND_CODE = 40410000


def parse_asset(raw: Any) -> AssetValue:
    what = "asset"
    a = wire.mapping(raw, what, "trading")
    return AssetValue(
        symbol=wire.text(a, "symbol", what, "trading"),
        status=wire.text(a, "status", what, "trading"),
        tradable=wire.boolean(a, "tradable", what, "trading"),
        asset_class=wire.text(a, "class", what, "trading"),
    )


def parse_asset_reply(reply: Reply) -> AssetValue | None:
    """404 from the asset endpoint means Alpaca does not know the symbol: None, not an error."""
    if reply.status == NOT_FOUND:
        # Only Alpaca's own not-found body counts; a bare 404 (a proxy, a wrong base URL) does not.
        body = reply.payload
        if isinstance(body, dict) and body.get("code") == ASSET_NOT_FOUND_CODE:
            return None
        raise wire.bad_response("asset: HTTP 404 without Alpaca's not-found body", "trading")
    return parse_asset(reply.payload)


def parse_clock(raw: Any) -> ClockValue:
    what = "clock"
    c = wire.mapping(raw, what, "trading")
    return ClockValue(
        timestamp=wire.timestamp(c, "timestamp", what, "trading"),
        is_open=wire.boolean(c, "is_open", what, "trading"),
        next_open=wire.timestamp(c, "next_open", what, "trading"),
        next_close=wire.timestamp(c, "next_close", what, "trading"),
    )


class TradingClient:
    def __init__(self, transport: AlpacaTransport) -> None:
        self.transport = transport

    async def asset(self, symbol: str) -> AssetValue | None:
        return await self.transport.call(
            self.transport.url("v2", "assets", symbol),
            {},
            endpoint="asset",
            parse=parse_asset_reply,
            expect=frozenset({NOT_FOUND}),
            outcome=lambda asset: "ok" if asset is not None else "not_found",
        )

    async def clock(self) -> ClockValue:
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
ORDER_NOT_FOUND_CODE = 40410000  # Alpaca's one not-found code, for orders as for assets
# What alpaca-py's models require and we rely on; everything else may be absent or null (an
# mleg order leaves symbol, side and type out, or sends them as "").
_ORDER_TEXT = ("id", "client_order_id", "status", "time_in_force")
_ORDER_OPTIONAL_TEXT = ("symbol", "side", "type", "order_type", "order_class")
ORDER_DECIMALS = (
    *("qty", "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price"),
    *("trail_price", "trail_percent", "hwm", "ratio_qty"),
)
ACCOUNT_DECIMALS = (
    *("cash", "equity", "last_equity", "buying_power", "regt_buying_power"),
    *("daytrading_buying_power", "non_marginable_buying_power", "options_buying_power"),
    *("portfolio_value", "long_market_value", "short_market_value", "accrued_fees"),
    *("pending_transfer_in", "pending_transfer_out", "initial_margin", "maintenance_margin"),
    *("last_maintenance_margin", "sma", "multiplier"),
)
POSITION_DECIMALS = (
    *("qty", "qty_available", "avg_entry_price", "market_value", "cost_basis"),
    *("unrealized_pl", "unrealized_plpc", "unrealized_intraday_pl", "unrealized_intraday_plpc"),
    *("current_price", "lastday_price", "change_today", "swap_rate", "avg_entry_swap_rate"),
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Alpaca refused a trading request about the request itself (403/404/422), body kept."""

    status: int
    code: int | None
    message: str


def parse_account(raw: Any) -> dict[str, Any]:
    """The account as Alpaca returned it; its decimals as the exact text Alpaca wrote."""
    what = "account"
    a = wire.mapping(raw, what, "trading")
    wire.text(a, "id", what, "trading")
    wire.text(a, "status", what, "trading")
    return wire.with_decimals(a, ACCOUNT_DECIMALS, what)


def parse_order(raw: Any) -> dict[str, Any]:
    """An order as Alpaca returned it; its decimals as the exact text Alpaca wrote, whether it
    wrote a string (`"400.10"`) or a number (`400.10`). Legs are orders too."""
    what = "order"
    o = wire.mapping(raw, what, "trading")
    for key in _ORDER_TEXT:
        wire.text(o, key, what, "trading")
    for key in _ORDER_OPTIONAL_TEXT:
        wire.optional_text(o, key, what, "trading")
    legs = o.get("legs")
    if legs is None:
        return wire.with_decimals(o, ORDER_DECIMALS, what)
    if not isinstance(legs, list):
        raise wire.bad_response(f"{what}: `legs` is not a list", "trading")
    order = wire.with_decimals({**o, "legs": None}, ORDER_DECIMALS, what)  # legs keep their place
    order["legs"] = [parse_order(leg) for leg in legs]
    return order


def parse_placed_order(raw: Any) -> dict[str, Any]:
    """The answer to an accepted submit (2xx): the order, even if other members break the schema.

    Alpaca has placed the order by now. Refusing its answer would tell the client "unknown" and
    invite a second order under a new key, so only the order id must be readable.
    """
    try:
        return parse_order(raw)
    except GatewayError as exc:
        if not (isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]):
            raise
        logger.bind(upstream="trading", order_id=raw["id"]).warning(
            "order {} accepted by Alpaca; its answer breaks the schema: {}", raw["id"], exc.detail
        )
        return _as_sent(raw)


def _as_sent(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An order answer that breaks the schema, passed on all the same: its readable decimals as
    their exact text, as `parse_order` gives them; everything else as Alpaca sent it."""
    result: dict[str, Any] = {}
    for key, item in raw.items():
        decimal = _readable_decimal(raw, key) if key in ORDER_DECIMALS else None
        result[key] = decimal if decimal is not None else wire.plain_numbers(item, lenient=True)
    return result


def _readable_decimal(raw: Mapping[str, Any], key: str) -> str | None:
    try:
        return wire.decimal_text(raw, key, "order")
    except GatewayError:
        return None  # not a decimal: the caller keeps it as sent


def parse_position(raw: Any) -> dict[str, Any]:
    what = "position"
    p = wire.mapping(raw, what, "trading")
    wire.text(p, "symbol", what, "trading")
    return wire.with_decimals(p, POSITION_DECIMALS, what)


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


def order_refusal(reply: Reply) -> Refusal:
    """Alpaca's refusal of a request about one order. A 404 is Alpaca's "no such order" only
    with its own not-found body; a bare one (a proxy, a wrong base URL) says nothing of the order
    and must never be read as "not found"."""
    answer = refusal(reply)
    if answer.status == NOT_FOUND and answer.code != ORDER_NOT_FOUND_CODE:
        raise wire.bad_response("order: HTTP 404 without Alpaca's not-found body", "trading")
    return answer


def order_or_refusal(reply: Reply) -> dict[str, Any] | Refusal:
    return parse_order(reply.payload) if reply.status == 200 else order_refusal(reply)


def placed_or_refusal(reply: Reply) -> dict[str, Any] | Refusal:
    return parse_placed_order(reply.payload) if 200 <= reply.status < 300 else refusal(reply)


def cancel_result(reply: Reply) -> Refusal | None:
    return None if reply.status == 204 else order_refusal(reply)


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
            parse=placed_or_refusal,
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
