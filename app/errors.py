"""The gateway's one error vocabulary.

Every failure a client can see is a `GatewayError` carrying an `ErrorCode` from the contract's
closed list. `app/api/problems.py` is the only place that turns one into HTTP.
"""

from __future__ import annotations

from enum import Enum
from http import HTTPStatus
from typing import Any, Literal

Upstream = Literal["data", "options", "trading"]


class ErrorCode(Enum):
    """Member name = wire code; value = (HTTP status, title, retryable)."""

    VALIDATION_ERROR = (HTTPStatus.UNPROCESSABLE_ENTITY, "Invalid request", False)
    UNAUTHENTICATED = (HTTPStatus.UNAUTHORIZED, "Missing or unknown API key", False)
    FORBIDDEN = (HTTPStatus.FORBIDDEN, "API key lacks the required scope", False)
    RATE_LIMITED = (HTTPStatus.TOO_MANY_REQUESTS, "Client quota exhausted", True)
    SYMBOL_NOT_FOUND = (HTTPStatus.NOT_FOUND, "Unknown symbol", False)
    CONTRACT_NOT_FOUND = (HTTPStatus.NOT_FOUND, "Unknown option contract", False)
    NO_DATA = (HTTPStatus.NOT_FOUND, "No real value available", True)
    DATA_STALE = (HTTPStatus.SERVICE_UNAVAILABLE, "Newest real value is too old", True)
    UPSTREAM_UNAVAILABLE = (HTTPStatus.SERVICE_UNAVAILABLE, "Alpaca is unavailable", True)
    UPSTREAM_TIMEOUT = (HTTPStatus.GATEWAY_TIMEOUT, "Alpaca did not answer in time", True)
    UPSTREAM_RATE_LIMITED = (HTTPStatus.SERVICE_UNAVAILABLE, "Alpaca rate limit reached", True)
    CIRCUIT_OPEN = (HTTPStatus.SERVICE_UNAVAILABLE, "Circuit breaker open", True)
    UPSTREAM_AUTH_FAILED = (HTTPStatus.BAD_GATEWAY, "Alpaca rejected the credentials", False)
    FEED_NOT_PERMITTED = (HTTPStatus.FORBIDDEN, "Feed not included in the plan", False)
    UPSTREAM_BAD_RESPONSE = (HTTPStatus.BAD_GATEWAY, "Alpaca sent a malformed answer", True)
    UPSTREAM_NOT_CONFIGURED = (
        HTTPStatus.SERVICE_UNAVAILABLE,
        "No Alpaca credentials configured",
        False,
    )
    ORDER_REJECTED = (HTTPStatus.UNPROCESSABLE_ENTITY, "Alpaca rejected the order", False)
    IDEMPOTENCY_CONFLICT = (HTTPStatus.CONFLICT, "Idempotency key reused with another body", False)
    ORDER_STATE_UNKNOWN = (HTTPStatus.GATEWAY_TIMEOUT, "Order state not yet known", True)
    AUDIT_UNAVAILABLE = (HTTPStatus.SERVICE_UNAVAILABLE, "Order audit unavailable", True)
    ROUTE_NOT_FOUND = (HTTPStatus.NOT_FOUND, "No such route", False)
    METHOD_NOT_ALLOWED = (HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed", False)
    PAYLOAD_TOO_LARGE = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large", False)
    INTERNAL = (HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error", False)

    @property
    def status(self) -> HTTPStatus:
        return self.value[0]

    @property
    def title(self) -> str:
        return self.value[1]

    @property
    def retryable(self) -> bool:
        return self.value[2]


class GatewayError(Exception):
    """A typed failure. `extensions` become problem+json members (symbol, upstream, age_ms…)."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        upstream: Upstream | None = None,
        symbol: str | None = None,
        retry_after_s: int | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.upstream = upstream
        self.symbol = symbol
        self.retry_after_s = retry_after_s
        self.extensions = dict(extensions or {})

    def for_symbol(self, symbol: str) -> GatewayError:
        """The same failure, attributed to one symbol of a batch."""
        return GatewayError(
            self.code,
            self.detail,
            upstream=self.upstream,
            symbol=symbol,
            retry_after_s=self.retry_after_s,
            extensions=self.extensions,
        )

    def __repr__(self) -> str:
        return f"GatewayError({self.code.name}, {self.detail!r})"
