"""The problem+json body (RFC 9457) as the OpenAPI document describes it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.errors import ErrorCode


class Problem(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "type": "https://github.com/alpaca-real-data-gateway/problems/circuit-open",
                "title": "Circuit breaker open",
                "status": 503,
                "detail": "The data circuit is open; not calling Alpaca",
                "instance": "/v1/stocks/AAPL/quote",
                "code": "CIRCUIT_OPEN",
                "request_id": "5f0c6c1e2b7d4a0e9f1b3c2d4e5f6a7b",
                "retryable": True,
                "retry_after_s": 12,
                "upstream": "data",
            }
        },
    )

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(json_schema_extra={"enum": [c.name for c in ErrorCode]})
    request_id: str
    retryable: bool
    retry_after_s: int | None = Field(default=None, description="Also sent as Retry-After")
    upstream: str | None = Field(default=None, description="data, options or trading")
    symbol: str | None = None
    age_ms: int | None = None
