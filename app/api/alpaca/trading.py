"""Alpaca's trading paths, for `TradingClient(..., url_override=GW + "/alpaca")`.

Reads (account, positions, orders, assets, calendar, option contracts) are Alpaca's answers,
checked and passed on byte for byte, never cached; Alpaca's own refusals (404, 422, 403) pass on
as Alpaca sent them. An order goes through the same desk as `POST /v1/orders`: recorded before it
is sent, never sent twice. Its `client_order_id` is the idempotency key; without one the gateway
assigns one before anything is recorded, so nothing the gateway does can double it, and no answer
on this path is a 429 or 504 (the statuses alpaca-py re-sends a POST on).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.alpaca import passthrough
from app.alpaca.options import parse_contract, parse_contracts_page
from app.alpaca.trading import parse_account, parse_list, parse_order, parse_position
from app.alpaca.transport import AlpacaTransport
from app.api.alpaca import query as q
from app.api.alpaca.access import authorize_face
from app.api.alpaca.errors import PREFIX, face
from app.api.params import gateway_of, invalid
from app.api.trading import order_request_from
from app.errors import GatewayError, Upstream
from app.keys import Scope
from app.logs import current_request_id
from app.models.numbers import NumberText
from app.models.patterns import (
    DECIMAL_TEXT_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    ORDER_ID_PATTERN,
    regex,
)
from app.symbols import option_contract, stock_symbol

router = APIRouter(prefix=PREFIX, include_in_schema=False)
_REFUSALS = frozenset({403, 404, 422})
_KEY = regex(IDEMPOTENCY_KEY_PATTERN)
_UUID = regex(ORDER_ID_PATTERN)
_DECIMAL = regex(DECIMAL_TEXT_PATTERN)
_ORDERS = {
    "status": q.one_of("open", "closed", "all"),
    "limit": q.integer(1, 500),
    "after": q.moment,
    "until": q.moment,
    "direction": q.one_of("asc", "desc"),
    "nested": q.one_of("true", "false"),
    "side": q.one_of("buy", "sell"),
    "symbols": lambda name, value: ",".join(_symbol(s) for s in value.split(",")),
}
_ASSETS = {
    "status": q.one_of("active", "inactive"),
    "asset_class": q.one_of("us_equity", "us_option", "crypto"),
    "exchange": q.matching("^[A-Z]{1,12}$", 12),
    "attributes": q.matching("^[a-z_]{1,40}(?:,[a-z_]{1,40}){0,9}$", 400),
}
_CONTRACTS = {
    "underlying_symbols": q.stock_symbols,
    "status": q.one_of("active", "inactive"),
    "expiration_date": q.date,
    "expiration_date_gte": q.date,
    "expiration_date_lte": q.date,
    "root_symbol": q.root_symbol,
    "type": q.one_of("call", "put"),
    "style": q.one_of("american", "european"),
    "strike_price_gte": q.strike,
    "strike_price_lte": q.strike,
    "limit": q.integer(1, 10_000),
    "page_token": q.page_token,
    "ppind": q.one_of("true", "false"),
}


def _symbol(raw: str) -> str:
    """A stock symbol or an OCC contract, checked before it goes anywhere."""
    try:
        return stock_symbol(raw)
    except GatewayError:
        return option_contract(raw)


def _asset_ref(raw: str) -> str:
    """An asset or contract by symbol or id: a symbol, an OCC contract, or a UUID."""
    if _UUID.match(raw):
        return raw
    return _symbol(raw)


async def _forward(
    request: Request,
    upstream: Upstream,
    path: tuple[str, ...],
    query: Mapping[str, str],
    endpoint: str,
    check: Callable[[Any], object],
    *,
    method: str = "GET",
    body: Mapping[str, Any] | None = None,
) -> Response:
    transport: AlpacaTransport = gateway_of(request).transports[upstream]
    answer = await transport.call(
        transport.url(*path),
        query,
        endpoint=endpoint,
        parse=passthrough.passed(check),
        expect=_REFUSALS,
        method=method,
        json_body=body,
    )
    if not answer.body:
        return Response(status_code=answer.status)
    return Response(answer.body, status_code=answer.status, media_type="application/json")


def _ignore(_: Any) -> None:
    return None


@router.get("/v2/account")
@face
async def account(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_READ)
    return await _forward(request, "trading", ("v2", "account"), {}, "account", parse_account)


@router.get("/v2/positions")
@face
async def positions(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_READ)
    return await _forward(
        request,
        "trading",
        ("v2", "positions"),
        {},
        "positions",
        lambda body: parse_list(body, parse_position, "positions"),
    )


@router.get("/v2/positions/{symbol_or_asset_id}")
@face
async def position(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_READ)
    ref = _asset_ref(request.path_params["symbol_or_asset_id"])
    return await _forward(
        request, "trading", ("v2", "positions", ref), {}, "position", parse_position
    )


@router.get("/v2/orders")
@face
async def orders(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_READ)
    query = q.read_query(request, _ORDERS)
    return await _forward(
        request,
        "trading",
        ("v2", "orders"),
        query,
        "orders",
        lambda body: parse_list(body, parse_order, "orders"),
    )


@router.get("/v2/orders:by_client_order_id")
@face
async def order_by_client_order_id(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_READ)
    query = q.read_query(request, {"client_order_id": _client_order_id})
    q.required(query, "client_order_id")
    return await _forward(
        request, "trading", ("v2", "orders:by_client_order_id"), query, "order_by_client_id",
        parse_order,
    )  # fmt: skip


@router.get("/v2/orders/{order_id}")
@face
async def order(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_READ)
    order_id = q.order_id("order_id", request.path_params["order_id"])
    query = q.read_query(request, {"nested": q.one_of("true", "false")})
    return await _forward(
        request, "trading", ("v2", "orders", order_id), query, "order", parse_order
    )


@router.post("/v2/orders")
@face
async def submit_order(request: Request) -> Response:
    row = await authorize_face(request, Scope.TRADING_WRITE)
    order_request = await order_request_from(request)
    # The SDK's client_order_id is the idempotency key. Without one the gateway assigns one now,
    # before the order is recorded: a retry of this request would be a new order at Alpaca too,
    # which is why no answer here makes alpaca-py retry.
    key = order_request.client_order_id or "gw-" + os.urandom(12).hex()
    placed = await gateway_of(request).orders.submit(
        key, order_request, request_id=current_request_id(), api_key_id=row.id if row else None
    )
    return Response(
        json.dumps(placed.order, separators=(",", ":")).encode(),
        media_type="application/json",
        headers={"Idempotent-Replayed": "true" if placed.replayed else "false"},
    )


@router.patch("/v2/orders/{order_id}")
@face
async def replace_order(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_WRITE)
    order_id = q.order_id("order_id", request.path_params["order_id"])
    body = await _replacement(request)
    return await _forward(
        request, "trading", ("v2", "orders", order_id), {}, "replace_order", parse_order,
        method="PATCH", body=body,
    )  # fmt: skip


@router.delete("/v2/orders/{order_id}")
@face
async def cancel_order(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_WRITE)
    order_id = q.order_id("order_id", request.path_params["order_id"])
    return await _forward(
        request, "trading", ("v2", "orders", order_id), {}, "cancel_order", _ignore,
        method="DELETE",
    )  # fmt: skip


@router.delete("/v2/orders")
@face
async def cancel_orders(request: Request) -> Response:
    await authorize_face(request, Scope.TRADING_WRITE)
    return await _forward(
        request, "trading", ("v2", "orders"), {}, "cancel_orders", _ignore, method="DELETE"
    )


# --- reference data: the trading host's, through the reference breaker -------------------------
@router.get("/v2/clock")
@face
async def clock(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    return await _forward(request, "reference", ("v2", "clock"), {}, "clock", _ignore)


@router.get("/v2/calendar")
@face
async def calendar(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    allowed = {"start": q.date, "end": q.date, "date_type": q.one_of("TRADING", "SETTLEMENT")}
    query = q.read_query(request, allowed)
    return await _forward(request, "reference", ("v2", "calendar"), query, "calendar", _ignore)


@router.get("/v2/assets")
@face
async def assets(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    query = q.read_query(request, _ASSETS)
    return await _forward(request, "reference", ("v2", "assets"), query, "assets", _ignore)


@router.get("/v2/assets/{symbol_or_asset_id}")
@face
async def asset(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    ref = _asset_ref(request.path_params["symbol_or_asset_id"])
    return await _forward(request, "reference", ("v2", "assets", ref), {}, "asset", _ignore)


@router.get("/v2/options/contracts")
@face
async def option_contracts(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    query = q.read_query(request, _CONTRACTS)
    return await _forward(
        request, "reference", ("v2", "options", "contracts"), query, "option_contracts",
        parse_contracts_page,
    )  # fmt: skip


@router.get("/v2/options/contracts/{symbol_or_id}")
@face
async def option_contract_one(request: Request) -> Response:
    await authorize_face(request, Scope.DATA_READ)
    ref = _asset_ref(request.path_params["symbol_or_id"])
    return await _forward(
        request, "reference", ("v2", "options", "contracts", ref), {}, "option_contract",
        parse_contract,
    )  # fmt: skip


# --- bodies
def _client_order_id(name: str, value: str) -> str:
    if not _KEY.match(value):
        raise invalid(name, "must be 1-128 printable characters")
    return value


_REPLACEMENT_DECIMALS = ("qty", "limit_price", "stop_price", "trail")


async def _replacement(request: Request) -> dict[str, Any]:
    """A replace order's body (qty, time_in_force, prices, client_order_id), checked."""
    try:
        body = json.loads(await request.body(), parse_float=NumberText)
    except (ValueError, RecursionError) as exc:
        raise invalid("body", "must be a JSON object") from exc
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    checked: dict[str, Any] = {}
    for name, value in body.items():
        if name in _REPLACEMENT_DECIMALS:
            # A JSON number is kept as its own text (NumberText), never re-read as a float.
            text = (
                str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
            )
            if not _DECIMAL.match(text):
                raise invalid(name, "must be a positive decimal")
            checked[name] = text
        elif name == "time_in_force":
            checked[name] = q.one_of("day", "gtc", "opg", "cls", "ioc", "fok")(name, str(value))
        elif name == "client_order_id":
            checked[name] = _client_order_id(name, str(value))
        else:
            raise invalid(name, "is not a field of an order replacement")
    return checked
