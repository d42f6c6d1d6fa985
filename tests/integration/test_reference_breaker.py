"""Asset lookups (unknown symbol vs no data) have a breaker of their own, `reference`: a flood of
made-up symbols while Alpaca's asset endpoint fails opens it, and the door orders go through
(the `trading` breaker) stays closed. Quotes for known symbols keep flowing."""

from __future__ import annotations

import string
import uuid
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

ASSETS = "/v2/assets/*"
ORDER: dict[str, Any] = {
    "symbol": "AAPL",
    "qty": "1",
    "side": "buy",
    "type": "limit",
    "time_in_force": "day",
    "limit_price": "101.25",
}
# Distinct symbols Alpaca does not know: each needs its own asset lookup.
UNKNOWN_SYMBOLS = [f"QZ{a}{b}" for a in "XY" for b in string.ascii_uppercase[:13]]


async def test_unknown_symbol_flood_opens_the_reference_breaker_not_the_trading_one(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_quote("AAPL", QUOTE)  # AAPL is a known asset with data
    gateway = await make_gateway(order_reconcile_first_wait_s=0.05)
    key = await gateway.issue_key("trading:read", "trading:write")
    auth = {"Authorization": f"Bearer {key}"}
    await emulator.add_fault(ASSETS, "status_500")

    flood = [await gateway.get(f"/v1/stocks/{symbol}/quote") for symbol in UNKNOWN_SYMBOLS]

    codes = [r.json()["code"] for r in flood]
    # Never "unknown" or "no data": the lookup failed, so the symbol cannot be classified.
    assert set(codes) <= {"UPSTREAM_UNAVAILABLE", "CIRCUIT_OPEN", "UPSTREAM_RATE_LIMITED"}, codes
    assert "CIRCUIT_OPEN" in codes

    # Meanwhile orders, the account and known symbols' quotes go on.
    placed = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": f"bot-{uuid.uuid4()}"}
    )
    account = await gateway.get("/v1/account", headers=auth)
    quote = await gateway.get("/v1/stocks/AAPL/quote")

    assert placed.status_code == 200, placed.text
    (held,) = await emulator.orders()
    assert placed.json()["id"] == held["id"]
    assert account.status_code == 200, account.text
    assert quote.status_code == 200, quote.text
    assert (quote.json()["bid_price"], quote.json()["ask_price"]) == (QUOTE["bp"], QUOTE["ap"])
    assert quote.json()["timestamp"] == QUOTE["t"]
    breakers = (await gateway.get("/ready")).json()["breakers"]
    assert breakers["reference"]["state"] == "open"
    assert breakers["trading"]["state"] == "closed"
    assert breakers["data"]["state"] == "closed"
    asset_calls = sum(n for path, n in (await emulator.calls()).items() if "/v2/assets/" in path)
    assert asset_calls < len(UNKNOWN_SYMBOLS)  # once open, the breaker spares Alpaca
