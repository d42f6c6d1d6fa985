"""Trading routes: account, positions, orders. Never cached beyond a request; Alpaca's decimal
strings pass through as strings. Every route needs a key with the trading scope."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.alpaca.trading import Refusal
from app.api import render
from app.api.auth import authorize
from app.api.operation import UPSTREAM, Operation
from app.api.params import Param, gateway_of, invalid
from app.errors import ErrorCode, GatewayError
from app.keys import Scope
from app.logs import current_request_id
from app.models.numbers import NumberText
from app.models.patterns import IDEMPOTENCY_KEY_PATTERN, ORDER_ID_PATTERN
from app.models.trading import SYMBOL_SCHEMA, Account, Order, OrderAsSent, OrderRequest, Position

router = APIRouter(prefix="/v1", tags=["trading"])

REPLAYED_HEADER = "Idempotent-Replayed"
ORDER_ID = Param(
    "order_id",
    "Alpaca order id (UUID)",
    {"type": "string", "format": "uuid", "maxLength": 36, "pattern": ORDER_ID_PATTERN},
    "path",
)
STATUS = Param(
    "status", "open, closed or all", {"type": "string", "enum": ["open", "closed", "all"]}
)
LIMIT = Param(
    "limit", "At most this many orders", {"type": "integer", "minimum": 1, "maximum": 500}
)
DIRECTION = Param("direction", "asc or desc", {"type": "string", "enum": ["asc", "desc"]})
SYMBOLS = Param(
    "symbols",
    "Comma-separated stock symbols or OCC option contracts (upper-cased)",
    {"type": "array", "items": {"type": "string", **SYMBOL_SCHEMA}, "minItems": 1, "maxItems": 100},
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "1-128 printable ASCII characters, no spaces; becomes Alpaca's client_order_id. The same key"
    " with an order of the same meaning answers that order again (Idempotent-Replayed: true);"
    " with another order, 409 IDEMPOTENCY_CONFLICT.",
    {"type": "string", "maxLength": 128, "pattern": IDEMPOTENCY_KEY_PATTERN},
    "header",
    required=True,
)
ORDER_REFUSALS = UPSTREAM | {ErrorCode.ORDER_NOT_FOUND}
ACCOUNT = Operation(Scope.TRADING_READ, (), UPSTREAM)
ORDERS = Operation(Scope.TRADING_READ, (STATUS, LIMIT, DIRECTION, SYMBOLS), UPSTREAM)
ORDER = Operation(Scope.TRADING_READ, (ORDER_ID,), ORDER_REFUSALS)
SUBMIT = Operation(
    Scope.TRADING_WRITE,
    (IDEMPOTENCY_KEY,),
    UPSTREAM
    | {
        ErrorCode.ORDER_REJECTED,
        ErrorCode.IDEMPOTENCY_CONFLICT,
        ErrorCode.ORDER_STATE_UNKNOWN,
        ErrorCode.AUDIT_UNAVAILABLE,
    },
    success_headers=(REPLAYED_HEADER,),
    body=OrderRequest,
    links={
        name: {"operationId": name, "parameters": {"order_id": "$response.body#/id"}}
        for name in ("order", "cancel_order")
    },
)
CANCEL = Operation(
    Scope.TRADING_WRITE,
    (ORDER_ID,),
    ORDER_REFUSALS | {ErrorCode.ORDER_NOT_CANCELABLE},
    success_status=204,
)


def _order_id(request: Request) -> str:
    return ORDER_ID.text(request) or ""


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


@router.get(
    "/account",
    response_model=Account,
    summary="Account (decimal strings as Alpaca sent them)",
    openapi_extra=ACCOUNT.openapi_extra(),
)
async def account(request: Request) -> Response:
    await authorize(request, ACCOUNT.scope)
    return _json(await gateway_of(request).trading.account())


@router.get(
    "/positions",
    response_model=list[Position],
    summary="Open positions",
    openapi_extra=ACCOUNT.openapi_extra(),
)
async def positions(request: Request) -> Response:
    await authorize(request, ACCOUNT.scope)
    return _json(await gateway_of(request).trading.positions())


@router.get(
    "/orders",
    response_model=list[Order],
    summary="Orders",
    openapi_extra=ORDERS.openapi_extra(),
)
async def orders(request: Request) -> Response:
    await authorize(request, ORDERS.scope)
    query = {p.name: v for p in (STATUS, DIRECTION) if (v := p.text(request)) is not None}
    if (limit := LIMIT.integer(request)) is not None:
        query["limit"] = str(limit)
    if (symbols := SYMBOLS.items(request)) is not None:
        query["symbols"] = ",".join(symbol.upper() for symbol in symbols)
    return _json(await gateway_of(request).trading.orders(query))


@router.get(
    "/orders/{order_id}",
    response_model=Order,
    summary="One order",
    openapi_extra=ORDER.openapi_extra(),
)
async def order(request: Request) -> Response:
    await authorize(request, ORDER.scope)
    answer = await gateway_of(request).trading.order(_order_id(request))
    if isinstance(answer, Refusal):
        raise _refused(answer, ErrorCode.ORDER_NOT_FOUND)
    return _json(answer)


@router.post(
    "/orders",
    response_model=Order | OrderAsSent,
    summary="Submit an order (Idempotency-Key required; never sent twice)",
    openapi_extra=SUBMIT.openapi_extra(),
)
async def submit_order(request: Request) -> Response:
    key_row = await authorize(request, SUBMIT.scope)
    key = IDEMPOTENCY_KEY.text(request) or ""
    order_request = await order_request_from(request)
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
    summary="Cancel an order (204 as Alpaca answers; it stays readable, status canceled)",
    status_code=204,
    openapi_extra=CANCEL.openapi_extra(),
)
async def cancel_order(request: Request) -> Response:
    await authorize(request, CANCEL.scope)
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


async def order_request_from(request: Request) -> OrderRequest:
    """The order in the request's body (application/json), checked strictly."""
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
    return order_request
