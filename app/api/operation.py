"""What a route reads, who may call it and every answer it can give, declared once.

A route checks its key against `Operation.scope` and reads its parameters through
`Operation.params`; the OpenAPI document renders the same object (`openapi_extra`): parameters,
security, and one problem+json response per status with the codes it can carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from app.api.params import Param
from app.errors import ALPACA_UNWELL, ANSWERED_WITHOUT_ALPACA, REFUSED_BY_ALPACA, ErrorCode
from app.keys import Scope

E = ErrorCode
PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
BEARER, API_KEY = "bearerAuth", "apiKeyHeader"

# What an API key at the door can answer (app/api/auth.py).
AUTH = frozenset({E.UNAUTHENTICATED, E.FORBIDDEN, E.RATE_LIMITED, E.AUDIT_UNAVAILABLE})
# Any call to Alpaca, whichever host (app/alpaca/transport.py, app/read_through.py). Alpaca's
# 400/404/422 about the request is VALIDATION_ERROR.
UPSTREAM = ALPACA_UNWELL | ANSWERED_WITHOUT_ALPACA | (REFUSED_BY_ALPACA - {E.FEED_NOT_PERMITTED})
# Market data adds the plan's feeds, and a symbol Alpaca does not know or has no value for.
MARKET_DATA = UPSTREAM | {E.FEED_NOT_PERMITTED, E.SYMBOL_NOT_FOUND, E.NO_DATA}

HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id: a safe client-supplied X-Request-ID, or a new one",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._\\-]{1,64}$"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again (also `retry_after_s`)",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Allow": {
        "description": "Every method this path takes",
        "required": True,
        "schema": {"type": "string"},
    },
    "Cache-Status": {
        "description": "RFC 9211: `gateway; hit`, `gateway; fwd=miss; stored`, ... (the least"
        " fresh state of a batch; absent when a batch served no value)",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when an earlier request with this Idempotency-Key placed the"
        " order, `false` when this request placed it",
        "required": True,
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
}
_RETRY_AFTER_STATUSES = frozenset({429, 503, 504})
# A route that needs a key has a Scope; a public one (health, readiness, metrics) has None.
S = TypeVar("S", Scope, None)


def problem_responses(codes: Iterable[ErrorCode]) -> dict[str, dict[str, Any]]:
    """One problem+json response per status, its description naming every code it can carry."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in sorted(codes, key=lambda c: (int(c.status), c.name)):
        by_status.setdefault(int(code.status), []).append(code)
    responses: dict[str, dict[str, Any]] = {}
    for status, members in sorted(by_status.items()):
        headers = {"X-Request-ID": HEADERS["X-Request-ID"]}
        if status in _RETRY_AFTER_STATUSES:
            headers["Retry-After"] = HEADERS["Retry-After"]
        if status == 405:
            headers["Allow"] = HEADERS["Allow"]
        responses[str(status)] = {
            "description": "; ".join(f"`{c.name}`: {c.title}" for c in members),
            "headers": headers,
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
    return responses


@dataclass(frozen=True, slots=True)
class Operation(Generic[S]):
    """One route's contract. `errors` are the codes its own work can produce; those of the key
    check, the parameters and the framework (405, 413, 500, a path that matches no route) are
    added here, so every route declares them alike."""

    scope: S
    params: tuple[Param, ...] = ()
    errors: frozenset[ErrorCode] = frozenset()
    success_status: int = 200
    success_headers: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    # OpenAPI links from the success answer to the operations it feeds (by operationId).
    links: dict[str, dict[str, Any]] = field(default_factory=dict)

    def codes(self) -> frozenset[ErrorCode]:
        codes = self.errors | {E.METHOD_NOT_ALLOWED, E.PAYLOAD_TOO_LARGE, E.INTERNAL}
        if self.scope is not None:
            codes |= AUTH
        if self.params or self.body is not None:
            codes |= {E.VALIDATION_ERROR}
        if any(p.location == "path" for p in self.params):
            codes |= {E.ROUTE_NOT_FOUND}  # a path parameter holding `/` reaches no route
        if self.body is not None:
            codes |= {E.UNSUPPORTED_MEDIA_TYPE}
        return frozenset(codes)

    def openapi_extra(self) -> dict[str, Any]:
        success: dict[str, Any] = {
            "headers": {name: HEADERS[name] for name in ("X-Request-ID", *self.success_headers)}
        }
        if self.links:
            success["links"] = self.links
        extra: dict[str, Any] = {
            "responses": {str(self.success_status): success} | problem_responses(self.codes())
        }
        if self.params:
            extra["parameters"] = [p.openapi() for p in self.params]
        if self.scope is not None:
            # OpenAPI 3.1 lets a non-OAuth requirement list roles: the key's required scope.
            extra["security"] = [{BEARER: [self.scope.value]}, {API_KEY: [self.scope.value]}]
        if self.body is not None:
            ref = {"$ref": f"#/components/schemas/{self.body.__name__}"}
            content = {"application/json": {"schema": ref}}
            extra["requestBody"] = {"required": True, "content": content}
        return extra
