"""The only mapping from errors to HTTP: RFC 9457 problem+json with a contract `code`.

Framework errors (validation, unknown route, wrong method, body too large) and unhandled
exceptions are translated here too, so no client ever sees an untyped error.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from loguru import logger
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.api.middleware import note_problem
from app.errors import OPERATOR_ATTENTION, ErrorCode, GatewayError
from app.logs import current_request_id
from app.storage.records import ErrorLogEntry

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://github.com/alpaca-real-data-gateway/problems/"

_HTTP_STATUS_CODES = {
    404: ErrorCode.ROUTE_NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def problem(error: GatewayError, instance: str) -> dict[str, Any]:
    code = error.code
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.name.lower().replace("_", "-"),
        "title": code.title,
        "status": int(code.status),
        "detail": error.detail,
        "instance": instance,
        "code": code.name,
        "request_id": current_request_id(),
        "retryable": code.retryable,
    }
    if error.retry_after_s is not None:
        body["retry_after_s"] = error.retry_after_s
    if error.upstream is not None:
        body["upstream"] = error.upstream
    if error.symbol is not None:
        body["symbol"] = error.symbol
    for name, value in error.extensions.items():
        body.setdefault(name, value)
    return body


def record_problem(request: Request, error: GatewayError, path: str) -> None:
    """What every typed failure leaves behind, whether it is the answer or one item of a batch:
    the access line's code, the error counter, and for operators' failures an error-log row."""
    note_problem(error.code.name, error.upstream)
    gateway = request.scope.get("state", {}).get("gateway")
    if gateway is None:
        return
    gateway.metrics.http_error(error.code)
    if error.code in OPERATOR_ATTENTION:
        # Queued, never awaited: recording a failure must not slow or fail the answer.
        gateway.error_log.submit(
            ErrorLogEntry(
                code=error.code.name,
                message=error.detail,
                request_id=current_request_id(),
                context={"path": path, "upstream": error.upstream, "symbol": error.symbol},
            )
        )


def instance_of(request: Request) -> str:
    """What request.url.path says (the same escapes), without building the whole URL."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def problem_response(request: Request, error: GatewayError) -> Response:
    """The answer for one typed failure: recorded, then rendered as problem+json."""
    path = instance_of(request)
    record_problem(request, error, path)
    return ProblemResponse(error, path)


class ProblemResponse(Response):
    """problem+json with the headers it needs (Retry-After, Allow), built directly.
    X-Request-ID is added by the request middleware, to every answer alike."""

    media_type = PROBLEM_JSON

    def __init__(self, error: GatewayError, instance: str) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if error.code is ErrorCode.METHOD_NOT_ALLOWED and "allow" in error.extensions:
            # A header, not a member of the body.
            headers.append((b"allow", str(error.extensions.pop("allow")).encode()))
        if error.retry_after_s is not None:
            headers.append((b"retry-after", str(error.retry_after_s).encode()))
        self.status_code = error.code.status
        self.background = None
        self.body = json.dumps(problem(error, instance), separators=(",", ":")).encode()
        headers.append((b"content-length", str(len(self.body)).encode()))
        headers.append((b"content-type", b"application/problem+json"))
        self.raw_headers = headers


async def _gateway_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, GatewayError):  # registered for this type only
        raise exc
    return problem_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for this type only
        raise exc
    invalid = [
        {
            "name": ".".join(
                str(p) for p in err.get("loc", ()) if p not in ("path", "query", "body")
            )
            or "request",
            "reason": str(err.get("msg", "invalid")),
        }
        for err in exc.errors()
    ]
    detail = "; ".join(f"{i['name']}: {i['reason']}" for i in invalid)
    error = GatewayError(ErrorCode.VALIDATION_ERROR, detail, extensions={"invalid_params": invalid})
    return problem_response(request, error)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path, asked of the router itself (its own 405
    names only the first route that matched the path: `DELETE /v1/orders` said `Allow: GET`)."""
    routes = request.app.router.routes
    methods = {
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")  # served by the request middleware as GET without a body
    return ", ".join(sorted(methods | {"OPTIONS"}))


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for this type only
        raise exc
    code = _HTTP_STATUS_CODES.get(exc.status_code)
    if code is None:
        code = ErrorCode.VALIDATION_ERROR if 400 <= exc.status_code < 500 else ErrorCode.INTERNAL
    extensions: dict[str, Any] = {}
    if code is ErrorCode.METHOD_NOT_ALLOWED:
        allow = allowed_methods(request)
        if request.method == "OPTIONS":
            # The path exists: say what it takes (no CORS: browsers are not our clients).
            return Response(status_code=204, headers={"Allow": allow})
        extensions["allow"] = allow
    path = request.url.path
    if code is ErrorCode.ROUTE_NOT_FOUND and path.endswith("/") and len(path) > 1:
        routes, without = request.app.router.routes, {**request.scope, "path": path.rstrip("/")}
        if any(r.matches(without)[0] is not Match.NONE for r in routes):
            extensions["hint"] = "no trailing slash: the gateway's paths do not end in /"
    detail = {
        ErrorCode.ROUTE_NOT_FOUND: f"No route {request.method} {request.url.path}",
        ErrorCode.METHOD_NOT_ALLOWED: f"{request.method} is not allowed on {request.url.path}",
    }.get(code, str(exc.detail))
    return problem_response(request, GatewayError(code, detail, extensions=extensions))


async def internal_response(request: Request) -> Response:
    """INTERNAL for a bug; the request middleware logs it (with the request id) and calls this."""
    error = GatewayError(
        ErrorCode.INTERNAL, "Internal error; quote the request_id when reporting it"
    )
    return problem_response(request, error)


async def _unhandled(request: Request, exc: Exception) -> Response:
    # Last resort, outside the request middleware (a bug in a middleware itself).
    logger.opt(exception=exc).error("unhandled {} on {}", type(exc).__name__, request.url.path)
    return await internal_response(request)


def add_exception_handlers(app: Starlette) -> None:
    """Every error an app can raise, as problem+json (the public app and the ops listener)."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unhandled)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status, description in (
        (403, "FEED_NOT_PERMITTED"),
        (404, "SYMBOL_NOT_FOUND or NO_DATA"),
        (422, "VALIDATION_ERROR"),
        (502, "UPSTREAM_BAD_RESPONSE or UPSTREAM_AUTH_FAILED"),
        (503, "UPSTREAM_UNAVAILABLE, CIRCUIT_OPEN, UPSTREAM_RATE_LIMITED, DATA_STALE, ..."),
        (504, "UPSTREAM_TIMEOUT"),
    )
}
