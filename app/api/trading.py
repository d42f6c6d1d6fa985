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
from app.models.numbers import NumberText
from app.models.trading import OrderRequest
from app.symbols import option_contract, stock_symbol

router = APIRouter(prefix="/v1", tags=["trading"], responses=PROBLEM_RESPONSES)

_ORDER_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# Printable ASCII without spaces: the key is echoed into logs and Alpaca's client_order_id.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
REPLAYED_HEADER = "Idempotent-Replayed"
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


def _refused(answer: Refusal, refusal: ErrorCode) -> GatewayError:
    """Alpaca's refusal of a request about one order: no such order, or `refusal`."""
    code = ErrorCode.ORDER_NOT_FOUND if answer.status == 404 else refusal
    return GatewayError(
        code,
        f"Alpaca: {answer.message}",
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
        raise _refused(answer, ErrorCode.ORDER_NOT_FOUND)
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
    response = _json(placed.order)
    # As Stripe and the IETF idempotency draft do: a bot can tell a replayed answer (an earlier
    # request with this key placed the order) from the order its own request placed.
    response.headers[REPLAYED_HEADER] = "true" if placed.replayed else "false"
    return response


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
        # Alpaca answers 422 "order is not cancelable" for an order that is already final.
        raise _refused(refusal, ErrorCode.ORDER_NOT_CANCELABLE)
    return Response(status_code=204)


def _require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise GatewayError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"Send the order as application/json (got {media_type[:64] or 'no Content-Type'})",
        )


async def _order_body(request: Request) -> OrderRequest:
    _require_json(request)
    try:
        # Numbers as their own text: a float could round a long quantity or price.
        raw = json.loads(await request.body(), parse_float=NumberText)
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested too deep
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
