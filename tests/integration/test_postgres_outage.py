"""PostgreSQL stops under a running gateway: orders are refused (never sent unrecorded), market
data keeps flowing, and every order that reached Alpaca has its audit row. An order Alpaca
accepted while the store failed (stopped mid-flight, or refusing the outcome's update) is answered
with Alpaca's order, never with a 500 that invites a second one."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from typing import Any

import asyncpg
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


def stop_fast(server: PrivatePostgres) -> None:
    """`pg_ctl -m fast stop`: the server ends every session and shuts down cleanly, so a query
    under way fails mid-protocol rather than with a refused connection."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    pg_ctl = [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "fast", "-w"]
    subprocess.run([*as_postgres, *pg_ctl, "stop"], check=True, capture_output=True, timeout=60)


async def calls_reach(emulator: EmulatorControl, path: str, count: int) -> None:
    for _ in range(200):
        if await emulator.calls_to(path) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was not called {count} time(s)")


async def test_order_accepted_while_postgres_stops_is_answered_with_alpacas_order(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(database_url=private_postgres.url, trading_timeout_s=10)
    key = await gateway.issue_key("trading:write")
    idempotency_key = f"pg-{uuid.uuid4()}"
    # The audit row is written, then Alpaca takes its time: PostgreSQL stops meanwhile.
    await emulator.add_fault("/v2/orders", "latency", count=1, delay_ms=2000)
    submit = asyncio.ensure_future(
        gateway.post(
            "/v1/orders",
            json=ORDER,
            headers={"X-API-Key": key, "Idempotency-Key": idempotency_key},
        )
    )
    await calls_reach(emulator, "/v2/orders", 1)

    await asyncio.to_thread(stop_fast, private_postgres)
    stopped_before_answer = not submit.done()
    response = await submit

    assert stopped_before_answer  # the stop happened while the order was in flight
    assert response.status_code == 200, response.text
    held = await emulator.orders()
    assert [o["client_order_id"] for o in held] == [idempotency_key]
    answer: dict[str, Any] = response.json()
    assert answer["id"] == held[0]["id"]
    assert await emulator.calls_to("/v2/orders") == 1

    private_postgres.resume()
    rows = await audits_after_restart(gateway.state.store, idempotency_key)
    # Recorded before it was sent; its outcome could not be written, and the row says so.
    assert [r.status for r in rows] == ["pending"]


async def audit_update_under_way(url: str) -> bool:
    connection = await asyncpg.connect(url)
    try:
        busy = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE state = 'active' AND query LIKE 'UPDATE order_audit%'"
        )
    finally:
        await connection.close()
    return bool(busy)


async def on_audit_update(url: str, body: str) -> None:
    """A trigger on the audit's outcome update (the gateway's migrations made the table)."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            f"CREATE FUNCTION test_audit_update() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {body} RETURN NEW; END $$;"
            " CREATE TRIGGER test_audit_update BEFORE UPDATE ON order_audit"
            " FOR EACH ROW EXECUTE FUNCTION test_audit_update();"
        )
    finally:
        await connection.close()


async def test_postgres_stopping_during_the_outcome_update_still_answers_alpacas_order(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(database_url=private_postgres.url)
    key = await gateway.issue_key("trading:write")
    # The outcome update takes a while (within the store's 1 s statement timeout): the server
    # stops in the middle of it, so the query fails mid-protocol.
    await on_audit_update(private_postgres.url, "PERFORM pg_sleep(0.8);")
    idempotency_key = f"pg-{uuid.uuid4()}"
    submit = asyncio.ensure_future(
        gateway.post(
            "/v1/orders",
            json=ORDER,
            headers={"X-API-Key": key, "Idempotency-Key": idempotency_key},
        )
    )
    for _ in range(200):
        if await audit_update_under_way(private_postgres.url):
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the audit's outcome update never started")

    await asyncio.to_thread(stop_fast, private_postgres)
    response = await submit

    assert response.status_code == 200, response.text
    (held,) = await emulator.orders()
    assert held["client_order_id"] == idempotency_key
    assert response.json()["id"] == held["id"]
    assert await emulator.calls_to("/v2/orders") == 1


async def test_an_unforeseen_store_error_after_alpaca_accepted_still_answers_the_order(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(database_url=private_postgres.url)
    key = await gateway.issue_key("trading:write")
    # Not "unavailable": the server is up and refuses this one statement.
    await on_audit_update(private_postgres.url, "RAISE EXCEPTION 'audit rows are frozen';")
    idempotency_key = f"pg-{uuid.uuid4()}"

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={"X-API-Key": key, "Idempotency-Key": idempotency_key}
    )

    assert response.status_code == 200, response.text  # never a 500 for a placed order
    (held,) = await emulator.orders()
    assert held["client_order_id"] == idempotency_key
    assert response.json()["id"] == held["id"]
    rows = await gateway.state.store.order_audits(idempotency_key)
    assert [r.status for r in rows] == ["pending"]  # the outcome could not be written
