"""Liveness, readiness and the Prometheus exposition.

`/ready` is polled by load balancers, orchestrators and dashboards, often several times a
second per instance. It answers from a snapshot of its dependency checks (a Redis ping, a store
ping) at most READY_SNAPSHOT_MAX_AGE_S old: concurrent calls share one check, and a check waits
at most READY_CHECK_TIMEOUT_S (a hung store reads "down" then, it does not hang the probe).
Breaker states are read live (no I/O).

With OPS_ACCESS=key, `/metrics` and the details of `/ready` (dependencies, breakers, upstream)
need `Authorization: Bearer <OPS_KEY>`; with OPS_ACCESS=internal they are given only on the
internal listener (app/api/ops_listener.py). Elsewhere `/ready` still answers its status and its
HTTP status, which is all a load balancer reads. The key is compared here, not looked up in the
store: a hung store must not hang the probe that reports it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.auth import presented_key
from app.api.operation import Operation
from app.api.params import gateway_of
from app.api.problems import problem_response
from app.errors import ErrorCode, GatewayError
from app.models.system import Health, Readiness
from app.settings import Settings
from app.state import GatewayState

router = APIRouter(tags=["system"])
HEALTH = Operation(None)
READY = Operation(None, errors=frozenset({ErrorCode.UPSTREAM_NOT_CONFIGURED}))
# UNAUTHENTICATED only with OPS_ACCESS=key, without the operations key.
METRICS = Operation(None, errors=frozenset({ErrorCode.UNAUTHENTICATED}))
# Set in the scope of every request the internal listener receives (OPS_ACCESS=internal).
INTERNAL_LISTENER = "gateway.internal_listener"


class _Check:
    """One dependency's last answer, refreshed once it is older than the snapshot age."""

    def __init__(
        self, ping: Callable[[], Coroutine[Any, Any, bool]], clock: Callable[[], float]
    ) -> None:
        self._ping = ping
        self._clock = clock
        self._up = False
        self._checked_at: float | None = None
        self._running: asyncio.Task[bool] | None = None
        self._started_at = 0.0

    async def up(self, max_age_s: float, timeout_s: float) -> bool:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < max_age_s:
            return self._up
        running = self._running
        if running is None:
            running = self._running = asyncio.create_task(self._ping(), name="ready-check")
            running.add_done_callback(self._finished)
            self._started_at = now
        # Waiting never cancels the check (a cancelled asyncpg query waits on the server to take
        # the cancellation); one still out is joined, for what is left of its time.
        remaining_s = self._started_at + timeout_s - now
        if not running.done() and remaining_s > 0:
            await asyncio.wait({running}, timeout=remaining_s)
        self._up = running.done() and not running.cancelled() and running.result()
        self._checked_at = self._clock()
        return self._up

    def _finished(self, task: asyncio.Task[bool]) -> None:
        if self._running is task:
            self._running = None


class DependencyChecks:
    """Readiness checks of one gateway: the cache's Redis and the store."""

    def __init__(self, gateway: GatewayState, clock: Callable[[], float] = time.monotonic) -> None:
        self.gateway = gateway
        self._max_age_s = gateway.settings.ready_snapshot_max_age_s
        self._timeout_s = gateway.settings.ready_check_timeout_s
        self._cache = _Check(gateway.cache.ping, clock)
        self._store = _Check(gateway.store.ping, clock)

    async def states(self) -> tuple[str, str]:
        """(cache state, store state), each "up" or "down"."""
        _, store_up = await asyncio.gather(
            self._cache.up(self._max_age_s, self._timeout_s),
            self._store.up(self._max_age_s, self._timeout_s),
        )
        # The cache's own status: its last ping, or a request's failure since (Redis fails open
        # on the request path and says so at once).
        return self.gateway.cache.status(), "up" if store_up else "down"


