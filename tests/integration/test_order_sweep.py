"""The order sweep settles audit rows whose outcome the gateway never learned, from Alpaca.

The stuck rows are made for real: a pending row recorded through the store's own write path,
for an order placed at the emulator directly (the gateway died before recording Alpaca's
answer) or never sent at all. The emulator is Alpaca; its request log proves the sweep only
looks orders up and never sends one. Every case runs on PostgreSQL and on the embedded store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.keys import generate_key, key_prefix
from app.models.trading import OrderRequest
from app.order_sweep import OrderSweep
from app.orders import body_hash
from app.storage import ApiKeyRow, EmbeddedStore, OrderAuditRequest, OrderAuditRow, Store
from app.storage.records import utc_now
from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_orders import ORDER, idempotency, trader
from tests.integration.test_storage import postgres_server_url, unique_database
from tests.served import ServedGateway, emulator_env

pytestmark = pytest.mark.integration

BY_CLIENT_ORDER_ID = "/v2/orders:by_client_order_id"
AN_HOUR_ON = timedelta(hours=1)


@pytest.fixture(params=["postgres", "embedded"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A gateway's store settings: a new PostgreSQL database, or an embedded file. Sync, so
    the database is made and dropped outside the test's event loop."""
    if request.param == "postgres":
        with unique_database(postgres_server_url()) as url:
            yield {"database_url": url}
    else:
        yield {"embedded_db_path": str(tmp_path / "gateway.sqlite3")}


@pytest.fixture
async def tradable(emulator: EmulatorControl) -> EmulatorControl:
    await emulator.set_asset("AAPL", {})
    return emulator


@pytest.fixture
def on_store(store_settings: dict[str, Any], make_gateway: GatewayFactory) -> GatewayFactory:
    """Gateways on this test's store. Requested in this order, the store outlives them (a
    database dropped under an open pool would fail its connections)."""

    async def make(**settings: Any) -> GatewayClient:
        # The background sweep is off unless a test says otherwise: tests run its passes
        # themselves, with their own clock.
        return await make_gateway(**{"order_sweep_interval_s": 0, **store_settings, **settings})

    return make


def sweep_of(
    gateway: GatewayClient,
    *,
    later_by: timedelta = AN_HOUR_ON,
    never_placed_after_s: float = 120,
    batch_size: int = 100,
) -> OrderSweep:
    """A sweep of this gateway's store through its own OrderDesk, run `later_by` from now."""
    state = gateway.state

    def clock() -> datetime:
        return utc_now() + later_by

    return OrderSweep(
        state.orders,
        state.store,
        state.metrics,
        interval_s=30,
        min_age_s=30,
        never_placed_after_s=never_placed_after_s,
        batch_size=batch_size,
        clock=clock,
    )


async def record_pending(store: Store, key: str, order: dict[str, Any] = ORDER) -> int:
    """The row OrderDesk writes before it sends an order, through the store's own write path."""
    request = OrderRequest.model_validate(order)
    return await store.insert_order_audit(
        OrderAuditRequest(
            client_order_id=key,
            request_body=request.model_dump(exclude_none=True),
            body_hash=body_hash(request),
            request_id=f"req-{key}",
        )
    )


async def place_at_alpaca(
    emulator_process: EmulatorProcess, key: str, order: dict[str, Any] = ORDER
) -> dict[str, Any]:
    """What the dead gateway's POST did: the order, placed at Alpaca under the key."""
    async with httpx.AsyncClient(base_url=emulator_process.base_url, timeout=5) as client:
        response = await client.post(
            "/v2/orders",
            json={**order, "client_order_id": key},
            headers=emulator_process.auth_headers,
        )
    assert response.status_code == 200, response.text
    placed: dict[str, Any] = response.json()
    return placed


async def only_row(store: Store, key: str) -> OrderAuditRow:
    (row,) = await store.order_audits(key)
    return row


def swept(gateway: GatewayClient, result: str) -> float | None:
    registry = gateway.state.metrics.registry
    return registry.get_sample_value("gateway_order_sweep_rows_total", {"result": result})


def unsettled_gauge(gateway: GatewayClient) -> float | None:
    return gateway.state.metrics.registry.get_sample_value("gateway_order_audit_unsettled_rows")


