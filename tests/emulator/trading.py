"""Trading-API handlers: clock, one asset, account. Decimals stay strings as Alpaca sends them."""

from __future__ import annotations

from aiohttp import web

from .responses import json_response, trading_error
from .state import STATE_KEY


async def clock(request: web.Request) -> web.Response:
    """GET /v2/clock"""
    return json_response(request.app[STATE_KEY].clock)


async def account(request: web.Request) -> web.Response:
    """GET /v2/account"""
    return json_response(request.app[STATE_KEY].account)


async def asset(request: web.Request) -> web.Response:
    """GET /v2/assets/{symbol_or_asset_id}: by symbol or id; unknown gives 404 40410000."""
    found = request.app[STATE_KEY].find_asset(request.match_info["symbol_or_asset_id"])
    if found is None:
        raise trading_error(404, 40410000, "asset not found")
    return json_response(found)
