"""What the liveness and readiness routes answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


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
    source: Literal["shared", "local"] = Field(
        description="shared: the fleet's state in Redis; local: this instance alone (no Redis)"
    )
    opened_by: str | None = Field(
        description="the instance (GATEWAY_INSTANCE:pid) whose calls last opened it, if known"
    )


class StreamFeedReport(BaseModel):
    state: Literal["idle", "connecting", "streaming", "backing_off"] = Field(
        description="this instance's own connection to the Alpaca feed; idle when no client"
        " asked for the feed, and on an instance relaying another instance's connection"
    )
    reconnect_in_s: float = Field(description="backing_off: time before the next attempt; else 0")
    leader: str | None = Field(
        description="with Redis: the instance (GATEWAY_INSTANCE:pid) holding the feed's one"
        " connection, as this instance last saw it; null without Redis or before a client here"
        " asked for the feed"
    )
    clients: int = Field(description="clients of the feed connected to this instance")


class ReadinessDetails(BaseModel):
    """200 while the gateway can serve; `degraded` when Redis, the store or a breaker is not
    well (it still answers). Without Alpaca credentials the answer is 503, a problem carrying
    these same members."""

    status: Literal["ready", "degraded"]
    upstream_source: str
    credentials: Literal["configured"]
    dependencies: Dependencies
    breakers: dict[str, BreakerReport]
    # Always sent; optional in the schema, so an answer from a gateway before streams validates.
    streams: dict[str, StreamFeedReport] = Field(
        default_factory=dict,
        description="each real-time stream feed (iex, sip, ..., trade_updates); informational:"
        " a feed's state never changes `status`",
    )


class ReadinessStatus(BaseModel):
    """The status alone: what a caller OPS_ACCESS does not let see the details gets (with
    `key`, one without `Authorization: Bearer <OPS_KEY>`; with `internal`, any caller outside
    the internal listener). A load balancer needs no more, and the HTTP status says the same."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ready", "degraded"]


class Readiness(RootModel[ReadinessDetails | ReadinessStatus]):
    """The details when OPS_ACCESS lets the caller see them (OPS_ACCESS=open: every caller),
    else the status alone. Exactly one matches: the status-only body has no other member."""