async def posts(emulator: EmulatorControl) -> int:
    return sum(1 for r in await emulator.requests() if r["method"] == "POST")


# --- the two stuck kinds ---------------------------------------------------------------------
async def test_sweep_reconciles_a_placed_order_and_settles_a_never_sent_one_without_sending(
    tradable: EmulatorControl,
    emulator_process: EmulatorProcess,
    on_store: GatewayFactory,
) -> None:
    gateway = await on_store()
    store = gateway.state.store
    placed_key, never_sent_key = idempotency(), idempotency()
    await record_pending(store, placed_key)
    placed = await place_at_alpaca(emulator_process, placed_key)
    await record_pending(store, never_sent_key)
    await tradable.reset_calls()

    results = await sweep_of(gateway).sweep()

    assert dict(results) == {"reconciled": 1, "never_placed": 1}
    reconciled = await only_row(store, placed_key)
    assert reconciled.status == "reconciled"
    assert reconciled.alpaca_order is not None
    assert reconciled.alpaca_order["id"] == placed["id"]
    assert (reconciled.error_code, reconciled.error_detail) == (None, None)
    never_placed = await only_row(store, never_sent_key)
    assert never_placed.status == "failed"
    assert never_placed.alpaca_order is None
    assert never_placed.error_code == "ORDER_NOT_FOUND"
    detail = json.loads(never_placed.error_detail or "{}")
    assert detail["detail"].startswith("Never placed")
    assert detail["client_order_id"] == never_sent_key
    # Looked up, once each; nothing was sent, and Alpaca holds the one order it held.
    assert await posts(tradable) == 0
    assert await tradable.calls() == {BY_CLIENT_ORDER_ID: 2}
    assert [o["id"] for o in await tradable.orders()] == [placed["id"]]
    assert (swept(gateway, "reconciled"), swept(gateway, "never_placed")) == (1, 1)
    assert swept(gateway, "still_unknown") == 0
    assert unsettled_gauge(gateway) == 0


