"""The market clock, as Alpaca's trading API reports it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import render
from app.api.auth import authorize
from app.api.operation import UPSTREAM, Operation
from app.api.params import gateway_of
from app.errors import GatewayError
from app.keys import Scope
from app.models.market_data import MarketClock

router = APIRouter(prefix="/v1", tags=["market"])
CLOCK = Operation(Scope.DATA_READ, (), UPSTREAM, success_headers=("Cache-Status",))


@router.get(
    "/clock",
    response_model=MarketClock,
    summary="Market clock (is the market open?)",
    openapi_extra=CLOCK.openapi_extra(),
)
async def clock(request: Request) -> Response:
    await authorize(request, CLOCK.scope)
    gateway = gateway_of(request)
    outcome = await gateway.stocks.clock()
    if isinstance(outcome, GatewayError):
        raise outcome
    gateway.market.observed(outcome.value["is_open"])
    now = render.now()
    body = MarketClock(
        **outcome.value,
        provenance=render.provenance(
            outcome.value["timestamp"], outcome, feed=None, source=gateway.source, now=now
        ),
    )
    return render.json_response(body, cache_states={outcome.cache})
