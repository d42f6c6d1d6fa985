"""The Idempotency-Key by meaning, and a key whose earlier attempt's fate is unknown.

- The same order spelled another way (400.10 / 400.1, 2 / "2.0", Alpaca's defaults written out)
  is the same order: answered again, never sent again. A real difference is a conflict.
- A number in the body reaches Alpaca as the text the client wrote, never through a float.
- An order lookup that fails for any reason other than Alpaca's own "not found" is never read as
  "there is no order": the gateway answers ORDER_STATE_UNKNOWN and sends nothing.
- The order Alpaca holds under the key is the answer only when it has the request's terms.

The emulator's order book and call counter are the ground truth; the audit rows are the
gateway's own store."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl, FaultKindName
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

ORDERS_PATH = "/v2/orders"
BY_CLIENT_ORDER_ID = "/v2/orders:by_client_order_id"
REPLAYED = "Idempotent-Replayed"
ORDER: dict[str, Any] = {
    "symbol": "AAPL",
    "qty": "2",
    "side": "buy",
    "type": "limit",
    "time_in_force": "gtc",
    "limit_price": "400.10",
}


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


def raw_json(body: dict[str, Any], **numbers: str) -> bytes:
    """`body` as JSON with each of `numbers` written as a JSON number with exactly that text
    (a Python float could not say 400.10 or 123456789012.123456789)."""
    text = json.dumps(body | {name: f"@{name}@" for name in numbers})
    for name, number in numbers.items():
        text = text.replace(f'"@{name}@"', number)
    return text.encode()


@pytest.fixture
async def tradable(emulator: EmulatorControl) -> EmulatorControl:
    await emulator.set_asset("AAPL", {})
    return emulator


# --- the same order, spelled another way -------------------------------------------------------
SAME_ORDER = {
    "limit_price_400.1": json.dumps({**ORDER, "limit_price": "400.1"}).encode(),
    "limit_price_number_400.10": raw_json(ORDER, limit_price="400.10"),
    "qty_text_2.0": json.dumps({**ORDER, "qty": "2.0"}).encode(),
    "qty_number_2": raw_json(ORDER, qty="2"),
    "qty_number_2.0": raw_json(ORDER, qty="2.0"),
    "extended_hours_false": json.dumps({**ORDER, "extended_hours": False}).encode(),
    "order_class_simple": json.dumps({**ORDER, "order_class": "simple"}).encode(),
}


@pytest.mark.parametrize("repeat", SAME_ORDER.values(), ids=SAME_ORDER.keys())
async def test_the_same_order_spelled_differently_is_replayed_not_sent_again(
    tradable: EmulatorControl, make_gateway: GatewayFactory, repeat: bytes
) -> None:
    gateway, auth = await trader(make_gateway)
    headers = {**auth, "Idempotency-Key": idempotency(), "Content-Type": "application/json"}

    first = await gateway.post("/v1/orders", content=json.dumps(ORDER).encode(), headers=headers)
    again = await gateway.post("/v1/orders", content=repeat, headers=headers)

    assert first.status_code == 200, first.text
    assert first.headers[REPLAYED] == "false"  # this request placed it
    assert again.status_code == 200, again.text
    assert again.headers[REPLAYED] == "true"
    held = await tradable.orders()
    assert len(held) == 1
    assert first.json()["id"] == again.json()["id"] == held[0]["id"]
    assert await tradable.calls_to(ORDERS_PATH) == 1


async def test_every_spelling_in_turn_stays_the_one_order(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    headers = {**auth, "Idempotency-Key": idempotency(), "Content-Type": "application/json"}

    first = await gateway.post("/v1/orders", content=json.dumps(ORDER).encode(), headers=headers)
    repeats = [
        await gateway.post("/v1/orders", content=body, headers=headers)
        for body in SAME_ORDER.values()
    ]

    assert first.status_code == 200, first.text
    assert [r.status_code for r in repeats] == [200] * len(SAME_ORDER)
    assert {r.json()["id"] for r in repeats} == {first.json()["id"]}
    assert {r.headers[REPLAYED] for r in repeats} == {"true"}
    assert len(await tradable.orders()) == 1
    assert await tradable.calls_to(ORDERS_PATH) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"qty": "3"},
        {"qty": 3},
        {"limit_price": "400.11"},
        {"side": "sell"},
        {"time_in_force": "day"},
        {"extended_hours": True},
    ],
    ids=["qty_3", "qty_number_3", "limit_price", "side", "time_in_force", "extended_hours_true"],
)
async def test_a_real_difference_under_the_same_key_is_a_conflict(
    tradable: EmulatorControl, make_gateway: GatewayFactory, change: dict[str, Any]
) -> None:
    gateway, auth = await trader(make_gateway)
    key = idempotency()
    headers = {**auth, "Idempotency-Key": key}
    first = await gateway.post("/v1/orders", json=ORDER, headers=headers)
    assert first.status_code == 200, first.text

    response = await gateway.post("/v1/orders", json={**ORDER, **change}, headers=headers)

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert response.json()["client_order_id"] == key
    assert len(await tradable.orders()) == 1
    assert await tradable.calls_to(ORDERS_PATH) == 1


async def test_a_long_json_number_reaches_alpaca_as_its_exact_text(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    qty = "123456789012.123456789"  # 21 significant digits: a float keeps about 17
    body = raw_json({**ORDER, "side": "sell"}, qty=qty)  # sells need no buying power
    key = idempotency()

    response = await gateway.post(
        "/v1/orders",
        content=body,
        headers={**auth, "Idempotency-Key": key, "Content-Type": "application/json"},
    )

    assert response.status_code == 200, response.text
    (held,) = await tradable.orders()
    assert held["client_order_id"] == key
    assert held["qty"] == qty  # the emulator's book: what Alpaca received
    assert response.json()["qty"] == qty


@pytest.mark.parametrize("qty", ["1e20000000", "1e-20000000", "1e999999999999"])
async def test_a_number_with_a_huge_exponent_is_refused_without_writing_its_digits_out(
    tradable: EmulatorControl, make_gateway: GatewayFactory, qty: str
) -> None:
    gateway, auth = await trader(make_gateway)
    body = raw_json({**ORDER, "side": "sell"}, qty=qty)
    headers = {**auth, "Idempotency-Key": idempotency(), "Content-Type": "application/json"}

    tracemalloc.start()
    try:
        response = await gateway.post("/v1/orders", content=body, headers=headers)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert await tradable.calls_to(ORDERS_PATH) == 0
    assert peak_bytes < 5_000_000  # an order body is bytes long; its check should be too


# --- a key whose earlier attempt's fate is unknown ---------------------------------------------
async def unknown_attempt(
    emulator: EmulatorControl,
    gateway: GatewayClient,
    headers: dict[str, str],
    submit_fault: FaultKindName,
) -> str:
    """A first POST whose outcome stays unknown: the submit fails and so does every lookup.
    Returns the id of the lookup fault, still in place."""
    await emulator.add_fault(ORDERS_PATH, submit_fault, count=1)
    lookups = await emulator.add_fault(BY_CLIENT_ORDER_ID, "status_500")
    first = await gateway.post("/v1/orders", json=ORDER, headers=headers)
    assert first.status_code == 504, first.text
    assert first.json()["code"] == "ORDER_STATE_UNKNOWN"
    return lookups


@pytest.mark.parametrize("submit_fault", ["reset", "hang"])
@pytest.mark.parametrize(
    "lookup_fault",
    [
        *("status_500", "status_502_html", "status_503", "status_504"),
        *("malformed_json", "schema_missing_t", "reset", "hang"),
    ],
)
async def test_retry_while_the_lookup_fails_is_unknown_and_sends_nothing(
    tradable: EmulatorControl,
    make_gateway: GatewayFactory,
    submit_fault: FaultKindName,
    lookup_fault: FaultKindName,
) -> None:
    gateway, auth = await trader(make_gateway, order_reconcile_attempts=2)
    key = idempotency()
    headers = {**auth, "Idempotency-Key": key}
    lookups = await unknown_attempt(tradable, gateway, headers, submit_fault)
    assert [r.status for r in await gateway.state.store.order_audits(key)] == ["unknown"]
    await tradable.remove_fault(lookups)
    await tradable.add_fault(BY_CLIENT_ORDER_ID, lookup_fault)

    again = await gateway.post("/v1/orders", json=ORDER, headers=headers)

    assert again.status_code == 504, again.text
    body = again.json()
    assert body["code"] == "ORDER_STATE_UNKNOWN"
    assert body["client_order_id"] == key
    assert await tradable.calls_to(ORDERS_PATH) == 1  # the first attempt's only
    assert await tradable.orders() == []
    assert await tradable.calls_to(BY_CLIENT_ORDER_ID) >= 1  # it asked, and could not tell


async def test_an_accepted_order_whose_lookups_fail_is_never_sent_again(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway, order_reconcile_attempts=2)
    key = idempotency()
    headers = {**auth, "Idempotency-Key": key}
    # Alpaca places the order, the answer is lost, and every lookup fails.
    lookups = await unknown_attempt(tradable, gateway, headers, "accept_then_reset")
    (placed,) = await tradable.orders()

    still_unknown = await gateway.post("/v1/orders", json=ORDER, headers=headers)

    assert still_unknown.status_code == 504, still_unknown.text
    assert still_unknown.json()["client_order_id"] == key
    assert await tradable.calls_to(ORDERS_PATH) == 1  # asked, could not tell, sent nothing

    # Once Alpaca can be asked, the same key finds the order placed the first time.
    await tradable.remove_fault(lookups)
    found = await gateway.post("/v1/orders", json=ORDER, headers=headers)

    assert found.status_code == 200, found.text
    assert found.json()["id"] == placed["id"]
    assert found.headers[REPLAYED] == "true"  # an earlier request placed it
    assert await tradable.calls_to(ORDERS_PATH) == 1
    assert [o["id"] for o in await tradable.orders()] == [placed["id"]]


ORDER_KINDS = {
    "limit": ORDER,
    "market_notional": {
        "symbol": "AAPL",
        "notional": "500.50",
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
    },
    "stop_limit": {**ORDER, "type": "stop_limit", "stop_price": "400.05", "qty": "1.5"},
    "trailing_stop": {
        "symbol": "AAPL",
        "qty": "2",
        "side": "sell",
        "type": "trailing_stop",
        "time_in_force": "day",
        "trail_percent": "1.50",
    },
    "extended_hours": {**ORDER, "time_in_force": "day", "extended_hours": True},
}


@pytest.mark.parametrize("kind", ORDER_KINDS)
@pytest.mark.parametrize("sdk_shapes", [False, True], ids=["documented", "sdk_shapes"])
async def test_accepted_then_reset_is_reconciled_to_the_one_order(
    tradable: EmulatorControl, make_gateway: GatewayFactory, sdk_shapes: bool, kind: str
) -> None:
    await tradable.set_sdk_shapes(sdk_shapes, order_extra_fields={"commission": 1.25})
    await tradable.set_quote("AAPL", QUOTE)  # a market order's cost check reads it
    gateway, auth = await trader(make_gateway)
    await tradable.add_fault(ORDERS_PATH, "accept_then_reset", count=1)
    key = idempotency()
    headers = {**auth, "Idempotency-Key": key}
    body = ORDER_KINDS[kind]

    response = await gateway.post("/v1/orders", json=body, headers=headers)
    again = await gateway.post("/v1/orders", json=body, headers=headers)

    assert response.status_code == 200, response.text
    (held,) = await tradable.orders()
    assert response.json()["id"] == held["id"]
    assert response.headers[REPLAYED] == "false"  # this request's own order, found again
    assert again.status_code == 200, again.text
    assert again.json()["id"] == held["id"]
    assert again.headers[REPLAYED] == "true"
    assert await tradable.calls_to(ORDERS_PATH) == 1
    statuses = [r.status for r in await gateway.state.store.order_audits(key)]
    assert statuses == ["reconciled"]


async def test_a_reconciled_sdk_shaped_order_keeps_alpacas_decimal_text(
    tradable: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await tradable.set_sdk_shapes()
    gateway, auth = await trader(make_gateway)
    await tradable.add_fault(ORDERS_PATH, "accept_then_reset", count=1)

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": idempotency()}
    )

    assert response.status_code == 200, response.text
    assert response.json()["limit_price"] == ORDER["limit_price"]  # Alpaca wrote 400.10
    assert response.json()["qty"] == ORDER["qty"]


# --- order lookups by id -----------------------------------------------------------------------
async def test_a_404_that_is_not_alpacas_own_is_never_order_not_found(
    emulator: EmulatorControl, make_gateway: GatewayFactory, emulator_process: EmulatorProcess
) -> None:
    # Something in front of Alpaca (a proxy, a wrong base path) answers 404 for a path it does not
    # route, without Alpaca's {"code": 40410000} body: that says nothing about the order.
    not_alpaca = f"{emulator_process.base_url}/behind-a-proxy"
    async with httpx.AsyncClient() as client:
        wire = await client.get(
            f"{not_alpaca}/v2/orders/{uuid.uuid4()}", headers=emulator_process.auth_headers
        )
    assert (wire.status_code, wire.json()) == (404, {"message": "Not Found"})
    gateway, auth = await trader(make_gateway, alpaca_trading_url=not_alpaca)
    order_id = uuid.uuid4()

    one = await gateway.get(f"/v1/orders/{order_id}", headers=auth)
    cancel = await gateway.delete(f"/v1/orders/{order_id}", headers=auth)

    for response in (one, cancel):
        assert response.status_code == 502, response.text
        assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


# --- a key Alpaca already holds ----------------------------------------------------------------
@pytest.mark.parametrize(
    "theirs",
    [
        {"limit_price": "401.00"},
        {"time_in_force": "day"},
        {"type": "stop_limit", "stop_price": "399.00"},
    ],
    ids=["limit_price", "time_in_force", "stop_limit"],
)
async def test_an_order_alpaca_holds_under_the_key_with_other_terms_is_a_conflict(
    tradable: EmulatorControl,
    make_gateway: GatewayFactory,
    emulator_process: EmulatorProcess,
    theirs: dict[str, str],
) -> None:
    gateway, auth = await trader(make_gateway)
    key = idempotency()
    # Someone used this client_order_id with Alpaca directly: same symbol, side and qty, other
    # terms. Reconciling to it would tell the client its order stands at a price it never gave.
    async with httpx.AsyncClient(base_url=emulator_process.base_url) as alpaca:
        direct = await alpaca.post(
            ORDERS_PATH,
            json={**ORDER, **theirs, "client_order_id": key},
            headers=emulator_process.auth_headers,
        )
    assert direct.status_code == 200, direct.text

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 409, response.text
    assert response.json()["code"] == "IDEMPOTENCY_CONFLICT"
    assert [o["id"] for o in await tradable.orders()] == [direct.json()["id"]]


@pytest.mark.parametrize("sdk_shapes", [False, True], ids=["documented", "sdk_shapes"])
async def test_an_order_alpaca_holds_under_the_key_with_the_same_terms_is_the_answer(
    tradable: EmulatorControl,
    make_gateway: GatewayFactory,
    emulator_process: EmulatorProcess,
    sdk_shapes: bool,
) -> None:
    await tradable.set_sdk_shapes(sdk_shapes)
    gateway, auth = await trader(make_gateway)
    key = idempotency()
    async with httpx.AsyncClient(base_url=emulator_process.base_url) as alpaca:
        direct = await alpaca.post(
            ORDERS_PATH,
            json={**ORDER, "limit_price": "400.1", "client_order_id": key},  # same value
            headers=emulator_process.auth_headers,
        )
    assert direct.status_code == 200, direct.text

    response = await gateway.post(
        "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 200, response.text
    assert response.json()["id"] == direct.json()["id"]
    assert response.headers[REPLAYED] == "true"
    assert len(await tradable.orders()) == 1