async def test_a_settled_row_is_answered_to_a_retry_without_asking_alpaca(
    tradable: EmulatorControl,
    emulator_process: EmulatorProcess,
    on_store: GatewayFactory,
) -> None:
    gateway, auth = await trader(on_store)
    key = idempotency()
    await record_pending(gateway.state.store, key)
    placed = await place_at_alpaca(emulator_process, key)
    await sweep_of(gateway).sweep()
    await tradable.reset_calls()

    retry = await gateway.post("/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key})

    assert retry.status_code == 200, retry.text
    assert retry.json()["id"] == placed["id"]
    assert await tradable.calls() == {}


async def test_an_order_alpaca_holds_with_other_terms_is_kept_and_a_retry_is_a_conflict(
    tradable: EmulatorControl,
    emulator_process: EmulatorProcess,
    on_store: GatewayFactory,
) -> None:
    gateway, auth = await trader(on_store)
    key = idempotency()
    await record_pending(gateway.state.store, key)
    # Someone used the key at Alpaca directly, for three shares instead of two.
    placed = await place_at_alpaca(emulator_process, key, {**ORDER, "qty": 3})

    assert dict(await sweep_of(gateway).sweep()) == {"reconciled": 1}

    row = await only_row(gateway.state.store, key)
    assert row.status == "reconciled"
    assert row.alpaca_order is not None
    assert (row.alpaca_order["id"], row.alpaca_order["qty"]) == (placed["id"], "3")
    assert row.error_code == "IDEMPOTENCY_CONFLICT"
    assert "terms differ" in json.loads(row.error_detail or "{}")["detail"]
    retry = await gateway.post("/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key})
    assert retry.status_code == 409, retry.text
    assert retry.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert len(await tradable.orders()) == 1
    assert await posts(tradable) == 1  # the one placed at Alpaca directly


# --- what leaves a row pending -----------------------------------------------------------------
@pytest.mark.parametrize("fault", ["status_500", "status_503", "malformed_json", "hang"])
async def test_a_failed_lookup_leaves_the_row_pending_and_counts_it_still_unknown(
    fault: str,
    tradable: EmulatorControl,
    on_store: GatewayFactory,
) -> None:
    gateway = await on_store(trading_timeout_s=0.5)
    key = idempotency()
    await record_pending(gateway.state.store, key)
    await tradable.add_fault(BY_CLIENT_ORDER_ID, fault)  # type: ignore[arg-type]

    results = await sweep_of(gateway).sweep()

    assert dict(results) == {"still_unknown": 1}
    row = await only_row(gateway.state.store, key)
    assert (row.status, row.alpaca_order, row.error_code) == ("pending", None, None)
    assert swept(gateway, "still_unknown") == 1
    assert unsettled_gauge(gateway) == 1
    assert await posts(tradable) == 0

    # Alpaca answers again: the next pass settles the row (never placed).
    await tradable.clear_faults()
    assert dict(await sweep_of(gateway).sweep()) == {"never_placed": 1}
    assert (await only_row(gateway.state.store, key)).status == "failed"
    assert unsettled_gauge(gateway) == 0


async def test_not_found_is_not_never_placed_while_a_submit_could_still_be_sending(
    tradable: EmulatorControl, on_store: GatewayFactory
) -> None:
    gateway = await on_store()
    key = idempotency()
    await record_pending(gateway.state.store, key)

    # 60 s on: old enough to look up (30 s), too young to call absent (120 s).
    results = await sweep_of(gateway, later_by=timedelta(seconds=60)).sweep()

    assert dict(results) == {"still_unknown": 1}
    assert (await only_row(gateway.state.store, key)).status == "pending"
    assert await tradable.calls() == {BY_CLIENT_ORDER_ID: 1}


async def test_rows_younger_than_the_minimum_age_are_not_looked_up(
    tradable: EmulatorControl, on_store: GatewayFactory
) -> None:
    gateway = await on_store()
    key = idempotency()
    await record_pending(gateway.state.store, key)

    results = await sweep_of(gateway, later_by=timedelta(seconds=0)).sweep()

    assert dict(results) == {}
    assert (await only_row(gateway.state.store, key)).status == "pending"
    assert await tradable.calls() == {}
    assert unsettled_gauge(gateway) == 0  # not yet past the threshold


async def test_a_submit_under_way_is_left_to_itself(
    tradable: EmulatorControl, on_store: GatewayFactory
) -> None:
    gateway = await on_store(trading_timeout_s=10)
    auth = {"X-API-Key": await gateway.issue_key("trading:write")}
    key = idempotency()
    await tradable.add_fault("/v2/orders", "hang", count=1)  # held until faults are cleared
    submit = asyncio.ensure_future(
        gateway.post("/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key})
    )
    await calls_reach(tradable, "/v2/orders", 1)
    assert (await only_row(gateway.state.store, key)).status == "pending"

    results = await sweep_of(gateway).sweep()

    assert dict(results) == {}
    assert await tradable.calls_to(BY_CLIENT_ORDER_ID) == 0
    await tradable.clear_faults()  # the held POST goes on and places the order
    response = await submit
    assert response.status_code == 200, response.text
    assert (await only_row(gateway.state.store, key)).status == "submitted"
    assert len(await tradable.orders()) == 1


async def test_two_gateways_sweeping_one_store_settle_each_row_once(
    tradable: EmulatorControl,
    emulator_process: EmulatorProcess,
    on_store: GatewayFactory,
) -> None:
    first = await on_store()
    second = await on_store()
    placed, never_sent = [idempotency() for _ in range(4)], [idempotency() for _ in range(4)]
    for key in placed:
        await record_pending(first.state.store, key)
        await place_at_alpaca(emulator_process, key)
    for key in never_sent:
        await record_pending(first.state.store, key)

    one, other = await asyncio.gather(sweep_of(first).sweep(), sweep_of(second).sweep())

    # Both looked every row up; each row was settled by exactly one of them.
    assert one + other == {"reconciled": 4, "never_placed": 4}
    for key in placed:
        assert (await only_row(first.state.store, key)).status == "reconciled"
    for key in never_sent:
        assert (await only_row(first.state.store, key)).status == "failed"
    assert len(await tradable.orders()) == 4
    assert await posts(tradable) == 4  # the four the dead gateway placed


async def test_a_pass_is_bounded_by_the_batch_size_oldest_first(
    tradable: EmulatorControl, on_store: GatewayFactory
) -> None:
    gateway = await on_store()
    keys = [idempotency() for _ in range(5)]
    for key in keys:
        await record_pending(gateway.state.store, key)

    assert dict(await sweep_of(gateway, batch_size=2).sweep()) == {"never_placed": 2}

    statuses = [(await only_row(gateway.state.store, key)).status for key in keys]
    assert statuses == ["failed", "failed", "pending", "pending", "pending"]
    assert await tradable.calls() == {BY_CLIENT_ORDER_ID: 2}
    assert unsettled_gauge(gateway) == 3


async def test_a_row_the_submit_marked_unknown_is_settled_too(
    tradable: EmulatorControl, on_store: GatewayFactory
) -> None:
    gateway, auth = await trader(on_store, order_reconcile_attempts=2)
    key = idempotency()
    # Accepted, the answer lost, and every lookup the submit makes fails: ORDER_STATE_UNKNOWN.
    await tradable.add_fault("/v2/orders", "accept_then_500", count=1)
    lookups_fail = await tradable.add_fault(BY_CLIENT_ORDER_ID, "status_500")
    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )
    assert response.json()["code"] == "ORDER_STATE_UNKNOWN"
    assert (await only_row(gateway.state.store, key)).status == "unknown"
    await tradable.remove_fault(lookups_fail)

    assert dict(await sweep_of(gateway).sweep()) == {"reconciled": 1}

    row = await only_row(gateway.state.store, key)
    (held,) = await tradable.orders()
    assert row.status == "reconciled"
    assert row.alpaca_order is not None
    assert row.alpaca_order["id"] == held["id"]


# --- the background sweep, in a gateway -----------------------------------------------------------
async def test_the_start_up_sweep_settles_rows_left_by_an_earlier_gateway(
    tradable: EmulatorControl,
    emulator_process: EmulatorProcess,
    on_store: GatewayFactory,
) -> None:
    # Short bounds: one reconcile lookup of at most 0.2 s; a row is looked up from 0.1 s of
    # age and called never placed from 0.7 s.
    fast = {
        "trading_timeout_s": 0.2,
        "order_reconcile_attempts": 1,
        "order_sweep_min_age_s": 0.1,
        "order_sweep_never_placed_after_s": 0.7,
        "order_sweep_interval_s": 60,
    }
    earlier = await on_store()
    placed_key, never_sent_key = idempotency(), idempotency()
    await record_pending(earlier.state.store, placed_key)
    placed = await place_at_alpaca(emulator_process, placed_key)
    await record_pending(earlier.state.store, never_sent_key)
    await asyncio.sleep(0.8)
    await tradable.reset_calls()

    gateway = await on_store(**fast)

    rows = await settled(gateway.state.store, [placed_key, never_sent_key])
    assert [(r.status, (r.alpaca_order or {}).get("id")) for r in rows] == [
        ("reconciled", placed["id"]),
        ("failed", None),
    ]
    assert await posts(tradable) == 0
    assert (swept(gateway, "reconciled"), swept(gateway, "never_placed")) == (1, 1)


async def test_no_sweep_runs_when_its_interval_is_zero(
    tradable: EmulatorControl, on_store: GatewayFactory
) -> None:
    earlier = await on_store()
    key = idempotency()
    await record_pending(earlier.state.store, key)
    await asyncio.sleep(0.3)

    await on_store(order_sweep_min_age_s=0.1)
    await asyncio.sleep(0.3)

    assert (await only_row(earlier.state.store, key)).status == "pending"
    assert await tradable.calls() == {}


async def settled(store: Store, keys: list[str], timeout_s: float = 10) -> list[OrderAuditRow]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        rows = [await only_row(store, key) for key in keys]
        if all(r.status not in ("pending", "unknown") for r in rows):
            return rows
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"rows still unsettled: {[(r.id, r.status) for r in rows]}")
        await asyncio.sleep(0.05)


async def calls_reach(emulator: EmulatorControl, path: str, count: int) -> None:
    for _ in range(400):
        if await emulator.calls_to(path) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} was not called {count} time(s)")


