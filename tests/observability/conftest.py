"""The gateway's real /metrics exposition, as the name checks of dashboards and rules use it."""

from __future__ import annotations

import pytest

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE


@pytest.fixture
async def exposition(make_gateway: GatewayFactory, emulator: EmulatorControl) -> str:
    """/metrics of an in-process gateway after a success, a miss/hit pair and a failure."""
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway()
    assert (await gateway.get("/v1/stocks/AAPL/quote")).status_code == 200
    assert (await gateway.get("/v1/stocks/AAPL/quote")).status_code == 200
    await emulator.add_fault("/v2/stocks/trades/latest", "status_500", count=1)
    assert (await gateway.get("/v1/stocks/AAPL/trade")).status_code == 503
    response = await gateway.get("/metrics")
    assert response.status_code == 200
    return response.text
