"""Alpaca's answers as alpaca-py's own recordings have them (the emulator's `sdk_shapes`): orders
with qty and prices as JSON numbers and extra members, contracts without `multiplier` and with a
numeric strike. The gateway reads them, passes every decimal on as the exact text Alpaca wrote,
and still refuses what really breaks the schema.

Every expected value below is what the emulator was given, never the gateway's own output."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

ORDERS_PATH = "/v2/orders"
BY_CLIENT_ORDER_ID = "/v2/orders:by_client_order_id"
EXTRA = {"commission": 1.25}  # as in alpaca-py's recorded order answers
OCC = "AAPL240426C00162500"
UNKNOWN_OCC = "AAPL240426C00999000"
OPTION_QUOTE: dict[str, Any] = {
    "t": "2024-04-22T19:59:59.992734208Z",
    "bx": "C",
    "bp": 4.15,
    "bs": 16,
    "ax": "B",
    "ap": 4.3,
    "as": 91,
    "c": "A",
}


async def trader(make_gateway: GatewayFactory) -> tuple[GatewayClient, dict[str, str]]:
    gateway = await make_gateway(order_reconcile_first_wait_s=0.05, trading_timeout_s=0.5)
    key = await gateway.issue_key("trading:read", "trading:write")
    return gateway, {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def sdk_shaped(emulator: EmulatorControl) -> EmulatorControl:
    """AAPL tradable; orders answered with JSON-number decimals and an extra member."""
    await emulator.set_asset("AAPL", {})
    await emulator.set_sdk_shapes(order_extra_fields=EXTRA)
    return emulator


async def place_at_alpaca(process: EmulatorProcess, body: dict[str, str]) -> str:
    """An order placed with Alpaca directly (another client of the account); its id."""
    async with httpx.AsyncClient(base_url=process.base_url) as alpaca:
        answer = await alpaca.post(ORDERS_PATH, json=body, headers=process.auth_headers)
    assert answer.status_code == 200, answer.text
    order_id: str = answer.json()["id"]
    return order_id


async def raw_order_answer(process: EmulatorProcess, order_id: str) -> str:
    async with httpx.AsyncClient(base_url=process.base_url) as alpaca:
        answer = await alpaca.get(f"{ORDERS_PATH}/{order_id}", headers=process.auth_headers)
    assert answer.status_code == 200, answer.text
    return answer.text


# --- orders read -------------------------------------------------------------------------------
LIMIT_BUY = {
    "symbol": "AAPL",
    "qty": "2",
    "side": "buy",
    "type": "limit",
    "time_in_force": "gtc",
    "limit_price": "400.10",
}
STOP_LIMIT_SELL = {
    "symbol": "AAPL",
    "qty": "3",
    "side": "sell",
    "type": "stop_limit",
    "time_in_force": "day",
    "limit_price": "399.00",
    "stop_price": "399.50",
}
FILLED_QTY = "1"
FILLED_AVG_PRICE = "400.050"


async def test_orders_with_json_number_decimals_are_answered_with_alpacas_exact_text(
    sdk_shaped: EmulatorControl, make_gateway: GatewayFactory, emulator_process: EmulatorProcess
) -> None:
    gateway, auth = await trader(make_gateway)
    buy_id = await place_at_alpaca(emulator_process, LIMIT_BUY)
    sell_id = await place_at_alpaca(emulator_process, STOP_LIMIT_SELL)
    await sdk_shaped.set_order_status(
        buy_id, "partially_filled", filled_qty=FILLED_QTY, filled_avg_price=FILLED_AVG_PRICE
    )
    # The precondition, on the wire: Alpaca wrote these decimals as JSON numbers.
    wire = await raw_order_answer(emulator_process, buy_id)
    assert '"limit_price":400.10' in wire
    assert f'"filled_avg_price":{FILLED_AVG_PRICE}' in wire

    listed = await gateway.get("/v1/orders", params={"status": "all"}, headers=auth)
    one = await gateway.get(f"/v1/orders/{buy_id}", headers=auth)
    other = await gateway.get(f"/v1/orders/{sell_id}", headers=auth)

    assert listed.status_code == 200, listed.text
    assert one.status_code == 200, one.text
    assert other.status_code == 200, other.text
    by_id = {order["id"]: order for order in listed.json()}
    assert set(by_id) == {buy_id, sell_id}
    for buy in (by_id[buy_id], one.json()):
        assert buy["qty"] == LIMIT_BUY["qty"]
        assert buy["limit_price"] == "400.10"  # never "400.1", never 400.1
        assert buy["filled_qty"] == FILLED_QTY
        assert buy["filled_avg_price"] == FILLED_AVG_PRICE
        assert buy["stop_price"] is None
        assert buy["commission"] == EXTRA["commission"]  # an extra member is kept
    for sell in (by_id[sell_id], other.json()):
        assert sell["qty"] == STOP_LIMIT_SELL["qty"]
        assert sell["limit_price"] == "399.00"
        assert sell["stop_price"] == "399.50"
        assert sell["filled_qty"] == "0"  # the emulator's first filled_qty: the number 0
        assert sell["commission"] == EXTRA["commission"]


async def test_submit_answered_with_json_numbers_is_the_one_order_sent_once(
    sdk_shaped: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, auth = await trader(make_gateway)
    key = f"bot-{uuid.uuid4()}"

    response = await gateway.post(
        "/v1/orders", json=LIMIT_BUY, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 200, response.text
    held = await sdk_shaped.orders()
    assert [o["client_order_id"] for o in held] == [key]
    order = response.json()
    assert order["id"] == held[0]["id"]
    assert order["limit_price"] == LIMIT_BUY["limit_price"]
    assert order["qty"] == LIMIT_BUY["qty"]
    assert order["commission"] == EXTRA["commission"]
    assert await sdk_shaped.calls_to(ORDERS_PATH) == 1
    assert await sdk_shaped.calls_to(BY_CLIENT_ORDER_ID) == 0  # nothing needed reconciling
    rows = await gateway.state.store.order_audits(key)
    assert [r.status for r in rows] == ["submitted"]
    assert rows[0].alpaca_order is not None
    assert rows[0].alpaca_order["id"] == held[0]["id"]

    # A repeat is answered from the audit row: the same order, the same exact text.
    again = await gateway.post(
        "/v1/orders", json=LIMIT_BUY, headers={**auth, "Idempotency-Key": key}
    )
    assert again.status_code == 200, again.text
    assert again.json() == order
    assert await sdk_shaped.calls_to(ORDERS_PATH) == 1


# --- option contracts --------------------------------------------------------------------------
async def test_contracts_without_multiplier_keep_the_strike_text(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_sdk_shapes()
    await emulator.set_option_contract(OCC, {"strike_price": "162.50", "size": "100"})

    response = await gateway.get("/v1/options/contracts", params={"underlying": "AAPL"})

    assert response.status_code == 200, response.text
    (contract,) = response.json()["contracts"]
    assert contract["symbol"] == OCC
    assert contract["strike_price"] == "162.50"  # Alpaca wrote the number 162.50
    assert contract["size"] == "100"
    assert contract.get("multiplier") is None  # Alpaca sent none; none is invented


async def test_option_quote_of_a_known_sdk_shaped_contract_without_data_is_no_data(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_sdk_shapes()
    await emulator.set_option_contract(OCC, {})

    known = await gateway.get(f"/v1/options/{OCC}/quote")
    unknown = await gateway.get(f"/v1/options/{UNKNOWN_OCC}/quote")

    assert known.status_code == 404, known.text
    assert known.json()["code"] == "NO_DATA"
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["code"] == "CONTRACT_NOT_FOUND"


# --- what still breaks the schema --------------------------------------------------------------
@pytest.mark.parametrize("price", ["n/a", "NaN", "", True, [400]])
async def test_a_position_price_that_is_not_a_number_is_a_bad_response(
    emulator: EmulatorControl, make_gateway: GatewayFactory, price: Any
) -> None:
    gateway, auth = await trader(make_gateway)
    await emulator.set_position(
        "AAPL",
        {
            "symbol": "AAPL",
            "qty": "5",
            "avg_entry_price": price,
            "market_value": "863.1005",
            "cost_basis": "863.1005",
            "unrealized_pl": "0",
            "side": "long",
        },
    )

    response = await gateway.get("/v1/positions", headers=auth)

    assert response.status_code == 502, response.text
    assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


async def test_an_sdk_shaped_contract_whose_strike_is_not_a_number_is_a_bad_response(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_sdk_shapes()
    await emulator.set_option_contract(OCC, {"strike_price": "n/a"})

    response = await gateway.get("/v1/options/contracts", params={"underlying": "AAPL"})

    assert response.status_code == 502, response.text
    assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


async def test_an_order_whose_id_is_missing_is_a_bad_response(
    sdk_shaped: EmulatorControl, make_gateway: GatewayFactory, emulator_process: EmulatorProcess
) -> None:
    gateway, auth = await trader(make_gateway)
    order_id = await place_at_alpaca(emulator_process, LIMIT_BUY)
    await sdk_shaped.add_fault(f"{ORDERS_PATH}/*", "schema_missing_t")

    response = await gateway.get(f"/v1/orders/{order_id}", headers=auth)

    assert response.status_code == 502, response.text
    assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in QUOTE.items() if k != "t"},  # no timestamp
        {**QUOTE, "ap": str(QUOTE["ap"])},  # a price as a string where a number belongs
    ],
    ids=["without_t", "price_as_text"],
)
async def test_a_stock_quote_that_breaks_the_schema_is_a_bad_response(
    emulator: EmulatorControl, gateway: GatewayClient, broken: dict[str, Any]
) -> None:
    await emulator.set_sdk_shapes()  # the switch relaxes nothing on market data
    await emulator.set_quote("AAPL", broken)

    response = await gateway.get("/v1/stocks/AAPL/quote")

    assert response.status_code == 502, response.text
    assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


async def test_an_option_quote_without_its_timestamp_is_a_bad_response(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_sdk_shapes()
    await emulator.set_option_contract(OCC, {})
    await emulator.set_option_quote(OCC, {k: v for k, v in OPTION_QUOTE.items() if k != "t"})

    response = await gateway.get(f"/v1/options/{OCC}/quote")

    assert response.status_code == 502, response.text
    assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


# --- numbers no float64 holds (Alpaca's encoder cannot write them) -----------------------------
BEYOND_FLOAT64 = [Decimal("1e400"), Decimal("1e-400")]  # read as a float: infinity, zero


@pytest.mark.parametrize("price", BEYOND_FLOAT64, ids=str)
async def test_a_quote_price_no_float64_holds_is_a_bad_response(
    emulator: EmulatorControl, gateway: GatewayClient, price: Decimal
) -> None:
    await emulator.set_quote("AAPL", {**QUOTE, "ap": price})

    response = await gateway.get("/v1/stocks/AAPL/quote")

    # Never a 500 (infinity cannot be written as JSON), never "no ask" (1e-400 is not zero).
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


@pytest.mark.parametrize("commission", BEYOND_FLOAT64, ids=str)
async def test_an_order_member_no_float64_holds_is_a_bad_response_not_a_500(
    sdk_shaped: EmulatorControl,
    make_gateway: GatewayFactory,
    emulator_process: EmulatorProcess,
    commission: Decimal,
) -> None:
    gateway, auth = await trader(make_gateway)
    await sdk_shaped.set_sdk_shapes(order_extra_fields={"commission": commission})
    order_id = await place_at_alpaca(emulator_process, LIMIT_BUY)

    listed = await gateway.get("/v1/orders", params={"status": "all"}, headers=auth)
    one = await gateway.get(f"/v1/orders/{order_id}", headers=auth)

    for response in (listed, one):
        assert response.status_code == 502, response.text
        assert response.json()["code"] == "UPSTREAM_BAD_RESPONSE"


@pytest.mark.parametrize("commission", BEYOND_FLOAT64, ids=str)
async def test_an_accepted_order_with_a_member_no_float64_holds_is_still_the_one_order(
    sdk_shaped: EmulatorControl,
    make_gateway: GatewayFactory,
    emulator_process: EmulatorProcess,
    commission: Decimal,
) -> None:
    """Alpaca placed the order: its answer is passed on (the odd member as Alpaca's own text),
    never a 500 or an "unknown" that invites a second order."""
    gateway, auth = await trader(make_gateway)
    await sdk_shaped.set_sdk_shapes(order_extra_fields={"commission": commission})
    key = f"bot-{uuid.uuid4()}"

    response = await gateway.post(
        "/v1/orders", json=LIMIT_BUY, headers={**auth, "Idempotency-Key": key}
    )

    assert response.status_code == 200, response.text
    (held,) = await sdk_shaped.orders()
    order = response.json()
    assert order["id"] == held["id"]
    assert await sdk_shaped.calls_to(ORDERS_PATH) == 1
    assert await sdk_shaped.calls_to(BY_CLIENT_ORDER_ID) == 0
    assert order["limit_price"] == LIMIT_BUY["limit_price"]
    assert order["qty"] == LIMIT_BUY["qty"]
    wire = json.loads(await raw_order_answer(emulator_process, held["id"]), parse_float=str)
    assert order["commission"] == wire["commission"]  # the text Alpaca wrote, e.g. "1E+400"
    assert [r.status for r in await gateway.state.store.order_audits(key)] == ["submitted"]
