"""The problem+json body (RFC 9457) as the OpenAPI document describes it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import ErrorCode


class InvalidParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The parameter, header or body member (`qty`, `legs.0.symbol`)")
    reason: str


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
    code: str = Field(
        description="The closed list of error codes",
        json_schema_extra={"enum": list(ErrorCode.__members__)},
    )
    request_id: str
    retryable: bool
    retry_after_s: int | None = Field(default=None, description="Also sent as Retry-After")
    upstream: Literal["data", "options", "trading", "reference"] | None = Field(
        default=None, description="Which Alpaca API the failure came from"
    )
    symbol: str | None = Field(default=None, description="The symbol or contract it concerns")
    age_ms: int | None = Field(default=None, description="DATA_STALE: the value's age")
    invalid_params: list[InvalidParam] | None = Field(
        default=None, description="VALIDATION_ERROR: which input, and why"
    )
