"""Typed upstream failures land in the store's error_logs table, off the request path."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration


def _rows(path: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as connection:
        return list(connection.execute("SELECT code, request_id, context FROM error_logs"))


async def test_upstream_failure_is_recorded_with_its_request_id(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway()
    await emulator.set_quote("AAPL", QUOTE)
    await emulator.add_fault("/v2/stocks/quotes/latest", "status_500", count=1)

    failed = await gateway.get("/v1/stocks/AAPL/quote", headers={"X-Request-ID": "err-log-1"})
    fine = await gateway.get("/v1/stocks/NOPE/quote")  # a 404 is an answer, not a failure

    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert fine.status_code == 404
    path = gateway.state.settings.embedded_db_path
    for _ in range(100):
        rows = _rows(path)
        if rows:
            break
        await asyncio.sleep(0.02)
    assert [(code, request_id) for code, request_id, _ in rows] == [
        ("UPSTREAM_UNAVAILABLE", "err-log-1")
    ]
    context = json.loads(rows[0][2])
    assert context["upstream"] == "data"
    assert context["path"] == "/v1/stocks/AAPL/quote"


async def test_a_batch_records_each_failed_symbol_as_a_single_quote_would(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    """A symbol that failed inside a batch is the same failure as on its own: counted under its
    code and, when it is Alpaca's trouble, kept in error_logs."""
    gateway = await make_gateway()
    await emulator.set_state(quotes={"MSFT": QUOTE}, assets=["AAPL"])
    await emulator.add_fault("/v2/assets/*", "status_500")  # AAPL cannot be classified

    response = await gateway.get(
        "/v1/stocks/quotes", params={"symbols": "AAPL,MSFT"}, headers={"X-Request-ID": "batch-1"}
    )
    metrics = (await gateway.get("/metrics")).text

    assert response.status_code == 200, response.text
    assert response.json()["errors"]["AAPL"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert 'gateway_http_errors_total{code="UPSTREAM_UNAVAILABLE"} 1.0' in metrics
    path = gateway.state.settings.embedded_db_path
    for _ in range(100):
        rows = _rows(path)
        if rows:
            break
        await asyncio.sleep(0.02)
    assert [(code, request_id) for code, request_id, _ in rows] == [
        ("UPSTREAM_UNAVAILABLE", "batch-1")
    ]
    context = json.loads(rows[0][2])
    assert context == {"path": "/v1/stocks/quotes", "upstream": "reference", "symbol": "AAPL"}
