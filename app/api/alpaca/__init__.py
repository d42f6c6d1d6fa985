"""The Alpaca-compatible face: Alpaca's REST paths under `/alpaca`, for bots that use alpaca-py
unchanged (`url_override=GATEWAY + "/alpaca"`) and get the gateway's promises behind them.

Data and trading paths share the one prefix (they do not overlap). Not in `/openapi.json`, which
documents the gateway's own /v1 contract; Alpaca's documents describe this one.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.alpaca import data, streams, trading
from app.api.alpaca.errors import PREFIX, alpaca_error
from app.errors import ErrorCode, GatewayError

router = APIRouter(include_in_schema=False)
router.include_router(data.router)
router.include_router(trading.router)
router.include_router(streams.router)  # websocket routes: the HTTP catch-all below skips them


@router.api_route(PREFIX + "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def not_served(request: Request) -> Response:
    """A path the face does not serve, answered in Alpaca's shape (alpaca-py reads `message`)."""
    error = GatewayError(
        ErrorCode.ROUTE_NOT_FOUND,
        f"The gateway's Alpaca face does not serve {request.method} {request.url.path}",
    )
    return alpaca_error(request, error)
