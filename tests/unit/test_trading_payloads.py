"""Trading answers in the shapes Alpaca really sends, not only the ones its documents describe.

alpaca-py's own tests record orders whose decimals are JSON numbers (`"qty": 1`,
`"limit_price": 300`), extra members (`"commission": 1.25`), mleg orders without a top-level
symbol, side or type, and option contracts without `multiplier`; its models accept all of them.
Each body below is decoded the way the trading transport decodes Alpaca's bytes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.alpaca.options import parse_contract
from app.alpaca.trading import parse_account, parse_order, parse_placed_order, parse_position
from app.alpaca.wire import decode_exact
from app.errors import ErrorCode, GatewayError
from app.models.numbers import NumberText
from app.models.trading import OrderRequest
from app.orders import body_hash, same_body

# An accepted market order as alpaca-py's test suite records Alpaca's answer (number `qty`,
# string `filled_qty`, null prices, an undocumented `commission`).
RECORDED_ORDER = """{
  "id": "61e69015-8549-4bfd-b9c3-01e75843f47d",
  "client_order_id": "eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4",
  "created_at": "2021-03-16T18:38:01.942282Z", "updated_at": "2021-03-16T18:38:01.942282Z",
  "submitted_at": "2021-03-16T18:38:01.937734Z", "filled_at": null,
  "asset_id": "904837e3-3b76-47ec-b432-046db621571b", "symbol": "AAPL",
  "asset_class": "us_equity", "notional": null, "qty": 1, "filled_qty": "0",
  "filled_avg_price": null, "order_class": "simple", "order_type": "limit", "type": "limit",
  "side": "buy", "time_in_force": "day", "limit_price": 400.10, "stop_price": null,
  "status": "accepted", "extended_hours": false, "legs": null, "trail_percent": null,
  "trail_price": null, "hwm": null, "position_intent": "buy_to_open", "commission": 1.25
}"""


def recorded(**changes: Any) -> str:
    order = json.loads(RECORDED_ORDER)
    order.update(changes)
    # Rewrite the price with its own text: json.dumps would write 400.1.
    return json.dumps(order).replace('"limit_price": 400.1', '"limit_price": 400.10')


def test_number_decimals_pass_on_as_the_exact_text_alpaca_wrote() -> None:
    order = parse_order(decode_exact(recorded()))

    assert order["qty"] == "1"
    assert order["limit_price"] == "400.10"  # a float would have said 400.1
    assert order["filled_qty"] == "0"
    assert order["filled_avg_price"] is None
    assert order["commission"] == 1.25  # not a declared decimal: a JSON number, as sent
    assert type(order["limit_price"]) is str


def test_a_long_decimal_is_not_rounded() -> None:
    body = RECORDED_ORDER.replace('"qty": 1,', '"qty": 123456789012.123456789,')

    order = parse_order(decode_exact(body))

    assert order["qty"] == "123456789012.123456789"


def test_a_decimal_alpaca_left_out_stays_out() -> None:
    wire = json.loads(recorded())
    del wire["stop_price"], wire["hwm"], wire["order_type"]

    order = parse_order(decode_exact(json.dumps(wire)))

    assert "stop_price" not in order
    assert "hwm" not in order
    assert order["qty"] == "1"


def test_an_mleg_order_without_symbol_side_or_type_is_an_order() -> None:
    leg = json.loads(recorded(symbol="AAPL250117C00200000", ratio_qty=1))
    wire = json.loads(recorded(order_class="mleg", symbol="", side="", type=""))
    del wire["order_type"]
    wire["legs"] = [leg]

    order = parse_order(decode_exact(json.dumps(wire)))

    assert order["symbol"] == ""
    assert order["legs"][0]["symbol"] == "AAPL250117C00200000"
    assert order["legs"][0]["ratio_qty"] == "1"


@pytest.mark.parametrize(
    "broken",
    [
        {"qty": "one"},
        {"qty": True},
        {"limit_price": [400]},
        {"id": None},
        {"status": 3},
    ],
    ids=["word-qty", "bool-qty", "list-price", "no-id", "numeric-status"],
)
def test_what_is_really_broken_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_order(decode_exact(recorded(**broken)))

    assert exc_info.value.code is ErrorCode.UPSTREAM_BAD_RESPONSE


def test_an_accepted_order_is_accepted_whatever_else_its_answer_breaks() -> None:
    # Alpaca answered 2xx: the order exists. Only its id must be readable.
    wire = decode_exact(recorded(qty="one", status=3))

    order = parse_placed_order(wire)

    assert order["id"] == "61e69015-8549-4bfd-b9c3-01e75843f47d"
    assert order["qty"] == "one"  # passed on as Alpaca sent it, not repaired


def test_an_accepted_answer_without_an_id_is_still_a_bad_response() -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_placed_order(decode_exact(recorded(id=None)))

    assert exc_info.value.code is ErrorCode.UPSTREAM_BAD_RESPONSE


def test_account_and_position_decimals_as_numbers_keep_their_text() -> None:
    account = parse_account(
        decode_exact(
            '{"id": "a", "account_number": "PA1", "status": "ACTIVE", "cash": 10000.50,'
            ' "buying_power": "40000.00", "daytrade_count": 0, "multiplier": 4}'
        )
    )
    position = parse_position(
        decode_exact(
            '{"symbol": "AAPL", "asset_id": "x", "exchange": "NASDAQ", "asset_class": "us_equity",'
            ' "qty": 10, "avg_entry_price": 172.10, "cost_basis": "1721.0", "side": "long"}'
        )
    )

    assert account["cash"] == "10000.50"
    assert account["buying_power"] == "40000.00"
    assert account["multiplier"] == "4"
    assert account["daytrade_count"] == 0  # an integer field stays an integer
    assert position["qty"] == "10"
    assert position["avg_entry_price"] == "172.10"


def test_an_option_contract_without_multiplier_and_with_a_number_strike() -> None:
    contract = parse_contract(
        decode_exact(
            '{"id": "c", "symbol": "AAPL231103C00170000", "name": "AAPL Nov 03 2023 170 Call",'
            ' "status": "active", "tradable": true, "expiration_date": "2023-11-03",'
            ' "root_symbol": "AAPL", "underlying_symbol": "AAPL", "underlying_asset_id": "u",'
            ' "type": "call", "style": "american", "strike_price": 170.50, "size": "100",'
            ' "open_interest": "0", "close_price": null}'
        )
    )

    assert "multiplier" not in contract
    assert contract["strike_price"] == "170.50"
    assert contract["size"] == "100"


def test_an_option_contract_without_a_strike_is_refused() -> None:
    with pytest.raises(GatewayError):
        parse_contract(
            decode_exact(
                '{"id": "c", "symbol": "AAPL231103C00170000", "name": "n", "status": "active",'
                ' "tradable": true, "expiration_date": "2023-11-03", "underlying_symbol": "AAPL",'
                ' "underlying_asset_id": "u", "type": "call", "style": "american",'
                ' "size": "100"}'
            )
        )


# --- the Idempotency-Key compares what an order means, not how it was spelled -----------------
def order(body: str) -> OrderRequest:
    """An order body as the API decodes it: numbers as their own text."""
    return OrderRequest.model_validate(json.loads(body, parse_float=NumberText))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ('"qty": "2", "limit_price": "400.10"', '"qty": "2", "limit_price": "400.1"'),
        ('"qty": "2", "limit_price": "400.1"', '"qty": "2.0", "limit_price": 400.1'),
        ('"qty": 2, "limit_price": 400.10', '"qty": "2", "limit_price": "400.100"'),
        (
            '"qty": "2", "limit_price": "1"',
            '"qty": "2", "limit_price": "1", "extended_hours": false',
        ),
        (
            '"qty": "2", "limit_price": "1"',
            '"qty": "2", "limit_price": "1", "order_class": "simple"',
        ),
        ('"qty": "2", "limit_price": "1"', '"qty": "2", "limit_price": "1", "order_class": ""'),
        ('"qty": "100", "limit_price": "1"', '"qty": 1e2, "limit_price": "1"'),
    ],
)
def test_the_same_order_spelled_differently_is_the_same_order(first: str, second: str) -> None:
    fields = '"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "day"'
    a, b = order(f"{{{fields}, {first}}}"), order(f"{{{fields}, {second}}}")

    assert body_hash(a) == body_hash(b)
    assert same_body(body_hash(a), b)


@pytest.mark.parametrize(
    "second",
    [
        '"qty": "3", "limit_price": "400.10"',
        '"qty": "2", "limit_price": "400.11"',
        '"qty": "2", "limit_price": "400.10", "extended_hours": true',
        '"notional": "2", "limit_price": "400.10"',
    ],
)
def test_a_different_order_is_a_different_order(second: str) -> None:
    fields = '"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "day"'
    a = order(f'{{{fields}, "qty": "2", "limit_price": "400.10"}}')
    b = order(f"{{{fields}, {second}}}")

    assert body_hash(a) != body_hash(b)
    assert not same_body(body_hash(a), b)


def test_a_json_number_in_an_order_reaches_alpaca_digit_for_digit() -> None:
    fields = '"symbol": "AAPL", "side": "buy", "type": "limit", "time_in_force": "day"'
    placed = order(f'{{{fields}, "qty": 123456789012.123456789, "limit_price": 1e-5}}')

    wire = placed.wire("key-1")

    assert wire["qty"] == "123456789012.123456789"
    assert wire["limit_price"] == "0.00001"
