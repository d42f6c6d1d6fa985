"""The market clock, as Alpaca's trading API reports it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api import render
from app.api.auth import authorize
from app.api.params import gateway_of
from app.api.problems import PROBLEM_RESPONSES
from app.errors import GatewayError
from app.keys import Scope
from app.models.market_data import MarketClock

router = APIRouter(prefix="/v1", tags=["market"], responses=PROBLEM_RESPONSES)


@router.get("/clock", response_model=MarketClock, summary="Market clock (is the market open?)")
async def clock(request: Request) -> Response:
    await authorize(request, Scope.DATA_READ)
    gateway = gateway_of(request)
    outcome = await gateway.stocks.clock()
    if isinstance(outcome, GatewayError):
        raise outcome
    gateway.metrics.market_open.set(1 if outcome.value["is_open"] else 0)
    now = render.now()
    body = dict(outcome.value)
    body["provenance"] = render.provenance(
        body["timestamp"], outcome, feed=None, source=gateway.source, now=now
    )
    return render.json_response(body, cache_states={outcome.cache})
