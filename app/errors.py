"""The gateway's one error vocabulary.

Every failure a client can see is a `GatewayError` carrying an `ErrorCode` from the contract's
closed list. `app/api/problems.py` is the only place that turns one into HTTP.
"""

from __future__ import annotations

from enum import Enum
from http import HTTPStatus
from typing import Any, Literal

# `reference`: the trading host's reference data (assets, option contracts, clock) that the
# market-data routes consult, behind a breaker of its own so they never touch trading's.
Upstream = Literal["data", "options", "trading", "reference"]


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
    ORDER_NOT_FOUND = (HTTPStatus.NOT_FOUND, "Alpaca has no such order", False)
    ORDER_NOT_CANCELABLE = (HTTPStatus.CONFLICT, "The order can no longer be canceled", False)
    AUDIT_UNAVAILABLE = (HTTPStatus.SERVICE_UNAVAILABLE, "Order audit unavailable", True)
    ROUTE_NOT_FOUND = (HTTPStatus.NOT_FOUND, "No such route", False)
    METHOD_NOT_ALLOWED = (HTTPStatus.METHOD_NOT_ALLOWED, "Method not allowed", False)
    PAYLOAD_TOO_LARGE = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request body too large", False)
    UNSUPPORTED_MEDIA_TYPE = (
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        "Request body must be application/json",
        False,
    )
    INTERNAL = (HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error", False)

    def __init__(self, status: HTTPStatus, title: str, retryable: bool) -> None:
        # Plain attributes, read on every problem answer (an enum's `value` is a descriptor).
        self.status = status
        self.title = title
        self.retryable = retryable


E = ErrorCode

# --- groups of codes, named once; every hand-kept set elsewhere derives from these -----------
# Alpaca is unwell: it failed, timed out or answered out of its schema. What a circuit breaker
# counts against an upstream, and what a client's stale opt-in may cover.
ALPACA_UNWELL = frozenset({E.UPSTREAM_UNAVAILABLE, E.UPSTREAM_TIMEOUT, E.UPSTREAM_BAD_RESPONSE})
# Held back from Alpaca: its breaker is open, or its rate budget is spent until a known time.
HELD_BACK = frozenset({E.CIRCUIT_OPEN, E.UPSTREAM_RATE_LIMITED})
# Answered here without calling Alpaca at all. Never remembered (they carry their own
# Retry-After, which a cached copy would blur), and an order refused so was never placed.
ANSWERED_WITHOUT_ALPACA = HELD_BACK | {E.UPSTREAM_NOT_CONFIGURED}
# A fact about the symbol itself: it lives as long as a value would, and no stale value may
# stand in for it (the symbol has no value; that is the answer).
SYMBOL_FACTS = frozenset({E.NO_DATA, E.SYMBOL_NOT_FOUND, E.CONTRACT_NOT_FOUND})
# Alpaca refused the request itself (our credentials, the plan, the request's shape): nothing
# was done on its side.
REFUSED_BY_ALPACA = frozenset({E.UPSTREAM_AUTH_FAILED, E.FEED_NOT_PERMITTED, E.VALIDATION_ERROR})
# The failures an operator looks for later (`python -m app.cli errors`): Alpaca's own trouble,
# orders whose fate needs attention, and our bugs. Client mistakes are not kept.
OPERATOR_ATTENTION = (
    ALPACA_UNWELL
    | {E.UPSTREAM_RATE_LIMITED, E.UPSTREAM_AUTH_FAILED}
    | {E.ORDER_STATE_UNKNOWN, E.AUDIT_UNAVAILABLE, E.INTERNAL}
)


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

    def fresh(self) -> GatewayError:
        """The same failure as a new exception with no traceback, cause or context.

        A remembered failure (cache, single-flight) is handed to many requests; raising one
        shared object again and again chains every raise's frames onto it and keeps them alive
        (RSS grew to 1.2 GB under wrk). Remember `fresh()` copies and hand out `fresh()` copies.
        """
        return GatewayError(
            self.code,
            self.detail,
            upstream=self.upstream,
            symbol=self.symbol,
            retry_after_s=self.retry_after_s,
            extensions=self.extensions,
        )

    def __repr__(self) -> str:
        return f"GatewayError({self.code.name}, {self.detail!r})"
