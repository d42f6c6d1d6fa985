"""One real answer of every route, checked against the response model the route declares.

The declared models are what `/openapi.json` documents and what the read path's values are typed
as; a body that drifts from its model (a member renamed, added or left out, a wrong type) fails
here. The market is the demo's (`tests/emulator/demo_market.py`): real-shaped data for every
kind, options and a position included.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from app.api import clock, options, stocks, system, trading
from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.demo_market import seed
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.integration

ROUTES = [
    route
    for router in (stocks.router, options.router, trading.router, clock.router, system.router)
    for route in router.routes
    if isinstance(route, APIRoute) and route.response_model is not None
]


def _route(path: str, method: str = "GET") -> APIRoute:
    return next(r for r in ROUTES if r.path == path and method in r.methods)


def test_every_route_with_a_model_is_checked_below() -> None:
    checked = {(r.path, m) for r in ROUTES for m in r.methods}

    assert checked == {(path, method) for path, method, _, _ in REQUESTS}


def _order() -> dict[str, Any]:
    return {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}


# (route path, method, URL, JSON body)
REQUESTS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("/v1/stocks/{symbol}/quote", "GET", "/v1/stocks/AAPL/quote", None),
    ("/v1/stocks/quotes", "GET", "/v1/stocks/quotes?symbols=AAPL,MSFT,ZZZZ,1BAD", None),
    ("/v1/stocks/{symbol}/trade", "GET", "/v1/stocks/AAPL/trade", None),
    ("/v1/stocks/{symbol}/snapshot", "GET", "/v1/stocks/SPY/snapshot", None),
    ("/v1/stocks/{symbol}/bars", "GET", "/v1/stocks/AAPL/bars?timeframe=1Day", None),
    ("/v1/options/contracts", "GET", "/v1/options/contracts?underlying=AAPL", None),
    ("/v1/options/{contract}/quote", "GET", "/v1/options/{contract}/quote", None),
    ("/v1/options/chain/{underlying}", "GET", "/v1/options/chain/AAPL", None),
    ("/v1/account", "GET", "/v1/account", None),
    ("/v1/positions", "GET", "/v1/positions", None),
    ("/v1/orders", "POST", "/v1/orders", _order()),
    ("/v1/orders", "GET", "/v1/orders?status=all", None),
    ("/v1/orders/{order_id}", "GET", "/v1/orders/{order_id}", None),
    ("/v1/clock", "GET", "/v1/clock", None),
    ("/health", "GET", "/health", None),
    ("/ready", "GET", "/ready", None),
]


async def test_each_answer_is_its_declared_model(
    make_gateway: GatewayFactory, emulator: EmulatorControl, emulator_process: EmulatorProcess
) -> None:
    seeded = await seed(emulator_process.base_url)
    gateway = await make_gateway()
    key = await gateway.issue_key("data:read", "trading:read", "trading:write")
    auth = {"Authorization": f"Bearer {key}", "Idempotency-Key": "model-check-1"}
    order_id = ""
    for path, method, url, body in REQUESTS:
        url = url.format(contract=seeded.option_contract, order_id=order_id)
        response = await gateway.request(method, url, json=body, headers=auth)
        assert response.status_code == 200, (url, response.text)
        answer = response.json()
        if method == "POST":
            order_id = answer["id"]
        model = _route(path, method).response_model
        # strict: a string where a number belongs, or a number where a decimal string belongs,
        # is a mismatch, not something to coerce.
        TypeAdapter(model).validate_python(answer, strict=True)
