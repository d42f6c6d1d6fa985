"""Orders through the gateway: never sent twice, never lost, always audited first.

The emulator is Alpaca; its order book (`emulator.orders()`) is the ground truth of how many
orders exist. The audit rows are read from the gateway's own store."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.integration

ORDER: dict[str, Any] = {
    "symbol": "AAPL",
    "qty": 2,
    "side": "buy",
    "type": "limit",
    "time_in_force": "gtc",
    "limit_price": "150.10",
}
ORDERS_PATH = "/v2/orders"


async def trader(
    make_gateway: GatewayFactory, **settings: Any
) -> tuple[GatewayClient, dict[str, str]]:
    gateway = await make_gateway(
        order_reconcile_first_wait_s=0.05, trading_timeout_s=0.5, **settings
    )
    key = await gateway.issue_key("trading:read", "trading:write")
    return gateway, {"Authorization": f"Bearer {key}"}


def idempotency() -> str:
    return f"bot-{uuid.uuid4()}"


@pytest.fixture
async def tradable(emulator: EmulatorControl) -> EmulatorControl:
    await emulator.set_asset("AAPL", {})
    return emulator


async def test_order_is_submitted_once_with_the_key_as_client_order_id(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    key = idempotency()

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 200, response.text
    order = response.json()
    assert order["client_order_id"] == key
    assert order["symbol"] == "AAPL"
    assert isinstance(order["qty"], str)  # Alpaca's decimal strings stay strings
    held = await tradable.orders()
    assert [o["client_order_id"] for o in held] == [key]
    assert order["id"] == held[0]["id"]
    rows = await gateway.state.store.order_audits(key)
    assert [r.status for r in rows] == ["submitted"]
    assert rows[0].alpaca_order is not None
    assert rows[0].alpaca_order["id"] == order["id"]


async def test_repeat_with_same_key_and_body_returns_the_original_without_resubmitting(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    headers = {**auth, "Idempotency-Key": idempotency()}
    first = await gateway.post("/v1/orders", json=ORDER, headers=headers)
    calls_before = await tradable.calls_to(ORDERS_PATH)

    again = await gateway.post("/v1/orders", json=ORDER, headers=headers)

    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert await tradable.calls_to(ORDERS_PATH) == calls_before
    assert len(await tradable.orders()) == 1


async def test_same_key_with_a_different_body_is_a_conflict(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    headers = {**auth, "Idempotency-Key": idempotency()}
    await gateway.post("/v1/orders", json=ORDER, headers=headers)

    response = await gateway.post("/v1/orders", json={**ORDER, "qty": 3}, headers=headers)

    assert response.status_code == 409
    assert response.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert len(await tradable.orders()) == 1


async def test_twenty_concurrent_submits_with_one_key_make_one_upstream_order(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    await tradable.add_fault(ORDERS_PATH, "latency", count=1, delay_ms=200)
    headers = {**auth, "Idempotency-Key": idempotency()}

    responses = await asyncio.gather(
        *(gateway.post("/v1/orders", json=ORDER, headers=headers) for _ in range(20))
    )

    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(await tradable.orders()) == 1
    assert await tradable.calls_to(ORDERS_PATH) == 1


async def test_lost_reply_is_reconciled_by_client_order_id_not_resubmitted(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    await tradable.add_fault(ORDERS_PATH, "accept_then_reset", count=1)
    key = idempotency()

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 200, response.text
    held = await tradable.orders()
    assert len(held) == 1
    assert response.json()["id"] == held[0]["id"]
    assert await tradable.calls_to(ORDERS_PATH) == 1  # one POST; the rest were lookups
    assert await tradable.calls_to("/v2/orders:by_client_order_id") >= 1
    assert [r.status for r in await gateway.state.store.order_audits(key)] == ["reconciled"]


@pytest.mark.parametrize("fault", ["accept_then_hang", "accept_then_500"])
async def test_accepted_order_with_a_failed_answer_is_found_and_returned(
    tradable: EmulatorControl, make_gateway: GatewayFactory, fault: str
) -> None:
    gateway, auth = await trader(make_gateway)
    await tradable.add_fault(ORDERS_PATH, fault, count=1)  # type: ignore[arg-type]
    key = idempotency()

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 200, response.text
    assert response.json()["client_order_id"] == key
    assert len(await tradable.orders()) == 1


async def test_unconfirmed_order_is_order_state_unknown_with_its_client_order_id(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway, order_reconcile_attempts=2)
    # The submit never reaches the order book and every lookup fails too.
    await tradable.add_fault(ORDERS_PATH, "reset", count=1)
    await tradable.add_fault("/v2/orders:by_client_order_id", "status_503")
    key = idempotency()

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 504
    body = response.json()
    assert body["code"] == "ORDER_STATE_UNKNOWN"
    assert body["client_order_id"] == key
    assert await tradable.orders() == []
    assert await tradable.calls_to(ORDERS_PATH) == 1  # never resubmitted blindly
    assert [r.status for r in await gateway.state.store.order_audits(key)] == ["unknown"]

    # The client repeats with the same key once Alpaca is reachable: looked up, then sent.
    await tradable.clear_faults()
    again = await gateway.post("/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert len(await tradable.orders()) == 1


async def test_alpaca_rejection_keeps_its_message_and_code(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    await tradable.set_account({"buying_power": "100", "cash": "100"})

    response = await gateway.post(
        "/v1/orders",
        json={**ORDER, "qty": 1000},
        headers={**auth, "Idempotency-Key": idempotency()},
    )

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "ORDER_REJECTED"
    assert body["upstream_status"] == 403
    assert isinstance(body["alpaca_code"], int)
    assert "buying power" in body["detail"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"qty": None}, "qty"),
        ({"type": "limit", "limit_price": None}, "limit_price"),
        ({"side": "hold"}, "side"),
        ({"qty": -1}, "qty"),
        ({"qty": True}, "qty"),
        ({"symbol": "../v2/account"}, "symbol"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_invalid_orders_are_rejected_before_anything_is_recorded_or_sent(
    tradable: EmulatorControl, make_gateway: GatewayFactory, change: dict[str, Any], reason: str
) -> None:
    gateway, auth = await trader(make_gateway)
    body = {k: v for k, v in {**ORDER, **change}.items() if v is not None}
    key = idempotency()

    response = await gateway.post("/v1/orders", json=body, headers={**auth, "Idempotency-Key": key})

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert await tradable.calls_to(ORDERS_PATH) == 0
    assert await gateway.state.store.order_audits(key) == []


async def test_missing_idempotency_key_or_a_different_client_order_id_is_invalid(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)

    missing = await gateway.post("/v1/orders", json=ORDER, headers=auth)
    differing = await gateway.post(
        "/v1/orders",
        json={**ORDER, "client_order_id": "other"},
        headers={**auth, "Idempotency-Key": idempotency()},
    )

    assert missing.status_code == 422
    assert differing.status_code == 422
    assert await tradable.calls_to(ORDERS_PATH) == 0


async def test_order_is_not_sent_when_it_cannot_be_audited(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    await gateway.state.store.close()  # the store is gone: nothing may be sent unrecorded

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": idempotency()}
    )
    quote = await gateway.get("/v1/clock")
    ready = await gateway.get("/ready")

    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["dependencies"]["database"]["state"] == "down"
    assert response.status_code == 503
    assert response.json()["code"] == "AUDIT_UNAVAILABLE"
    assert await tradable.calls_to(ORDERS_PATH) == 0
    assert quote.status_code == 200  # data endpoints are unaffected


async def test_orders_list_get_and_cancel(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    placed = (
        await gateway.post(
            "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": idempotency()}
        )
    ).json()

    listed = await gateway.get("/v1/orders", params={"status": "open"}, headers=auth)
    one = await gateway.get(f"/v1/orders/{placed['id']}", headers=auth)
    cancel = await gateway.delete(f"/v1/orders/{placed['id']}", headers=auth)
    again = await gateway.delete(f"/v1/orders/{placed['id']}", headers=auth)
    unknown = await gateway.get(f"/v1/orders/{uuid.uuid4()}", headers=auth)
    malformed = await gateway.get("/v1/orders/not-a-uuid", headers=auth)

    assert [o["id"] for o in listed.json()] == [placed["id"]]
    assert one.json() == placed
    assert cancel.status_code == 204
    assert again.status_code == 409
    assert again.json()["code"] == "ORDER_NOT_CANCELABLE"
    assert again.json()["alpaca_code"] == 42210000  # Alpaca's own refusal, kept
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "ORDER_NOT_FOUND"
    assert malformed.status_code == 422
    assert malformed.json()["code"] == "VALIDATION_ERROR"


async def test_account_and_positions_pass_decimal_strings_through(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    await tradable.set_account({"buying_power": "245432.61", "cash": "122011.09751111286868"})
    await tradable.set_position(
        "AAPL",
        {
            "symbol": "AAPL",
            "qty": "5",
            "avg_entry_price": "172.6201",
            "market_value": "863.1005",
            "cost_basis": "863.1005",
            "unrealized_pl": "0",
            "side": "long",
        },
    )

    account = (await gateway.get("/v1/account", headers=auth)).json()
    positions = (await gateway.get("/v1/positions", headers=auth)).json()

    assert account["cash"] == "122011.09751111286868"
    assert account["buying_power"] == "245432.61"
    assert positions[0]["avg_entry_price"] == "172.6201"


async def test_an_unknown_symbol_is_rejected_not_mistaken_for_a_duplicate(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)

    response = await gateway.post(
        "/v1/orders",
        json={**ORDER, "symbol": "ZZZQ"},
        headers={**auth, "Idempotency-Key": idempotency()},
    )

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "ORDER_REJECTED"
    assert await emulator.orders() == []


async def test_key_already_used_at_alpaca_for_another_order_is_a_conflict(
    tradable: EmulatorControl, make_gateway: GatewayFactory, emulator_process: EmulatorProcess
) -> None:
    gateway, auth = await trader(make_gateway)
    key = idempotency()
    # Someone used this client_order_id with Alpaca directly, for a different quantity.
    async with httpx.AsyncClient(base_url=emulator_process.base_url) as alpaca:
        direct = await alpaca.post(
            "/v2/orders",
            json={**ORDER, "qty": "7", "client_order_id": key},
            headers=emulator_process.auth_headers,
        )
    assert direct.status_code == 200

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert len(await tradable.orders()) == 1
