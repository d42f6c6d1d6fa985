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
