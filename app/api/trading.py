"""Trading routes: account, positions, orders. Never cached beyond a request; Alpaca's decimal
strings pass through as strings. Every route needs a key with the trading scope."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.alpaca.trading import Refusal
from app.api import render
from app.api.auth import authorize
from app.api.middleware import current_request_id
from app.api.params import Param, documented, gateway_of, invalid
from app.api.problems import PROBLEM_RESPONSES
from app.errors import ErrorCode, GatewayError
from app.keys import Scope
from app.models.trading import OrderRequest
from app.symbols import option_contract, stock_symbol

router = APIRouter(prefix="/v1", tags=["trading"], responses=PROBLEM_RESPONSES)

_ORDER_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Printable ASCII without spaces: the key is echoed into logs and Alpaca's client_order_id.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
ORDER_ID = Param("order_id", "Alpaca order id (UUID)", {"type": "string", "format": "uuid"}, "path")
STATUS = Param(
    "status", "open, closed or all", {"type": "string", "enum": ["open", "closed", "all"]}
)
LIMIT = Param(
    "limit", "At most this many orders", {"type": "integer", "minimum": 1, "maximum": 500}
)
DIRECTION = Param("direction", "asc or desc", {"type": "string", "enum": ["asc", "desc"]})
SYMBOLS = Param("symbols", "Comma-separated symbols", {"type": "string", "maxLength": 2048})
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1-128 printable characters; becomes Alpaca's client_order_id",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}
ORDER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": OrderRequest.model_json_schema()}},
    }
}


def _order_id(request: Request) -> str:
    order_id = request.path_params["order_id"]
    if not _ORDER_ID.fullmatch(order_id):
        raise invalid("order_id", "must be an Alpaca order id (UUID)")
    return str(order_id)


def _json(body: Any) -> Response:
    return render.json_response(body)


def _refused(answer: Refusal, what: str) -> GatewayError:
    code = ErrorCode.ROUTE_NOT_FOUND if answer.status == 404 else ErrorCode.ORDER_REJECTED
    return GatewayError(
        code,
        f"{what}: {answer.message}",
        upstream="trading",
        extensions={"alpaca_code": answer.code, "upstream_status": answer.status},
    )


@router.get("/account", summary="Account (decimal strings as Alpaca sent them)")
async def account(request: Request) -> Response:
    await authorize(request, Scope.TRADING_READ)
    return _json(await gateway_of(request).trading.account())


@router.get("/positions", summary="Open positions")
async def positions(request: Request) -> Response:
    await authorize(request, Scope.TRADING_READ)
    return _json(await gateway_of(request).trading.positions())


@router.get(
    "/orders", summary="Orders", openapi_extra=documented(STATUS, LIMIT, DIRECTION, SYMBOLS)
)
async def orders(request: Request) -> Response:
    await authorize(request, Scope.TRADING_READ)
    query = {p.name: v for p in (STATUS, DIRECTION) if (v := p.text(request)) is not None}
    if (limit := LIMIT.integer(request)) is not None:
        query["limit"] = str(limit)
    if (symbols := SYMBOLS.text(request)) is not None:
        query["symbols"] = ",".join(_order_symbol(s) for s in symbols.split(",") if s.strip())
    return _json(await gateway_of(request).trading.orders(query))


@router.get("/orders/{order_id}", summary="One order", openapi_extra=documented(ORDER_ID))
async def order(request: Request) -> Response:
    await authorize(request, Scope.TRADING_READ)
    answer = await gateway_of(request).trading.order(_order_id(request))
    if isinstance(answer, Refusal):
        raise _refused(answer, "Alpaca has no such order")
    return _json(answer)


@router.post(
    "/orders",
    summary="Submit an order (Idempotency-Key required; never sent twice)",
    openapi_extra={"parameters": [IDEMPOTENCY_KEY], **ORDER_BODY},
)
async def submit_order(request: Request) -> Response:
    key_row = await authorize(request, Scope.TRADING_WRITE)
    key = request.headers.get("idempotency-key")
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid("Idempotency-Key", "header required: 1-128 printable characters")
    order_request = await _order_body(request)
    if order_request.client_order_id not in (None, key):
        raise invalid("client_order_id", "differs from the Idempotency-Key header")
    gateway = gateway_of(request)
    placed = await gateway.orders.submit(
        key,
        order_request,
        request_id=current_request_id(),
        api_key_id=None if key_row is None else key_row.id,
    )
    return _json(placed)


@router.delete(
    "/orders/{order_id}",
    summary="Cancel an order (204 as Alpaca answers)",
    status_code=204,
    openapi_extra=documented(ORDER_ID),
)
async def cancel_order(request: Request) -> Response:
    await authorize(request, Scope.TRADING_WRITE)
    refusal = await gateway_of(request).trading.cancel(_order_id(request))
    if refusal is not None:
        raise _refused(refusal, "Alpaca did not cancel the order")
    return Response(status_code=204)


async def _order_body(request: Request) -> OrderRequest:
    try:
        raw = json.loads(await request.body())
    except ValueError as exc:
        raise invalid("body", "must be a JSON object") from exc
    if not isinstance(raw, dict):
        raise invalid("body", "must be a JSON object")
    try:
        order_request = OrderRequest.model_validate(raw)
    except ValidationError as exc:
        reasons = [
            {"name": ".".join(str(p) for p in e["loc"]) or "body", "reason": e["msg"]}
            for e in exc.errors()
        ]
        raise GatewayError(
            ErrorCode.VALIDATION_ERROR,
            "; ".join(f"{r['name']}: {r['reason']}" for r in reasons),
            extensions={"invalid_params": reasons},
        ) from exc
    symbol = _order_symbol(order_request.symbol)
    return order_request.model_copy(update={"symbol": symbol})


def _order_symbol(raw: str) -> str:
    """A stock symbol or an OCC option contract, checked before it goes anywhere."""
    try:
        return stock_symbol(raw)
    except GatewayError:
        return option_contract(raw)
