"""Failures on the Alpaca-compatible face, in Alpaca's error shape.

alpaca-py raises `APIError` for any non-2xx and reads `code` and `message` from the JSON body, so
every failure here is `{"code": <Alpaca-style 8 digits>, "message": ...}` plus the gateway's own
members (`gateway_code` from the contract's closed list, `request_id`, `retryable`), which the SDK
ignores and a person reading the log does not.

Statuses are chosen for the SDK's behaviour: it re-sends on 429 and 504, three times, after
blocking three-second sleeps, POSTs included. So the face never answers 429 or 504: the client's
own quota, Alpaca's budget, an open breaker and a timeout are all 503 with Retry-After (the SDK
does not retry 503), and nothing on the submit path can make it send an order again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response

from app.api.problems import instance_of, record_problem
from app.errors import ErrorCode, GatewayError
from app.logs import current_request_id

# Every face path starts here, written into each route (its log and metric label say /alpaca/…).
PREFIX = "/alpaca"
E = ErrorCode
_STATUS: dict[ErrorCode, int] = {
    E.VALIDATION_ERROR: 422,
    E.UNAUTHENTICATED: 401,
    E.FORBIDDEN: 403,
    E.RATE_LIMITED: 503,
    E.SYMBOL_NOT_FOUND: 404,
    E.CONTRACT_NOT_FOUND: 404,
    E.NO_DATA: 404,
    E.DATA_STALE: 503,
    E.UPSTREAM_UNAVAILABLE: 503,
    E.UPSTREAM_TIMEOUT: 503,
    E.UPSTREAM_RATE_LIMITED: 503,
    E.CIRCUIT_OPEN: 503,
    E.UPSTREAM_AUTH_FAILED: 502,
    E.FEED_NOT_PERMITTED: 403,
    E.UPSTREAM_BAD_RESPONSE: 502,
    E.UPSTREAM_NOT_CONFIGURED: 503,
    E.ORDER_REJECTED: 422,
    E.IDEMPOTENCY_CONFLICT: 422,
    E.ORDER_STATE_UNKNOWN: 503,
    E.ORDER_NOT_FOUND: 404,
    E.ORDER_NOT_CANCELABLE: 422,
    E.AUDIT_UNAVAILABLE: 503,
    E.ROUTE_NOT_FOUND: 404,
    E.METHOD_NOT_ALLOWED: 405,
    E.PAYLOAD_TOO_LARGE: 413,
    E.UNSUPPORTED_MEDIA_TYPE: 415,
    E.INTERNAL: 500,
}
# Alpaca's own codes where it has one for the same meaning; otherwise status * 100000 + 10000,
# the shape of Alpaca's (40110000, 40410000, ...).
_CODES: dict[ErrorCode, int] = {
    E.IDEMPOTENCY_CONFLICT: 40010001,  # "client_order_id must be unique", as Alpaca says it
    E.ORDER_NOT_CANCELABLE: 42210000,
}


def status_of(code: ErrorCode) -> int:
    return _STATUS[code]


def alpaca_error(request: Request, error: GatewayError) -> Response:
    """The failure, recorded like any other (metrics, access line, error log), in Alpaca's shape."""
    record_problem(request, error, instance_of(request))
    status = _STATUS[error.code]
    upstream_status = error.extensions.get("upstream_status")
    # Alpaca's own refusal keeps Alpaca's status (403 for buying power, 422 for a bad field), so
    # code written against Alpaca branches the same way here; never 429, which the SDK re-sends.
    if (
        error.code is E.ORDER_REJECTED
        and isinstance(upstream_status, int)
        and 400 <= upstream_status < 500
        and upstream_status != 429
    ):
        status = upstream_status
    alpaca_code = error.extensions.get("alpaca_code")
    body = {
        "code": alpaca_code
        if isinstance(alpaca_code, int) and error.code is E.ORDER_REJECTED
        else _CODES.get(error.code, status * 100_000 + 10_000),
        "message": f"{error.detail} ({error.code.name})",
        "gateway_code": error.code.name,
        "request_id": current_request_id(),
        "retryable": error.code.retryable,
    }
    for name in ("symbol", "client_order_id", "upstream_status"):
        if name in error.extensions:
            body[name] = error.extensions[name]
    if error.symbol is not None:
        body["symbol"] = error.symbol
    headers = {} if error.retry_after_s is None else {"Retry-After": str(error.retry_after_s)}
    if status == HTTPStatus.METHOD_NOT_ALLOWED and "allow" in error.extensions:
        headers["Allow"] = str(error.extensions["allow"])
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def face(endpoint: Endpoint) -> Endpoint:
    """A face route: a typed failure anywhere in it is answered in Alpaca's shape."""

    @wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except GatewayError as exc:
            return alpaca_error(request, exc)

    return answer
