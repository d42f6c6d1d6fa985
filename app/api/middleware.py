"""Pure-ASGI middleware: request id, timing, metrics, security headers and one access log line
per request; bounds on the request body (size, and time to arrive)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

from loguru import logger
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ErrorCode, GatewayError
from app.logs import REQUEST_ID
from app.metrics import Metrics

# Client-supplied ids are echoed into logs and headers: accept only a safe, bounded shape.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_UNMATCHED = "__unmatched__"
# On every answer, the framework's and the hot routes' alike (both pass through here). nosniff:
# a browser never reads a JSON answer as HTML or script. A bare `server` replaces the HTTP
# server's own (no name or version to match against advisories). No framing of /docs.
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"server", b"gateway"),
)
# Unless a route says otherwise (the /docs assets): answers carry ages measured when they were
# sent, so no shared or browser cache may keep and replay them.
_NO_STORE = (b"cache-control", b"no-store")
_CONNECTION_CLOSE = (b"connection", b"close")
# A refused body up to this size is read off so its connection stays usable; a larger one
# closes it (reading megabytes a client should not have sent costs more than a reconnect).
_DRAIN_BYTES = 1 << 20
_DRAIN_TIMEOUT_S = 10.0


# Filled by the problem renderer so the access line can say which error, from which upstream.
_outcome: ContextVar[dict[str, str] | None] = ContextVar("request_outcome", default=None)


def note_problem(code: str, upstream: str | None) -> None:
    outcome = _outcome.get()
    if outcome is not None:
        outcome["code"] = code
        if upstream is not None:
            outcome["upstream"] = upstream


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        on_unhandled: Callable[[Request], Awaitable[Response]] | None = None,
        on_error: Callable[[Request, GatewayError], Response] | None = None,
        max_body_bytes: int | None = None,
        body_read_timeout_s: float | None = None,
        access_log: bool = True,
        reads_bodies: bool = True,
    ) -> None:
        """`reads_bodies=False` for an app that never reads a request body (the hot GETs): no
        counting wrapper around `receive`; an announced oversized body is still refused."""
        self.app = app
        self.reads_bodies = reads_bodies
        self.metrics = metrics
        # Renders INTERNAL while the request id is still set (the framework's own last-resort
        # handler runs outside this middleware, after the id is gone).
        self.on_unhandled = on_unhandled
        # Renders a refusal made here, before the app (a body announced over the limit).
        self.on_error = on_error
        self.max_body_bytes = max_body_bytes
        # A body trickled byte by byte would hold its connection (and a coroutine) for ever.
        self.body_read_timeout_s = body_read_timeout_s
        # Decided once: building a bound record per request costs even when the level drops it.
        self.access_log = access_log
        self._id_prefix = os.urandom(10).hex()
        self._issued = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming_id, content_length = _read_headers(scope["headers"])
        request_id = incoming_id or self._new_request_id()
        token = REQUEST_ID.set(request_id)
        outcome: dict[str, str] = {}
        outcome_token = _outcome.set(outcome)
        header = (b"x-request-id", request_id.encode())
        status = 500
        responded = False
        # Set when an oversized body could not be read off (past _DRAIN_BYTES): its rest is
        # still on the connection, which a server that kept it open (granian) parsed as the next
        # request, so the next POST on it never got an answer. The answer then closes it.
        abandoned = [False]
        method = scope["method"]
        if method == "HEAD":
            # HEAD is GET without the body (RFC 9110 §9.3.2): same route, same headers.
            scope = {**scope, "method": "GET"}

        async def send_with_id(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                # Routes never set X-Request-ID; this is the one place it is written.
                message["headers"] = _with_gateway_headers(message.get("headers", ()), header)
                if abandoned[0]:
                    message["headers"].append(_CONNECTION_CLOSE)
            elif method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            too_large = self._announced_too_large(content_length)
            if too_large is not None and self.on_error is not None:
                # Refused before any route runs; the body is read off first when small enough,
                # so the connection stays usable.
                announced = int(content_length or b"0")
                abandoned[0] = announced > _DRAIN_BYTES or not await self._drained(receive, 0)
                response = self.on_error(Request(scope), too_large)
                await response(scope, receive, send_with_id)
                return
            await self.app(
                scope,
                self._limited(receive, started, abandoned) if self.reads_bodies else receive,
                send_with_id,
            )
        except Exception as exc:
            # A bug. The log line carries the request id and the traceback; the body carries
            # the id and neither the traceback nor the message.
            logger.opt(exception=exc).error(
                "unhandled {} on {}", type(exc).__name__, scope.get("path", "")
            )
            if responded or self.on_unhandled is None:
                raise
            response = await self.on_unhandled(Request(scope))
            await response(scope, receive, send_with_id)
        finally:
            self._observe(scope, method, status, time.perf_counter() - started, outcome)
            _outcome.reset(outcome_token)
            REQUEST_ID.reset(token)

    def _new_request_id(self) -> str:
        # A random per-process prefix and a counter: unique without a syscall per request.
        self._issued += 1
        return f"{self._id_prefix}{self._issued:012x}"

    def _announced_too_large(self, content_length: bytes | None) -> GatewayError | None:
        if self.max_body_bytes is None or content_length is None:
            return None
        # The server has already refused a malformed Content-Length.
        if content_length.isdigit() and int(content_length) > self.max_body_bytes:
            return _too_large(self.max_body_bytes)
        return None

    def _limited(self, receive: Receive, started: float, abandoned: list[bool]) -> Receive:
        """`receive` that refuses a (chunked) body once it passes the size limit, or once it has
        not fully arrived by the deadline. After the body, `receive` is passed through untimed
        (a streamed answer waits on it for the client's disconnect)."""
        limit, timeout_s = self.max_body_bytes, self.body_read_timeout_s
        if limit is None and timeout_s is None:
            return receive
        deadline = None if timeout_s is None else started + timeout_s
        received = 0
        body_complete = False

        async def receive_within_limits() -> Message:
            nonlocal received, body_complete
            if body_complete or deadline is None:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), deadline - time.perf_counter())
                except TimeoutError:
                    raise _too_slow(deadline - started) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if limit is not None and received > limit:
                    more = message.get("more_body", False)
                    abandoned[0] = more and not await self._drained(receive, received)
                    raise _too_large(limit)
                body_complete = not message.get("more_body", False)
            return message

        return receive_within_limits

    async def _drained(self, receive: Receive, received: int) -> bool:
        """Read off the rest of a refused body, at most _DRAIN_BYTES in all and within the body
        deadline; False when it could not be (the answer then closes the connection)."""
        timeout_s = self.body_read_timeout_s or _DRAIN_TIMEOUT_S
        try:
            async with asyncio.timeout(timeout_s):
                while received <= _DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        return False
                    received += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return True
        except TimeoutError:
            return False
        return False

    def _observe(
        self, scope: Scope, method: str, status: int, duration_s: float, outcome: dict[str, str]
    ) -> None:
        route = getattr(scope.get("route"), "path", None) or _UNMATCHED
        if route != "/metrics":
            self.metrics.http_request(method, route, status, duration_s)
        if not self.access_log:
            return
        # The route template, never the raw path or query: both may carry a client's secrets.
        logger.bind(
            route=route,
            method=method,
            status=status,
            duration_ms=round(duration_s * 1000, 3),
            **outcome,
        ).info("{} {} {}", method, route, status)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"The request body is larger than {limit} bytes (MAX_BODY_BYTES)",
        extensions={"max_body_bytes": limit},
    )


