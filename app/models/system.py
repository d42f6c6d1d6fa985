"""What the liveness and readiness routes answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok"]


class DependencyState(BaseModel):
    backend: str = Field(description="memory or redis; sqlite or postgres")
    state: Literal["up", "down"]


class Dependencies(BaseModel):
    cache: DependencyState
    database: DependencyState = Field(description="Orders need it (audit first); data does not")


class BreakerReport(BaseModel):
    state: Literal["closed", "open", "half_open"]
    calls_in_window: int
    failure_rate: float | None = Field(description="null below the minimum number of calls")
    slow_call_rate: float | None
    retry_after_s: float = Field(description="time left open, 0 otherwise")


class Readiness(BaseModel):
    """200 while the gateway can serve; `degraded` when Redis, the store or a breaker is not
    well (it still answers). Without Alpaca credentials the answer is 503, a problem carrying
    these same members."""

    status: Literal["ready", "degraded"]
    upstream_source: str
    credentials: Literal["configured"]
    dependencies: Dependencies
    breakers: dict[str, BreakerReport]
