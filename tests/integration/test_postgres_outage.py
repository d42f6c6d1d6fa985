"""PostgreSQL stops under a running gateway: orders are refused (never sent unrecorded), market
data keeps flowing, and every order that reached Alpaca has its audit row."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest

from app.keys import parse_key
from app.storage import OrderAuditRow, Store, StoreUnavailable
from tests.conftest import GatewayFactory, PrivatePostgres
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration


async def audits_after_restart(store: Store, client_order_id: str) -> list[OrderAuditRow]:
    # Pooled connections died with the server: each fails once, then new ones are made.
    for _ in range(15):
        try:
            return await store.order_audits(client_order_id)
        except StoreUnavailable:
            continue
    return await store.order_audits(client_order_id)


ORDER = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}


async def test_orders_refused_and_data_unaffected_while_postgres_is_down(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(database_url=private_postgres.url, gateway_anonymous_data=False)
    key = await gateway.issue_key("data:read", "trading:write")
    auth = {"X-API-Key": key}

    def submit(idempotency_key: str):  # type: ignore[no-untyped-def]
        return gateway.post(
            "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": idempotency_key}
        )

    before = await submit(f"pg-{uuid.uuid4()}")
    assert before.status_code == 200, before.text
    assert (await gateway.get("/v1/stocks/AAPL/quote", headers=auth)).status_code == 200

    private_postgres.stop_immediately()
    refused = [await submit(f"pg-{uuid.uuid4()}") for _ in range(3)]
    quote = await gateway.get("/v1/stocks/AAPL/quote", headers=auth)
    ready = await gateway.get("/ready")

    assert {r.status_code for r in refused} == {503}
    assert {r.json()["code"] for r in refused} == {"AUDIT_UNAVAILABLE"}
    assert quote.status_code == 200  # the key was seen; market data never needs the store
    assert ready.json()["dependencies"]["database"]["state"] == "down"
    held = await emulator.orders()
    assert len(held) == 1  # nothing was sent without its audit row

    private_postgres.resume()
    for order in held:
        rows = await audits_after_restart(gateway.state.store, order["client_order_id"])
        assert [r.status for r in rows] == ["submitted"]
        assert rows[0].alpaca_order is not None
        assert rows[0].alpaca_order["id"] == order["id"]


async def test_cli_revocation_takes_effect_at_once_through_postgres(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    # A long key cache: only the revocation notice can explain a prompt refusal.
    gateway = await make_gateway(
        database_url=private_postgres.url, gateway_anonymous_data=False, key_cache_ttl_s=60
    )
    key = await gateway.issue_key("data:read")
    assert (await gateway.get("/v1/clock", headers={"X-API-Key": key})).status_code == 200
    parsed = parse_key(key)
    assert parsed is not None

    env = {**os.environ, "DATABASE_URL": private_postgres.url}
    revoke = [sys.executable, "-m", "app.cli", "keys", "revoke", parsed[0]]
    done = await asyncio.to_thread(
        subprocess.run, revoke, env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr

    statuses = []
    for _ in range(50):
        statuses.append((await gateway.get("/v1/clock", headers={"X-API-Key": key})).status_code)
        if statuses[-1] == 401:
            break
        await asyncio.sleep(0.02)
    assert statuses[-1] == 401, statuses
    assert len(statuses) <= 25  # well within half a second, against a 60 s cache
