"""The emulator's trading API behaves like Alpaca's: orders (submit, duplicate client ids,
numbers as strings, replace, cancel, lookups), positions, the account, and the submit- and
replace-path faults that the gateway's reconcile logic is tested with. alpaca-py's TradingClient
must parse it all."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, Position
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)

from tests.emulator.control import EmulatorControl, EmulatorControlError
from tests.emulator.process import EmulatorProcess
from tests.emulator.timestamps import rfc3339_ns

pytestmark = pytest.mark.contract

ORDERS = "/v2/orders"
BY_CLIENT_ID = "/v2/orders:by_client_order_id"
SHORT_TIMEOUT_S = 0.3
LIMIT_BUY = {
    "symbol": "AAPL",
    "qty": "2",
    "side": "buy",
    "type": "limit",
    "time_in_force": "day",
    "limit_price": "150",
}
POSITION = {
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
    "symbol": "AAPL",
    "exchange": "NASDAQ",
    "asset_class": "us_equity",
    "asset_marginable": False,
    "avg_entry_price": "174.78",
    "qty": "2",
    "qty_available": "2",
    "side": "long",
    "market_value": "348.58",
    "cost_basis": "349.56",
    "unrealized_pl": "-0.98",
    "unrealized_plpc": "-0.0028035244307129",
    "unrealized_intraday_pl": "-0.98",
    "unrealized_intraday_plpc": "-0.0028035244307129",
    "current_price": "174.29",
    "lastday_price": "174.61",
    "change_today": "-0.0018326556325525",
}


@pytest.fixture
async def control(emulator: EmulatorProcess) -> AsyncIterator[EmulatorControl]:
    async with EmulatorControl(emulator.base_url) as client:
        await client.reset()
        await client.set_state(assets=["AAPL", "MSFT"])
        yield client
        await client.clear_faults()  # never leave a hung request behind


async def submit(alpaca: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    """Submit LIMIT_BUY with changes (None drops a field); the order, asserting a 200."""
    body = {name: value for name, value in {**LIMIT_BUY, **changes}.items() if value is not None}
    response = await alpaca.post(ORDERS, json=body)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


# --- submitting -------------------------------------------------------------------------------


async def test_submitted_order_is_a_full_order_with_decimal_strings(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    order = await submit(alpaca)

    assert order["status"] == "accepted"
    assert uuid.UUID(order["id"]).version == 4
    assert uuid.UUID(order["client_order_id"]).version == 4  # generated when not sent
    assert (order["qty"], order["limit_price"], order["filled_qty"]) == ("2", "150", "0")
    assert (order["notional"], order["filled_avg_price"]) == (None, None)
    assert (order["legs"], order["filled_at"]) == (None, None)
    assert (order["asset_class"], order["order_type"]) == ("us_equity", "limit")
    assert rfc3339_ns(order["created_at"]) == rfc3339_ns(order["submitted_at"])
    assert order["created_at"].endswith("Z")


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ({"qty": 1.0, "limit_price": 150.1}, ("1", "150.1")),  # alpaca-py sends JSON numbers
        ({"qty": "1.50", "limit_price": "150.10"}, ("1.5", "150.1")),
        ({"qty": 3, "limit_price": "0.0001"}, ("3", "0.0001")),
        ({"qty": "1e1", "limit_price": 99}, ("10", "99")),
    ],
)
async def test_numbers_or_strings_are_stored_as_normalised_decimal_strings(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    sent: dict[str, Any],
    stored: tuple[str, str],
) -> None:
    order = await submit(alpaca, **sent)

    assert (order["qty"], order["limit_price"]) == stored
    fetched = (await alpaca.get(f"{ORDERS}/{order['id']}")).json()
    assert (fetched["qty"], fetched["limit_price"]) == stored


async def test_notional_and_stop_and_trailing_orders_keep_their_fields(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    notional = await submit(alpaca, qty=None, notional=12.50, type="market", limit_price=None)
    stop_limit = await submit(alpaca, type="stop_limit", stop_price=149.5, limit_price="149")
    trailing = await submit(alpaca, type="trailing_stop", limit_price=None, trail_percent="1.0")

    assert (notional["notional"], notional["qty"]) == ("12.5", None)
    assert (stop_limit["stop_price"], stop_limit["limit_price"]) == ("149.5", "149")
    assert (trailing["trail_percent"], trailing["trail_price"]) == ("1", None)


async def test_duplicate_client_order_id_is_refused_and_creates_nothing(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    first = await submit(alpaca, client_order_id="gw-1")

    second = await alpaca.post(ORDERS, json={**LIMIT_BUY, "client_order_id": "gw-1"})

    assert second.status_code == 422
    assert second.json() == {"code": 40010001, "message": "client_order_id must be unique"}
    assert [order["id"] for order in await control.orders()] == [first["id"]]


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"type": None}, 40010000),
        ({"time_in_force": "week"}, 40010000),
        ({"side": "hold"}, 40010000),
        ({"qty": None}, 40010000),  # neither qty nor notional
        ({"notional": "100"}, 40010000),  # both
        ({"qty": "0"}, 40010000),
        ({"qty": "abc"}, 40010000),
        ({"qty": True}, 40010000),
        ({"limit_price": None}, 40010000),  # a limit order without its price
        ({"type": "market"}, 40010000),  # a market order with a limit price
        ({"type": "stop", "limit_price": None}, 40010000),
        ({"type": "trailing_stop", "limit_price": None}, 40010000),
        ({"client_order_id": "x" * 129}, 40010000),
        ({"extended_hours": True, "type": "market", "limit_price": None}, 40010000),
        ({"order_class": "bracket"}, 40010000),  # no take_profit / stop_loss
        ({"limit_price": "150.123"}, 42210000),  # sub-penny
    ],
)
async def test_invalid_orders_are_refused_with_422_and_create_nothing(
    control: EmulatorControl, alpaca: httpx.AsyncClient, changes: dict[str, Any], code: int
) -> None:
    body = {name: value for name, value in {**LIMIT_BUY, **changes}.items() if value is not None}

    response = await alpaca.post(ORDERS, json=body)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert isinstance(response.json()["message"], str)
    assert await control.orders() == []


async def test_unreadable_body_is_400_and_unknown_symbol_422(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    unreadable = await alpaca.post(ORDERS, content=b"{not json")
    unknown = await alpaca.post(ORDERS, json={**LIMIT_BUY, "symbol": "NOPE"})

    assert unreadable.status_code == 400
    assert unreadable.json()["code"] == 40010000
    assert unknown.status_code == 422
    assert unknown.json() == {"code": 40010001, "message": "asset NOPE not found"}


async def test_buys_beyond_buying_power_are_forbidden(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_account({"buying_power": "300"})

    too_much = await alpaca.post(ORDERS, json={**LIMIT_BUY, "qty": "2.01"})  # 301.5
    just_enough = await alpaca.post(ORDERS, json=LIMIT_BUY)  # 300
    sell = await alpaca.post(ORDERS, json={**LIMIT_BUY, "side": "sell", "qty": "10"})

    assert too_much.status_code == 403
    assert too_much.json() == {"code": 40310000, "message": "insufficient buying power"}
    assert (just_enough.status_code, sell.status_code) == (200, 200)
    assert len(await control.orders()) == 2


async def test_market_buys_are_priced_from_the_stored_last_trade(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_account({"buying_power": "1000"})
    await control.set_trade(
        "AAPL", {"t": "2024-01-02T15:00:00Z", "x": "V", "p": 200, "s": 1, "c": ["@"], "z": "C"}
    )
    market = {**LIMIT_BUY, "type": "market", "limit_price": None}

    refused = await alpaca.post(ORDERS, json={**market, "qty": "6"})
    accepted = await alpaca.post(ORDERS, json={**market, "qty": "5"})

    assert (refused.status_code, accepted.status_code) == (403, 200)


# --- lookups ----------------------------------------------------------------------------------


async def test_order_by_id_and_by_client_order_id_with_the_literal_colon(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    order = await submit(alpaca, client_order_id="gw-42")

    by_id = await alpaca.get(f"{ORDERS}/{order['id'].upper()}")
    by_client_id = await alpaca.get(BY_CLIENT_ID, params={"client_order_id": "gw-42"})
    unknown_client_id = await alpaca.get(BY_CLIENT_ID, params={"client_order_id": "gw-43"})
    unknown_id = await alpaca.get(f"{ORDERS}/{uuid.uuid4()}")

    assert by_id.json() == order
    assert by_client_id.json() == order
    assert [r.status_code for r in (unknown_client_id, unknown_id)] == [404, 404]
    assert unknown_id.json() == {"code": 40410000, "message": "order not found"}
    paths = [record["path"] for record in await control.requests()]
    assert paths.count(BY_CLIENT_ID) == 2  # the colon really is part of the path


async def test_order_list_filters_like_alpaca(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    first = await submit(alpaca)
    second = await submit(alpaca, symbol="MSFT", side="sell")
    third = await submit(alpaca)
    await control.set_order_status(third["id"], "filled", filled_avg_price="149.99")

    async def ids(**query: str) -> list[str]:
        response = await alpaca.get(ORDERS, params=query)
        assert response.status_code == 200, response.text
        return [order["id"] for order in response.json()]

    assert await ids() == [second["id"], first["id"]]  # open, newest first
    assert await ids(status="closed") == [third["id"]]
    assert await ids(status="all", direction="asc") == [first["id"], second["id"], third["id"]]
    assert await ids(status="all", limit="1") == [third["id"]]
    assert await ids(status="all", symbols="MSFT") == [second["id"]]
    assert await ids(status="all", side="buy") == [third["id"], first["id"]]
    assert await ids(status="all", after=first["submitted_at"]) == [third["id"], second["id"]]
    assert await ids(status="all", until=second["submitted_at"]) == [first["id"]]
    assert (await alpaca.get(ORDERS, params={"status": "done"})).status_code == 422


async def test_control_api_moves_an_order_along(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    order = await submit(alpaca, qty="3")

    await control.set_order_status(order["id"], "partially_filled", filled_qty="1")
    partial = (await alpaca.get(f"{ORDERS}/{order['id']}")).json()
    await control.set_order_status(order["id"], "filled", filled_avg_price="149.50")
    filled = (await alpaca.get(f"{ORDERS}/{order['id']}")).json()

    assert (partial["status"], partial["filled_qty"], partial["filled_at"]) == (
        "partially_filled",
        "1",
        None,
    )
    assert (filled["status"], filled["filled_qty"], filled["filled_avg_price"]) == (
        "filled",
        "3",
        "149.5",
    )
    assert rfc3339_ns(filled["filled_at"]) >= rfc3339_ns(order["created_at"])
    with pytest.raises(EmulatorControlError) as refused:
        await control.set_order_status(order["id"], "teleported")
    assert refused.value.status_code == 400
    with pytest.raises(EmulatorControlError) as unknown:
        await control.set_order_status(str(uuid.uuid4()), "filled")
    assert unknown.value.status_code == 404


# --- canceling --------------------------------------------------------------------------------


async def test_cancel_is_204_then_422_and_unknown_orders_404(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    order = await submit(alpaca)
    filled = await submit(alpaca)
    await control.set_order_status(filled["id"], "filled")

    canceled = await alpaca.delete(f"{ORDERS}/{order['id']}")
    again = await alpaca.delete(f"{ORDERS}/{order['id']}")
    not_cancelable = await alpaca.delete(f"{ORDERS}/{filled['id']}")
    unknown = await alpaca.delete(f"{ORDERS}/{uuid.uuid4()}")

    assert (canceled.status_code, canceled.content) == (204, b"")
    not_cancelable_body = {"code": 42210000, "message": "order is not cancelable"}
    assert (again.status_code, again.json()) == (422, not_cancelable_body)
    assert (not_cancelable.status_code, not_cancelable.json()) == (422, not_cancelable_body)
    assert (unknown.status_code, unknown.json()["code"]) == (404, 40410000)
    after = (await alpaca.get(f"{ORDERS}/{order['id']}")).json()
    assert after["status"] == "canceled"
    assert after["canceled_at"] is not None


async def test_cancel_all_answers_207_for_each_open_order(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    first, second, filled = [await submit(alpaca) for _ in range(3)]
    await control.set_order_status(filled["id"], "filled")

    response = await alpaca.delete(ORDERS)

    assert response.status_code == 207
    assert response.json() == [
        {"id": first["id"], "status": 200},
        {"id": second["id"], "status": 200},
    ]
    statuses = [order["status"] for order in await control.orders()]
    assert statuses == ["canceled", "canceled", "filled"]


# --- replacing --------------------------------------------------------------------------------


async def routed(alpaca: httpx.AsyncClient, control: EmulatorControl, **changes: Any) -> str:
    """Submit LIMIT_BUY with changes and move it to ``new`` (Alpaca replaces only routed
    orders); its id."""
    order = await submit(alpaca, **changes)
    await control.set_order_status(order["id"], "new")
    return str(order["id"])


async def test_replace_closes_the_order_and_opens_one_with_the_new_terms(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    old_id = await routed(alpaca, control, client_order_id="gw-old", time_in_force="gtc")

    response = await alpaca.patch(
        f"{ORDERS}/{old_id}", json={"qty": 3, "limit_price": 149.5, "time_in_force": "day"}
    )

    assert response.status_code == 200, response.text
    new = response.json()
    old = (await alpaca.get(f"{ORDERS}/{old_id}")).json()
    assert (new["replaces"], new["replaced_by"], new["replaced_at"]) == (old_id, None, None)
    assert (old["status"], old["replaced_by"], old["replaces"]) == ("replaced", new["id"], None)
    assert old["replaced_at"] == old["updated_at"] == new["created_at"] == new["submitted_at"]
    assert new["id"] != old_id
    assert uuid.UUID(new["client_order_id"]).version == 4  # a new one, not gw-old
    assert (new["status"], new["filled_qty"], new["filled_avg_price"]) == ("accepted", "0", None)
    assert (new["qty"], new["limit_price"], new["time_in_force"]) == ("3", "149.5", "day")
    assert (old["qty"], old["limit_price"], old["time_in_force"]) == ("2", "150", "gtc")
    kept = ("symbol", "asset_id", "asset_class", "side", "type", "order_type", "order_class")
    assert {name: new[name] for name in kept} == {name: old[name] for name in kept}
    listed = (await alpaca.get(ORDERS, params={"status": "all", "direction": "asc"})).json()
    assert [(o["id"], o["status"]) for o in listed] == [
        (old_id, "replaced"),
        (new["id"], "accepted"),
    ]
    assert [o["id"] for o in (await alpaca.get(ORDERS)).json()] == [new["id"]]  # the open one


async def test_replace_takes_a_client_order_id_that_must_be_unique(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await submit(alpaca, client_order_id="gw-taken")
    old_id = await routed(alpaca, control, client_order_id="gw-1")

    taken = await alpaca.patch(f"{ORDERS}/{old_id}", json={"qty": 3, "client_order_id": "gw-taken"})
    own = await alpaca.patch(f"{ORDERS}/{old_id}", json={"qty": 3, "client_order_id": "gw-1"})
    given = await alpaca.patch(f"{ORDERS}/{old_id}", json={"qty": 3, "client_order_id": "gw-2"})
    by_client_id = await alpaca.get(BY_CLIENT_ID, params={"client_order_id": "gw-2"})

    duplicate = {"code": 40010001, "message": "client_order_id must be unique"}
    assert (taken.status_code, taken.json()) == (422, duplicate)
    assert (own.status_code, own.json()) == (422, duplicate)  # the old order still holds it
    assert given.status_code == 200
    assert by_client_id.json() == given.json()


async def test_replace_changes_the_trail_the_order_has(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    by_percent = await routed(
        alpaca, control, type="trailing_stop", limit_price=None, trail_percent="1.5"
    )
    by_price = await routed(alpaca, control, type="trailing_stop", limit_price=None, trail_price=2)
    stop_limit = await routed(alpaca, control, type="stop_limit", stop_price="151")

    percent = (await alpaca.patch(f"{ORDERS}/{by_percent}", json={"trail": "2.25"})).json()
    price = (await alpaca.patch(f"{ORDERS}/{by_price}", json={"trail": 1.5})).json()
    stop = (await alpaca.patch(f"{ORDERS}/{stop_limit}", json={"stop_price": "150.5"})).json()

    assert (percent["trail_percent"], percent["trail_price"]) == ("2.25", None)
    assert (price["trail_percent"], price["trail_price"]) == (None, "1.5")
    assert (stop["stop_price"], stop["limit_price"]) == ("150.5", "150")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("accepted", "unable to replace order, order isn't sent to exchange yet"),
        ("pending_new", "unable to replace order, order isn't sent to exchange yet"),
        ("pending_cancel", 'order is already in "pending_cancel" state'),
        ("pending_replace", 'order is already in "pending_replace" state'),
        ("filled", 'order is already in "filled" state'),
        ("canceled", 'order is already in "canceled" state'),
        ("expired", 'order is already in "expired" state'),
        ("rejected", 'order is already in "rejected" state'),
    ],
)
async def test_an_order_not_at_the_venue_or_closed_cannot_be_replaced(
    control: EmulatorControl, alpaca: httpx.AsyncClient, status: str, message: str
) -> None:
    order = await submit(alpaca)
    if status != "accepted":
        await control.set_order_status(order["id"], status)

    response = await alpaca.patch(f"{ORDERS}/{order['id']}", json={"qty": 3})

    assert response.status_code == 422
    assert response.json() == {"code": 42210000, "message": message}
    assert [held["status"] for held in await control.orders()] == [status]


async def test_a_replaced_order_cannot_be_replaced_again_but_its_replacement_can(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    old_id = await routed(alpaca, control)
    new = (await alpaca.patch(f"{ORDERS}/{old_id}", json={"qty": 3})).json()
    await control.set_order_status(new["id"], "new")

    again = await alpaca.patch(f"{ORDERS}/{old_id}", json={"qty": 4})
    newest = await alpaca.patch(f"{ORDERS}/{new['id']}", json={"qty": 4})

    assert again.json() == {"code": 42210000, "message": 'order is already in "replaced" state'}
    assert (newest.status_code, newest.json()["replaces"]) == (200, new["id"])
    assert [o["status"] for o in await control.orders()] == ["replaced", "replaced", "accepted"]


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"qty": "2", "limit_price": 150}, 403, 40310000),  # the same terms: nothing changes
        ({}, 403, 40310000),
        ({"client_order_id": "only-a-new-id"}, 403, 40310000),
        ({"qty": "0"}, 422, 40010000),
        ({"qty": "2.5"}, 422, 40010000),  # whole shares only
        ({"qty": "3", "notional": "100"}, 422, 40010000),
        ({"notional": "100"}, 422, 40010000),  # ipo orders only
        ({"time_in_force": "week"}, 422, 40010000),
        ({"limit_price": "-1"}, 422, 40010000),
        ({"limit_price": "abc"}, 422, 40010000),
        ({"stop_price": "149"}, 422, 40010000),  # a limit order has no stop
        ({"trail": "1"}, 422, 40010000),  # nor a trail
        ({"qty": 3, "client_order_id": "x" * 129}, 422, 40010000),
        ({"qty": 3, "advanced_instructions": "vwap"}, 422, 40010000),
        ({"limit_price": "150.123"}, 422, 42210000),  # sub-penny
        ({"qty": "3000"}, 403, 40310000),  # beyond the buying power
    ],
)
async def test_replace_fields_are_checked_like_alpacas_and_nothing_changes(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    changes: dict[str, Any],
    status: int,
    code: int,
) -> None:
    order_id = await routed(alpaca, control)
    before = await control.orders()

    response = await alpaca.patch(f"{ORDERS}/{order_id}", json=changes)

    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await control.orders() == before


async def test_replace_of_an_unknown_order_is_404_and_an_unreadable_body_400(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    order_id = await routed(alpaca, control)

    unknown = await alpaca.patch(f"{ORDERS}/{uuid.uuid4()}", json={"qty": 3})
    unreadable = await alpaca.patch(f"{ORDERS}/{order_id}", content=b"{not json")
    a_list = await alpaca.patch(f"{ORDERS}/{order_id}", json=[{"qty": 3}])

    assert (unknown.status_code, unknown.json()) == (
        404,
        {"code": 40410000, "message": "order not found"},
    )
    request_body_invalid = {"code": 40010000, "message": "request body format is invalid"}
    assert (unreadable.status_code, unreadable.json()) == (400, request_body_invalid)
    assert (a_list.status_code, a_list.json()) == (400, request_body_invalid)


async def test_notional_and_option_orders_keep_alpacas_replace_rules(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    occ = "AAPL250620C00100000"
    await control.set_option_contract(occ)
    notional = await routed(
        alpaca, control, qty=None, notional="25", type="market", limit_price=None
    )
    option = await routed(alpaca, control, symbol=occ, qty="1", limit_price="2.5")

    refused_notional = await alpaca.patch(f"{ORDERS}/{notional}", json={"notional": "30"})
    option_gtc = await alpaca.patch(f"{ORDERS}/{option}", json={"time_in_force": "gtc"})
    option_price = await alpaca.patch(
        f"{ORDERS}/{option}", json={"limit_price": "2.55", "time_in_force": "day"}
    )

    assert refused_notional.json() == {
        "code": 42210000,
        "message": "notional orders cannot be replaced",
    }
    assert (option_gtc.status_code, option_gtc.json()["code"]) == (422, 40010000)
    assert option_price.status_code == 200
    assert (option_price.json()["limit_price"], option_price.json()["asset_class"]) == (
        "2.55",
        "us_option",
    )


async def test_replacements_answer_in_sdk_shapes_with_the_text_sent(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_sdk_shapes()
    order_id = await routed(alpaca, control, qty=2, limit_price="150.10")

    response = await alpaca.patch(
        f"{ORDERS}/{order_id}", content='{"limit_price":"149.90","qty":3}'
    )

    assert '"limit_price":149.90,' in response.text
    assert '"qty":3,' in response.text
    assert '"filled_qty":0,' in response.text
    held = (await control.orders())[-1]
    assert (held["qty"], held["limit_price"]) == ("3", "149.9")


async def test_accept_then_reset_on_replace_replaces_and_reconcile_finds_the_new_order(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    order_id = await routed(alpaca, control)
    await control.add_fault(f"{ORDERS}/*", "accept_then_reset", count=1)

    with pytest.raises(httpx.TransportError):
        await alpaca.patch(f"{ORDERS}/{order_id}", json={"qty": 3, "client_order_id": "gw-r"})

    old = (await alpaca.get(f"{ORDERS}/{order_id}")).json()
    reconciled = (await alpaca.get(BY_CLIENT_ID, params={"client_order_id": "gw-r"})).json()
    assert (old["status"], old["replaced_by"]) == ("replaced", reconciled["id"])
    assert (reconciled["replaces"], reconciled["qty"]) == (order_id, "3")


@pytest.mark.parametrize("kind", ["status_500", "status_503", "rate_limited", "reset"])
async def test_faults_in_front_of_alpaca_replace_nothing(
    control: EmulatorControl, alpaca: httpx.AsyncClient, kind: Any
) -> None:
    order_id = await routed(alpaca, control)
    await control.add_fault(f"{ORDERS}/{order_id}", kind, count=1)

    with contextlib.suppress(httpx.TransportError):
        await alpaca.patch(f"{ORDERS}/{order_id}", json={"qty": 3})

    assert [order["status"] for order in await control.orders()] == ["new"]


# --- submit-path faults -----------------------------------------------------------------------


async def test_accept_then_reset_creates_exactly_one_order_found_by_reconcile(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault(ORDERS, "accept_then_reset", count=1)

    with pytest.raises(httpx.TransportError):
        await alpaca.post(ORDERS, json={**LIMIT_BUY, "client_order_id": "gw-reset"})

    held = await control.orders()
    assert [order["client_order_id"] for order in held] == ["gw-reset"]
    reconciled = await alpaca.get(BY_CLIENT_ID, params={"client_order_id": "gw-reset"})
    assert reconciled.json() == held[0]
    retried = await alpaca.post(ORDERS, json={**LIMIT_BUY, "client_order_id": "gw-reset"})
    assert retried.status_code == 422  # a blind resubmit is a duplicate
    assert len(await control.orders()) == 1


async def test_accept_then_500_creates_the_order_but_answers_500(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault(ORDERS, "accept_then_500", count=1)

    response = await alpaca.post(ORDERS, json={**LIMIT_BUY, "client_order_id": "gw-500"})

    assert response.status_code == 500
    assert [order["client_order_id"] for order in await control.orders()] == ["gw-500"]


async def test_accept_then_hang_creates_the_order_and_answers_once_released(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault(ORDERS, "accept_then_hang", count=2)

    with pytest.raises(httpx.ReadTimeout):
        await alpaca.post(ORDERS, json=LIMIT_BUY, timeout=SHORT_TIMEOUT_S)
    assert len(await control.orders()) == 1
    waiting = asyncio.create_task(alpaca.post(ORDERS, json={**LIMIT_BUY, "client_order_id": "b"}))
    await asyncio.sleep(SHORT_TIMEOUT_S)
    assert not waiting.done()
    assert len(await control.orders()) == 2  # created while its answer is held
    await control.clear_faults()

    released = await asyncio.wait_for(waiting, timeout=5)
    assert released.status_code == 200
    assert released.json()["client_order_id"] == "b"


@pytest.mark.parametrize("kind", ["reset", "status_500", "status_502_html", "status_504"])
async def test_faults_in_front_of_alpaca_create_no_order(
    control: EmulatorControl, alpaca: httpx.AsyncClient, kind: Any
) -> None:
    await control.add_fault(ORDERS, kind, count=1)

    with contextlib.suppress(httpx.TransportError):
        await alpaca.post(ORDERS, json=LIMIT_BUY)

    assert await control.orders() == []


async def test_hung_submit_creates_no_order_while_it_hangs(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault(ORDERS, "hang")

    with pytest.raises(httpx.ReadTimeout):
        await alpaca.post(ORDERS, json=LIMIT_BUY, timeout=SHORT_TIMEOUT_S)
    await asyncio.sleep(0.1)

    assert await control.orders() == []


# --- positions and the account ----------------------------------------------------------------


async def test_positions_are_stored_verbatim_and_404_when_absent(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_position("AAPL", POSITION)

    listed = await alpaca.get("/v2/positions")
    by_symbol = await alpaca.get("/v2/positions/AAPL")
    by_asset_id = await alpaca.get(f"/v2/positions/{POSITION['asset_id']}")
    absent = await alpaca.get("/v2/positions/MSFT")
    await control.set_position("AAPL", None)
    removed = await alpaca.get("/v2/positions")

    assert listed.json() == [POSITION]
    assert by_symbol.json() == by_asset_id.json() == POSITION
    assert absent.status_code == 404
    assert absent.json() == {"code": 40410000, "message": "position does not exist"}
    assert removed.json() == []


async def test_account_fields_are_merged_and_reset_restores_them(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    before = (await alpaca.get("/v2/account")).json()

    await control.set_account({"buying_power": "1000.50", "cash": "12"})
    changed = (await alpaca.get("/v2/account")).json()
    await control.reset()
    restored = (await alpaca.get("/v2/account")).json()

    assert changed == {**before, "buying_power": "1000.50", "cash": "12"}
    assert restored == before


# --- alpaca-py --------------------------------------------------------------------------------


async def test_alpaca_py_trading_client_parses_orders_and_positions(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    """TradingClient (paper, url_override) submits, reconciles and cancels against the emulator."""
    await control.set_position("AAPL", POSITION)
    trading = TradingClient(
        emulator.key_id, emulator.secret_key, paper=True, url_override=emulator.base_url
    )
    request = LimitOrderRequest(
        symbol="AAPL",
        qty=1,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        limit_price=150.1,
        client_order_id="sdk-1",
    )

    submitted = await asyncio.to_thread(trading.submit_order, request)
    found = await asyncio.to_thread(trading.get_order_by_client_id, "sdk-1")
    assert isinstance(submitted, Order)  # models, not raw dicts: the SDK validated the answers
    assert isinstance(found, Order)
    await asyncio.to_thread(trading.cancel_order_by_id, str(found.id))  # returns None on 204
    after = await asyncio.to_thread(trading.get_order_by_id, str(found.id))
    positions = await asyncio.to_thread(trading.get_all_positions)
    market = await asyncio.to_thread(
        trading.submit_order,
        MarketOrderRequest(
            symbol="MSFT", notional=25.5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        ),
    )
    with pytest.raises(APIError) as duplicate:
        await asyncio.to_thread(trading.submit_order, request)

    assert (submitted.qty, submitted.limit_price, submitted.status) == (
        "1",
        "150.1",
        OrderStatus.ACCEPTED,
    )
    assert found.id == submitted.id
    assert isinstance(after, Order)
    assert after.status == OrderStatus.CANCELED
    assert isinstance(positions, list)
    assert isinstance(positions[0], Position)
    assert positions[0].qty == "2"
    assert isinstance(market, Order)
    assert market.notional == "25.5"
    assert duplicate.value.status_code == 422
    assert duplicate.value.code == 40010001


async def test_alpaca_py_replaces_an_order_and_surfaces_alpacas_refusals(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    trading = TradingClient(
        emulator.key_id, emulator.secret_key, paper=True, url_override=emulator.base_url
    )
    request = LimitOrderRequest(
        symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=150
    )
    submitted = await asyncio.to_thread(trading.submit_order, request)
    assert isinstance(submitted, Order)
    with pytest.raises(APIError) as not_routed:
        await asyncio.to_thread(
            trading.replace_order_by_id, str(submitted.id), ReplaceOrderRequest(qty=2)
        )
    await control.set_order_status(str(submitted.id), "new")

    replaced = await asyncio.to_thread(
        trading.replace_order_by_id,
        str(submitted.id),
        ReplaceOrderRequest(qty=2, limit_price=149.99, time_in_force=TimeInForce.GTC),
    )

    assert (not_routed.value.status_code, not_routed.value.code) == (422, 42210000)
    assert isinstance(replaced, Order)
    assert (replaced.replaces, replaced.qty, replaced.limit_price) == (submitted.id, "2", "149.99")
    assert replaced.time_in_force == TimeInForce.GTC
    old = await asyncio.to_thread(trading.get_order_by_id, str(submitted.id))
    assert isinstance(old, Order)
    assert (old.status, old.replaced_by) == (OrderStatus.REPLACED, replaced.id)


# --- sdk_shapes: the order shapes alpaca-py's own tests record ----------------------------------


async def test_sdk_shapes_write_order_numbers_as_json_numbers_with_their_own_text(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_sdk_shapes(order_extra_fields={"commission": 1.25})
    response = await alpaca.post(
        ORDERS,
        content='{"symbol":"AAPL","qty":1,"side":"buy","type":"stop_limit","time_in_force":"day",'
        '"limit_price":"400.10","stop_price":399.50,"client_order_id":"sdk-shape-1"}',
    )
    order_id = response.json()["id"]
    await control.set_order_status(order_id, "filled", filled_avg_price="400.05")

    submitted = response.text
    answers = [
        await alpaca.get(f"{ORDERS}/{order_id}"),
        await alpaca.get(BY_CLIENT_ID, params={"client_order_id": "sdk-shape-1"}),
        await alpaca.get(ORDERS, params={"status": "all"}),
    ]

    assert '"qty":1,' in submitted
    assert '"limit_price":400.10,' in submitted  # the text sent, not a float's 400.1
    assert '"stop_price":399.50,' in submitted
    assert '"filled_qty":0,' in submitted
    assert '"filled_avg_price":null' in submitted
    assert '"commission":1.25' in submitted
    for answer in answers:
        assert '"limit_price":400.10,' in answer.text
        assert '"filled_qty":1,' in answer.text  # filled without filled_qty: the whole qty
        assert '"filled_avg_price":400.05,' in answer.text
        assert '"notional":null' in answer.text  # alpaca-py reads notional as a string only
    held = (await control.orders())[0]  # the control API keeps the documented shape
    assert (held["qty"], held["limit_price"], held["filled_avg_price"]) == ("1", "400.1", "400.05")


async def test_sdk_shapes_off_answers_the_same_orders_as_decimal_strings(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_sdk_shapes()
    order = await submit(alpaca, qty=2, limit_price="150.10")
    await control.set_sdk_shapes(False)

    fetched = (await alpaca.get(f"{ORDERS}/{order['id']}")).json()

    assert (order["qty"], order["limit_price"]) == (2, 150.1)
    assert (fetched["qty"], fetched["limit_price"], fetched["filled_qty"]) == ("2", "150.1", "0")
    assert "commission" not in fetched


async def test_order_extra_fields_never_replace_an_orders_own_members(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.configure(order_extra_fields={"commission": "0", "status": "filled"})

    order = await submit(alpaca)

    assert (order["commission"], order["status"], order["qty"]) == ("0", "accepted", "2")


async def test_alpaca_py_parses_orders_in_sdk_shapes(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.set_sdk_shapes(order_extra_fields={"commission": 1.25})
    trading = TradingClient(
        emulator.key_id, emulator.secret_key, paper=True, url_override=emulator.base_url
    )
    request = LimitOrderRequest(
        symbol="AAPL",
        qty=1,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        limit_price=300,
        client_order_id="sdk-2",
    )

    submitted = await asyncio.to_thread(trading.submit_order, request)
    by_id = await asyncio.to_thread(trading.get_order_by_id, str(submitted.id))
    by_client_id = await asyncio.to_thread(trading.get_order_by_client_id, "sdk-2")
    listed = await asyncio.to_thread(
        trading.get_orders, GetOrdersRequest(status=QueryOrderStatus.ALL)
    )

    for order in (submitted, by_id, by_client_id, *listed):
        assert isinstance(order, Order)  # the SDK validated the JSON numbers
        assert (order.qty, order.limit_price, order.filled_qty) == (1, 300, 0)
    assert [order.id for order in listed] == [submitted.id]