def cors_options(origins: tuple[str, ...]) -> dict[str, Any]:
    """Starlette's CORSMiddleware for these browser origins: the methods and headers the API
    takes, the headers a client reads back; no cookies (keys travel in headers)."""
    return {
        "allow_origins": list(origins),
        "allow_methods": ["GET", "POST", "DELETE"],
        "allow_headers": [
            "Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "X-Request-ID",
            # The Alpaca-compatible face's key pair, as alpaca-py (and a browser bot) sends it.
            "APCA-API-KEY-ID", "APCA-API-SECRET-KEY",
        ],
        "expose_headers": ["X-Request-ID", "Retry-After", "Cache-Status", "Idempotent-Replayed"],
        "allow_credentials": False,
        "max_age": 600,
    }  # fmt: skip


def _too_slow(timeout_s: float) -> GatewayError:
    timeout_s = round(timeout_s, 3)
    return GatewayError(
        ErrorCode.VALIDATION_ERROR,
        f"The request body did not arrive within {timeout_s:g} s (GATEWAY_BODY_READ_TIMEOUT_S)",
        extensions={"body_read_timeout_s": timeout_s},
    )


def _with_gateway_headers(
    headers: Iterable[tuple[bytes, bytes]], request_id: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """The answer's headers plus the request id, the security headers and `no-store` unless
    the route chose its own caching."""
    out = [*headers, request_id, *_SECURITY_HEADERS]
    if not any(name.lower() == b"cache-control" for name, _ in out):
        out.append(_NO_STORE)
    return out


def _read_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bytes | None]:
    """The client's request id (only a safe one) and Content-Length, in one pass."""
    request_id = content_length = None
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            request_id = candidate if _SAFE_REQUEST_ID.fullmatch(candidate) else None
        elif name == b"content-length":
            content_length = value
    return request_id, content_length