def dependency_checks(request: Request, gateway: GatewayState) -> DependencyChecks:
    """This app's checks, made on first use and kept on the app (the lifespan state is frozen,
    and the checks belong to readiness alone)."""
    checks: DependencyChecks | None = getattr(request.app.state, "dependency_checks", None)
    if checks is None or checks.gateway is not gateway:
        checks = request.app.state.dependency_checks = DependencyChecks(gateway)
    return checks


@router.get(
    "/health",
    response_model=Health,
    summary="Liveness: the process answers",
    openapi_extra=HEALTH.openapi_extra(),
)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: each dependency and breaker with its state",
    openapi_extra=READY.openapi_extra(),
)
async def ready(request: Request) -> Response:
    gateway = gateway_of(request)
    cache_state, store_state = await dependency_checks(request, gateway).states()
    breakers: dict[str, Any] = {}
    for name, breaker in gateway.breakers.items():
        snap = breaker.snapshot()
        breakers[name] = {
            "state": snap.state.value,
            "calls_in_window": snap.calls_in_window,
            "failure_rate": snap.failure_rate,
            "slow_call_rate": snap.slow_call_rate,
            "retry_after_s": round(snap.retry_after_s, 3),
            # Which instance tripped it, for every replica behind the balancer (issue 11).
            "source": snap.source,
            "opened_by": snap.opened_by,
        }
    configured = gateway.settings.credentials_configured
    # A Redis outage or an open breaker degrades the gateway but it still answers (cache fails
    # open; breakers answer fast). Without credentials it can serve no market data at all.
    ready_now = configured
    degraded = (
        cache_state == "down"
        or store_state == "down"
        or any(b["state"] != "closed" for b in breakers.values())
    )
    body = {
        "status": "ready"
        if ready_now and not degraded
        else ("degraded" if ready_now else "not_ready"),
        "upstream_source": gateway.source,
        "credentials": "configured" if configured else "missing",
        "dependencies": {
            "cache": {"backend": gateway.cache.backend, "state": cache_state},
            # Orders need the store (audit first); market data does not.
            "database": {"backend": gateway.store.dependency, "state": store_state},
        },
        "breakers": breakers,
        "streams": stream_feeds(gateway),
    }
    if not ops_allowed(request, gateway.settings):
        body = {"status": body["status"]}
    if not ready_now:
        # Every non-2xx is problem+json; the readiness details travel as its extensions.
        error = GatewayError(
            ErrorCode.UPSTREAM_NOT_CONFIGURED,
            "Not ready: set ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY",
            extensions=body,
        )
        return problem_response(request, error)
    return JSONResponse(body)


def stream_feeds(gateway: GatewayState) -> dict[str, Any]:
    """Each real-time feed's upstream connection, read live like the breakers (no I/O)."""
    return {
        name: {
            "state": feed.upstream.state.name.lower(),
            "reconnect_in_s": round(feed.upstream.reconnect_in_s, 3),
            "leader": feed.upstream.leader,
            "clients": feed.clients,
        }
        for name, feed in gateway.streams.report().items()
    }


def ops_allowed(request: Request, settings: Settings) -> bool:
    """Whether this caller may read operational detail (OPS_ACCESS)."""
    if settings.ops_access == "open":
        return True
    if settings.ops_access == "internal":
        return request.scope.get(INTERNAL_LISTENER) is True
    if settings.ops_key is None:
        return False  # refused at start-up (Settings); never open by accident
    presented = presented_key(request)
    # Constant time: the comparison must not tell how much of a guess was right.
    return presented is not None and hmac.compare_digest(
        presented.encode(), settings.ops_key.get_secret_value().encode()
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus text exposition (format 1.0.0)",
    openapi_extra=METRICS.openapi_extra(),
)
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    if not ops_allowed(request, gateway.settings):
        where = (
            "is served on the internal listener (OPS_PORT)"
            if gateway.settings.ops_access == "internal"
            else "needs the operations key: `Authorization: Bearer <OPS_KEY>`"
        )
        raise GatewayError(ErrorCode.UNAUTHENTICATED, f"/metrics {where}")
    return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