# --- a real crash ---------------------------------------------------------------------------------
async def test_a_gateway_killed_mid_submit_settles_its_rows_when_started_again(
    tradable: EmulatorControl, emulator_process: EmulatorProcess, tmp_path: Path
) -> None:
    database = tmp_path / "gateway.sqlite3"
    env = emulator_env(
        emulator_process,
        EMBEDDED_DB_PATH=str(database),
        LOG_JSON="true",
        LOG_LEVEL="INFO",
        # A submit lasts at most 3 x 3 s (lookup, POST, one reconcile lookup): "not found"
        # means never placed from 9.5 s on. Rows are looked up from 1 s of age, every second.
        TRADING_TIMEOUT_S="3",
        ORDER_RECONCILE_ATTEMPTS="1",
        ORDER_SWEEP_MIN_AGE_S="1",
        ORDER_SWEEP_NEVER_PLACED_AFTER_S="9.5",
        ORDER_SWEEP_INTERVAL_S="1",
    )
    for shared in ("DATABASE_URL", "REDIS_URL"):
        env.pop(shared, None)
    headers = {"X-API-Key": await issue_key(database, "trading:write")}
    placed_key, never_sent_key = idempotency(), idempotency()

    # uvicorn with one worker serves in its own process: SIGKILL stops the whole gateway.
    with ServedGateway(env, tmp_path / "first.log", server="uvicorn") as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as client:
            # Alpaca accepts the first order and its answer is held; the second is held unsent.
            await tradable.add_fault("/v2/orders", "accept_then_hang", count=1)
            placing = asyncio.ensure_future(
                client.post(
                    "/v1/orders", json=ORDER, headers={**headers, "Idempotency-Key": placed_key}
                )
            )
            await calls_reach(tradable, "/v2/orders", 1)
            await tradable.add_fault("/v2/orders", "hang", count=1)
            sending = asyncio.ensure_future(
                client.post(
                    "/v1/orders", json=ORDER, headers={**headers, "Idempotency-Key": never_sent_key}
                )
            )
            await calls_reach(tradable, "/v2/orders", 2)
            first.kill()  # the server and its worker, mid-submit
            for lost in await asyncio.gather(placing, sending, return_exceptions=True):
                assert isinstance(lost, httpx.TransportError), lost

    store = await EmbeddedStore.open(database)
    try:
        killed = [await only_row(store, key) for key in (placed_key, never_sent_key)]
        assert [r.status for r in killed] == ["pending", "pending"]  # what the crash left
        (held,) = await tradable.orders()
        assert held["client_order_id"] == placed_key

        with ServedGateway(env, tmp_path / "second.log", server="uvicorn") as second:
            rows = await settled(store, [placed_key, never_sent_key], timeout_s=30)
            async with httpx.AsyncClient(base_url=second.base_url, timeout=5) as client:
                metrics = (await client.get("/metrics")).text
            log = second.log_lines()
    finally:
        await store.close()

    placed_row, never_placed_row = rows
    assert placed_row.status == "reconciled"
    assert placed_row.alpaca_order is not None
    assert placed_row.alpaca_order["id"] == held["id"]
    assert (never_placed_row.status, never_placed_row.error_code) == ("failed", "ORDER_NOT_FOUND")
    # Exactly one order at Alpaca, and only the two POSTs the first gateway made.
    assert [o["id"] for o in await tradable.orders()] == [held["id"]]
    assert await posts(tradable) == 2
    assert 'gateway_order_sweep_rows_total{result="reconciled"} 1.0' in metrics
    assert 'gateway_order_sweep_rows_total{result="never_placed"} 1.0' in metrics
    settled_lines = [json.loads(line) for line in log if "settled by the sweep" in line]
    assert len(settled_lines) == 2, log


async def issue_key(database: Path, *scopes: str) -> str:
    """An API key stored where the served gateway will read it."""
    full, key_id, hashed = generate_key()
    store = await EmbeddedStore.open(database)
    try:
        await store.migrate()
        await store.insert_api_key(
            ApiKeyRow(
                id=key_id,
                name=f"test-{key_id}",
                key_prefix=key_prefix(key_id),
                key_hash=hashed,
                scopes=scopes,
                created_at=utc_now(),
            )
        )
    finally:
        await store.close()
    return full
