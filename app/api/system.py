"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.operation import Operation
from app.api.params import gateway_of
from app.api.problems import problem_response
from app.errors import ErrorCode, GatewayError
from app.models.system import Health, Readiness

router = APIRouter(tags=["system"])
HEALTH = Operation(None)
READY = Operation(None, errors=frozenset({ErrorCode.UPSTREAM_NOT_CONFIGURED}))
METRICS = Operation(None)


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
    await gateway.cache.ping()  # readiness reports Redis as it is now, not as last seen
    cache_state = gateway.cache.status()
    breakers: dict[str, Any] = {}
    for name, breaker in gateway.breakers.items():
        snap = breaker.snapshot()
        breakers[name] = {
            "state": snap.state.value,
            "calls_in_window": snap.calls_in_window,
            "failure_rate": snap.failure_rate,
            "slow_call_rate": snap.slow_call_rate,
            "retry_after_s": round(snap.retry_after_s, 3),
        }
    store_state = "up" if await gateway.store.ping() else "down"
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
    }
    if not ready_now:
        # Every non-2xx is problem+json; the readiness details travel as its extensions.
        error = GatewayError(
            ErrorCode.UPSTREAM_NOT_CONFIGURED,
            "Not ready: set ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY",
            extensions=body,
        )
        return problem_response(request, error)
    return JSONResponse(body)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus text exposition (format 1.0.0)",
    openapi_extra=METRICS.openapi_extra(),
)
async def metrics(request: Request) -> Response:
    return Response(gateway_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
