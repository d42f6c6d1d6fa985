"""Alpaca's wire format -> our models, checked on Alpaca's own published examples.

The payloads are Alpaca's examples from its OpenAPI documents, as kept in
`tests/contract/alpaca_facts.json` (see `tests/contract/extract_alpaca_facts.py`), never from our
emulator or our code. The field names are the ones
alpaca-py's `alpaca/data/mappings.py` uses; the values must be exactly the ones Alpaca sent.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from app.alpaca.market_data import (
    parse_bar,
    parse_bars_page,
    parse_latest_quotes,
    parse_latest_trades,
    parse_quote,
    parse_snapshot,
    parse_snapshots,
    parse_trade,
    quote_is_empty,
)
from app.alpaca.trading import parse_asset_reply, parse_clock
from app.alpaca.transport import Reply
from app.errors import ErrorCode, GatewayError
from app.reads.stocks import time_bound, timeframe_seconds
from tests.contract.extract_alpaca_facts import load_facts

# alpaca-py's names for Alpaca's one-letter wire keys (alpaca/data/mappings.py).
QUOTE_FIELDS = {
    "t": "timestamp",
    "bx": "bid_exchange",
    "bp": "bid_price",
    "bs": "bid_size",
    "ax": "ask_exchange",
    "ap": "ask_price",
    "as": "ask_size",
    "c": "conditions",
    "z": "tape",
}
TRADE_FIELDS = {
    "t": "timestamp",
    "x": "exchange",
    "p": "price",
    "s": "size",
    "i": "id",
    "c": "conditions",
    "z": "tape",
}
BAR_FIELDS = {
    "t": "timestamp",
    "o": "open",
    "h": "high",
    "l": "low",
    "c": "close",
    "v": "volume",
    "n": "trade_count",
    "vw": "vwap",
}
SNAPSHOT_MEMBERS = {
    "latestTrade": "latest_trade",
    "latestQuote": "latest_quote",
    "minuteBar": "minute_bar",
    "dailyBar": "daily_bar",
    "prevDailyBar": "prev_daily_bar",
}


# --- Alpaca's documents, through the facts taken from them ----------------------------------
@pytest.fixture(scope="module")
def market_data_api() -> dict[str, Any]:
    facts: dict[str, Any] = load_facts()["market-data"]
    return facts


@pytest.fixture(scope="module")
def trading_api() -> dict[str, Any]:
    facts: dict[str, Any] = load_facts()["trading"]
    return facts


def schema_example(document: dict[str, Any], schema: str) -> dict[str, Any]:
    example: dict[str, Any] = document["schema_examples"][schema]
    return copy.deepcopy(example)


def response_example(document: dict[str, Any], path: str) -> Any:
    """The documented example of the 200 answer to GET ``path``."""
    return copy.deepcopy(document["operations"][f"GET {path}"]["ok"]["example"])


@pytest.fixture
def quote_wire(market_data_api: dict[str, Any]) -> dict[str, Any]:
    return schema_example(market_data_api, "stock_quote")


@pytest.fixture
def trade_wire(market_data_api: dict[str, Any]) -> dict[str, Any]:
    return schema_example(market_data_api, "stock_trade")


@pytest.fixture
def bar_wire(market_data_api: dict[str, Any]) -> dict[str, Any]:
    return schema_example(market_data_api, "stock_bar")


def assert_maps_exactly(parsed: Any, wire: dict[str, Any], fields: dict[str, str]) -> None:
    """Every wire field is under its alpaca-py name with the same value and the same JSON type."""
    for wire_key, name in fields.items():
        value = parsed[name]
        assert value == wire[wire_key], f"{wire_key} -> {name}"
        # 56457696 must not become 56457696.0, nor 172.62 a Decimal or a string.
        assert type(value) is type(wire[wire_key]), f"{wire_key} -> {name}: {type(value)}"


def assert_bad_response(exc_info: pytest.ExceptionInfo[GatewayError], upstream: str) -> None:
    assert exc_info.value.code is ErrorCode.UPSTREAM_BAD_RESPONSE
    assert exc_info.value.upstream == upstream


# --- quotes -----------------------------------------------------------------------------------
def test_stock_quote_example_maps_every_field_to_alpaca_py_names(
    quote_wire: dict[str, Any],
) -> None:
    quote = parse_quote("AAPL", quote_wire)

    assert quote["symbol"] == "AAPL"
    assert_maps_exactly(quote, quote_wire, QUOTE_FIELDS)


def test_latest_quotes_example_maps_each_symbol(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/quotes/latest")

    quotes = parse_latest_quotes(payload, ["AAPL", "TSLA"])

    assert set(quotes) == {"AAPL", "TSLA"}
    for symbol, quote in quotes.items():
        assert quote is not None
        assert quote["symbol"] == symbol
        assert_maps_exactly(quote, payload["quotes"][symbol], QUOTE_FIELDS)


def test_nanosecond_timestamp_text_is_kept_verbatim(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/quotes/latest")
    assert payload["quotes"]["AAPL"]["t"] == "2022-08-17T10:07:40.286587431Z"  # the document

    quotes = parse_latest_quotes(payload, ["AAPL"])

    assert quotes["AAPL"] is not None
    assert quotes["AAPL"]["timestamp"] == "2022-08-17T10:07:40.286587431Z"


def test_sub_penny_and_long_decimal_prices_round_trip_exactly(quote_wire: dict[str, Any]) -> None:
    quote_wire.update(bp=0.0001, ap=172.6201, bs=100, **{"as": 3})
    wire_text = json.dumps(quote_wire)

    quote = parse_quote("AAPL", json.loads(wire_text))
    emitted = json.dumps(quote)

    assert quote["bid_price"] == 0.0001
    assert quote["ask_price"] == 172.6201
    assert '"bid_price": 0.0001' in emitted
    assert '"ask_price": 172.6201' in emitted
    assert '"bid_size": 100,' in emitted  # an integer size stays an integer


def test_zero_bid_is_null_not_zero(quote_wire: dict[str, Any]) -> None:
    quote_wire.update(bp=0, bs=0, bx="")  # IEX outside hours: "no active bid"

    quote = parse_quote("AAPL", quote_wire)

    assert (quote["bid_price"], quote["bid_size"], quote["bid_exchange"]) == (None, None, None)
    assert (quote["ask_price"], quote["ask_size"], quote["ask_exchange"]) == (
        quote_wire["ap"],
        quote_wire["as"],
        quote_wire["ax"],
    )
    assert not quote_is_empty(quote)


def test_zero_ask_is_null_not_zero(quote_wire: dict[str, Any]) -> None:
    quote_wire.update(ap=0.0, **{"as": 0, "ax": ""})

    quote = parse_quote("AAPL", quote_wire)

    assert (quote["ask_price"], quote["ask_size"], quote["ask_exchange"]) == (None, None, None)
    assert quote["bid_price"] == quote_wire["bp"]


def test_absent_bid_side_is_null(quote_wire: dict[str, Any]) -> None:
    for key in ("bp", "bs", "bx"):
        del quote_wire[key]

    quote = parse_quote("AAPL", quote_wire)

    assert (quote["bid_price"], quote["bid_size"], quote["bid_exchange"]) == (None, None, None)
    assert quote["ask_price"] == quote_wire["ap"]


def test_quote_with_both_sides_zero_is_empty(quote_wire: dict[str, Any]) -> None:
    quote_wire.update(bp=0, bs=0, ap=0, **{"as": 0})

    quote = parse_quote("AAPL", quote_wire)

    assert quote_is_empty(quote)
    assert quote["bid_price"] is None
    assert quote["ask_price"] is None


def test_quote_with_a_real_side_is_not_empty(quote_wire: dict[str, Any]) -> None:
    assert not quote_is_empty(parse_quote("AAPL", quote_wire))


def test_quote_without_timestamp_is_a_bad_response(quote_wire: dict[str, Any]) -> None:
    del quote_wire["t"]

    with pytest.raises(GatewayError) as exc_info:
        parse_quote("AAPL", quote_wire)

    assert_bad_response(exc_info, "data")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("bp", "172.6", id="price-as-string"),
        pytest.param("ap", -172.7, id="negative-price"),
        pytest.param("bp", True, id="bool-as-price"),
        pytest.param("bs", False, id="bool-as-size"),
        pytest.param("as", -1, id="negative-size"),
        pytest.param("bp", [172.6], id="price-as-list"),
        pytest.param("t", 1660730860, id="timestamp-as-number"),
        pytest.param("t", "2022-08-17 10:07:40", id="timestamp-not-rfc3339"),
        pytest.param("t", "", id="timestamp-empty"),
        pytest.param("c", "R", id="stock-conditions-as-string"),
        pytest.param("c", ["R", 1], id="conditions-with-a-number"),
        pytest.param("bx", 17, id="exchange-as-number"),
    ],
)
def test_quote_with_a_wrongly_typed_field_is_a_bad_response(
    quote_wire: dict[str, Any], field: str, value: Any
) -> None:
    quote_wire[field] = value

    with pytest.raises(GatewayError) as exc_info:
        parse_quote("AAPL", quote_wire)

    assert_bad_response(exc_info, "data")


@pytest.mark.parametrize("raw", [None, [], "quote", 172.6], ids=repr)
def test_quote_that_is_not_an_object_is_a_bad_response(raw: Any) -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_quote("AAPL", raw)

    assert_bad_response(exc_info, "data")


def test_unknown_extra_fields_are_tolerated(quote_wire: dict[str, Any]) -> None:
    expected = parse_quote("AAPL", quote_wire)
    quote_wire.update(q=123456, ns="new", nested={"x": [1, 2]})

    assert parse_quote("AAPL", quote_wire) == expected


def test_omitted_and_null_symbols_are_none_in_latest_quotes(
    market_data_api: dict[str, Any],
) -> None:
    payload = response_example(market_data_api, "/v2/stocks/quotes/latest")
    payload["quotes"]["MSFT"] = None  # alpaca-py drops `SYM: null`, so Alpaca may send it

    quotes = parse_latest_quotes(payload, ["AAPL", "MSFT", "ZZZZ"])

    assert quotes["AAPL"] is not None
    assert quotes["MSFT"] is None
    assert quotes["ZZZZ"] is None
    assert set(quotes) == {"AAPL", "MSFT", "ZZZZ"}


def test_empty_quotes_map_means_no_value_for_any_symbol() -> None:
    assert parse_latest_quotes({"quotes": {}}, ["AAPL", "TSLA"]) == {"AAPL": None, "TSLA": None}


def test_latest_quotes_currency_member_is_tolerated(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/quotes/latest")
    payload["currency"] = "USD"

    assert parse_latest_quotes(payload, ["TSLA"])["TSLA"] is not None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({}, id="quotes-member-missing"),
        pytest.param({"currency": "USD"}, id="only-currency"),
        pytest.param({"quote": {}, "symbol": "AAPL"}, id="single-symbol-shape"),
        pytest.param({"quotes": []}, id="quotes-is-a-list"),
        pytest.param([], id="root-is-a-list"),
        pytest.param(None, id="empty-body"),
    ],
)
def test_latest_quotes_in_another_shape_is_a_bad_response(payload: Any) -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_latest_quotes(payload, ["AAPL"])

    assert_bad_response(exc_info, "data")


def test_one_malformed_quote_in_a_batch_fails_the_answer(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/quotes/latest")
    payload["quotes"]["TSLA"]["ap"] = "911.6"

    with pytest.raises(GatewayError) as exc_info:
        parse_latest_quotes(payload, ["AAPL", "TSLA"])

    assert_bad_response(exc_info, "data")


# --- trades -----------------------------------------------------------------------------------
def test_stock_trade_example_maps_every_field_to_alpaca_py_names(
    trade_wire: dict[str, Any],
) -> None:
    trade = parse_trade("AAPL", trade_wire)

    assert trade["symbol"] == "AAPL"
    assert_maps_exactly(trade, trade_wire, TRADE_FIELDS)
    assert trade["update"] is None


def test_latest_trades_example_maps_each_symbol(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/trades/latest")

    trades = parse_latest_trades(payload, ["AAPL", "TSLA"])

    assert trades["TSLA"] is None  # omitted by Alpaca
    assert trades["AAPL"] is not None
    assert_maps_exactly(trades["AAPL"], payload["trades"]["AAPL"], TRADE_FIELDS)


def test_trade_correction_flag_is_kept(trade_wire: dict[str, Any]) -> None:
    trade_wire["u"] = "corrected"

    assert parse_trade("AAPL", trade_wire)["update"] == "corrected"


def test_trade_id_beyond_32_bits_is_kept_exactly(trade_wire: dict[str, Any]) -> None:
    trade_wire["i"] = 52983525033527  # uint64 in the schema

    assert parse_trade("AAPL", trade_wire)["id"] == 52983525033527


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("p", None, id="price-null"),
        pytest.param("p", "178.26", id="price-as-string"),
        pytest.param("p", -0.01, id="negative-price"),
        pytest.param("s", True, id="bool-as-size"),
        pytest.param("i", 1.5, id="fractional-id"),
        pytest.param("t", "2022-01-03", id="date-only-timestamp"),
    ],
)
def test_trade_with_a_wrongly_typed_field_is_a_bad_response(
    trade_wire: dict[str, Any], field: str, value: Any
) -> None:
    trade_wire[field] = value

    with pytest.raises(GatewayError) as exc_info:
        parse_trade("AAPL", trade_wire)

    assert_bad_response(exc_info, "data")


@pytest.mark.parametrize("missing", ["p", "s", "t"])
def test_trade_without_a_required_field_is_a_bad_response(
    trade_wire: dict[str, Any], missing: str
) -> None:
    del trade_wire[missing]

    with pytest.raises(GatewayError) as exc_info:
        parse_trade("AAPL", trade_wire)

    assert_bad_response(exc_info, "data")


def test_latest_trades_without_trades_member_is_a_bad_response() -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_latest_trades({"quotes": {}}, ["AAPL"])

    assert_bad_response(exc_info, "data")


# --- bars -------------------------------------------------------------------------------------
def test_stock_bar_example_maps_every_field_to_alpaca_py_names(bar_wire: dict[str, Any]) -> None:
    assert_maps_exactly(parse_bar("AAPL", bar_wire), bar_wire, BAR_FIELDS)


def test_latest_bars_example_maps_each_symbol(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/bars/latest")

    for symbol, wire_bar in payload["bars"].items():
        assert_maps_exactly(parse_bar(symbol, wire_bar), wire_bar, BAR_FIELDS)


def test_bars_page_keeps_bars_and_the_opaque_page_token(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/bars")

    bars, token = parse_bars_page(payload, "AAPL")

    assert token == "QUFQTHxNfDIwMjItMDEtMDNUMDk6MDA6MDAuMDAwMDAwMDAwWg=="
    assert len(bars) == len(payload["bars"]["AAPL"]) == 1
    assert_maps_exactly(bars[0], payload["bars"]["AAPL"][0], BAR_FIELDS)


def test_last_bars_page_has_no_token(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/bars")
    payload["next_page_token"] = None

    bars, token = parse_bars_page(payload, "AAPL")

    assert token is None
    assert len(bars) == 1


def test_bars_page_without_the_symbol_is_empty_not_invented() -> None:
    assert parse_bars_page({"bars": {}, "next_page_token": None}, "AAPL") == ([], None)


def test_bars_page_for_other_symbols_only_keeps_the_token(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/bars")

    bars, token = parse_bars_page(payload, "TSLA")

    assert bars == []
    assert token == payload["next_page_token"]


@pytest.mark.parametrize("symbol", ["AAPL", "TSLA"], ids=["with-bars", "without-bars"])
def test_empty_page_token_ends_pagination(market_data_api: dict[str, Any], symbol: str) -> None:
    # Only null is documented as "no more pages"; an empty token must not read as "ask again".
    payload = response_example(market_data_api, "/v2/stocks/bars")
    payload["next_page_token"] = ""

    _, token = parse_bars_page(payload, symbol)

    assert token is None


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"next_page_token": None}, id="bars-member-missing"),
        pytest.param({"bars": {"AAPL": {"c": 1}}, "next_page_token": None}, id="bars-not-a-list"),
        pytest.param({"bars": {}, "next_page_token": 7}, id="token-not-a-string"),
        pytest.param({"bars": [], "next_page_token": None}, id="bars-is-a-list"),
    ],
)
def test_bars_page_in_another_shape_is_a_bad_response(payload: Any) -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_bars_page(payload, "AAPL")

    assert_bad_response(exc_info, "data")


@pytest.mark.parametrize("missing", ["t", "o", "h", "l", "c", "v"])
def test_bar_without_a_required_field_is_a_bad_response(
    bar_wire: dict[str, Any], missing: str
) -> None:
    del bar_wire[missing]

    with pytest.raises(GatewayError) as exc_info:
        parse_bar("AAPL", bar_wire)

    assert_bad_response(exc_info, "data")


def test_bar_with_fractional_trade_count_is_a_bad_response(bar_wire: dict[str, Any]) -> None:
    bar_wire["n"] = 1727.5

    with pytest.raises(GatewayError) as exc_info:
        parse_bar("AAPL", bar_wire)

    assert_bad_response(exc_info, "data")


# --- snapshots --------------------------------------------------------------------------------
def test_snapshots_root_map_example_maps_every_member(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/snapshots")

    snapshots = parse_snapshots(payload, ["AAPL", "TSLA"])

    for symbol in ("AAPL", "TSLA"):
        snapshot = snapshots[symbol]
        assert snapshot is not None
        assert snapshot["symbol"] == symbol
        wire_snapshot = payload[symbol]
        assert_maps_exactly(snapshot["latest_quote"], wire_snapshot["latestQuote"], QUOTE_FIELDS)
        assert_maps_exactly(snapshot["latest_trade"], wire_snapshot["latestTrade"], TRADE_FIELDS)
        for member in ("minuteBar", "dailyBar", "prevDailyBar"):
            parsed = snapshot[SNAPSHOT_MEMBERS[member]]
            assert_maps_exactly(parsed, wire_snapshot[member], BAR_FIELDS)


def test_snapshot_of_omitted_or_null_symbol_is_none(market_data_api: dict[str, Any]) -> None:
    payload = response_example(market_data_api, "/v2/stocks/snapshots")
    payload["MSFT"] = None

    snapshots = parse_snapshots(payload, ["AAPL", "MSFT", "ZZZZ"])

    assert snapshots["AAPL"] is not None
    assert snapshots["MSFT"] is None
    assert snapshots["ZZZZ"] is None


def test_empty_snapshots_root_means_no_value_for_any_symbol() -> None:
    assert parse_snapshots({}, ["AAPL"]) == {"AAPL": None}


def test_snapshot_with_all_members_null_is_none() -> None:
    wire_snapshot = dict.fromkeys(SNAPSHOT_MEMBERS)

    assert parse_snapshot("AAPL", wire_snapshot) is None
    assert parse_snapshots({"AAPL": wire_snapshot}, ["AAPL"]) == {"AAPL": None}


def test_snapshot_with_only_a_trade_keeps_the_trade_and_nulls_the_rest(
    trade_wire: dict[str, Any],
) -> None:
    snapshot = parse_snapshot("AAPL", {"latestTrade": trade_wire})

    assert snapshot is not None
    assert_maps_exactly(snapshot["latest_trade"], trade_wire, TRADE_FIELDS)
    for name in ("latest_quote", "minute_bar", "daily_bar", "prev_daily_bar"):
        assert snapshot[name] is None


def test_snapshot_quote_without_bid_or_ask_is_not_dressed_as_data(
    market_data_api: dict[str, Any],
) -> None:
    payload = response_example(market_data_api, "/v2/stocks/snapshots")
    payload["AAPL"]["latestQuote"].update(bp=0, bs=0, ap=0, **{"as": 0})

    snapshot = parse_snapshots(payload, ["AAPL"])["AAPL"]

    assert snapshot is not None
    assert snapshot["latest_quote"] is None
    assert snapshot["latest_trade"] is not None


@pytest.mark.parametrize(
    ("member", "value"),
    [
        pytest.param("latestTrade", "trade", id="trade-not-an-object"),
        pytest.param("dailyBar", {"t": "2022-08-16T04:00:00Z"}, id="bar-without-prices"),
        pytest.param("latestQuote", {"bp": 1, "ap": 2}, id="quote-without-timestamp"),
    ],
)
def test_snapshot_with_a_malformed_member_is_a_bad_response(
    market_data_api: dict[str, Any], member: str, value: Any
) -> None:
    payload = response_example(market_data_api, "/v2/stocks/snapshots")
    payload["AAPL"][member] = value

    with pytest.raises(GatewayError) as exc_info:
        parse_snapshots(payload, ["AAPL"])

    assert_bad_response(exc_info, "data")


@pytest.mark.parametrize("payload", [[], None, "AAPL"], ids=repr)
def test_snapshots_root_that_is_not_a_map_is_a_bad_response(payload: Any) -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_snapshots(payload, ["AAPL"])

    assert_bad_response(exc_info, "data")


# --- assets and clock (trading API) -----------------------------------------------------------
@pytest.fixture
def asset_wire(trading_api: dict[str, Any]) -> dict[str, Any]:
    return schema_example(trading_api, "Assets")


@pytest.fixture
def alpaca_not_found_code(trading_api: dict[str, Any]) -> int:
    """Alpaca's own not-found code, from the one 404 example its trading document gives."""
    operation = trading_api["operations"]["GET /v2/options/contracts/{symbol_or_id}"]
    code: int = operation["error_examples"]["404"]["code"]
    return code


def test_asset_example_is_a_known_asset(asset_wire: dict[str, Any]) -> None:
    asset = parse_asset_reply(Reply(200, asset_wire))

    assert asset is not None
    assert asset["symbol"] == asset_wire["symbol"] == "AAPL"
    assert asset["status"] == asset_wire["status"]
    assert asset["tradable"] is asset_wire["tradable"]
    assert asset["asset_class"] == asset_wire["class"]


def test_asset_with_unknown_fields_and_new_enum_values_is_tolerated(
    asset_wire: dict[str, Any],
) -> None:
    # alpaca-py#624: Alpaca adds enum values (crypto_perp, ASCX) without notice.
    asset_wire.update(exchange="ASCX", attributes=["overnight_tradable"], new_field={"x": 1})

    asset = parse_asset_reply(Reply(200, asset_wire))

    assert asset is not None
    assert asset["symbol"] == "AAPL"


def test_asset_404_with_alpaca_not_found_body_means_unknown_symbol(
    alpaca_not_found_code: int,
) -> None:
    body = {"code": alpaca_not_found_code, "message": "asset not found"}

    assert parse_asset_reply(Reply(404, body)) is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="empty-body"),
        pytest.param({"message": "Not Found"}, id="message-only"),
        pytest.param("404 page not found", id="plain-text"),
        pytest.param({"code": "40410000", "message": "asset not found"}, id="code-as-string"),
    ],
)
def test_bare_404_is_a_bad_response_not_an_unknown_symbol(body: Any) -> None:
    with pytest.raises(GatewayError) as exc_info:
        parse_asset_reply(Reply(404, body))

    assert_bad_response(exc_info, "trading")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("tradable", None, id="tradable-missing"),
        pytest.param("tradable", "true", id="tradable-as-string"),
        pytest.param("symbol", None, id="symbol-missing"),
        pytest.param("class", 1, id="class-as-number"),
    ],
)
def test_asset_with_a_broken_field_is_a_bad_response(
    asset_wire: dict[str, Any], field: str, value: Any
) -> None:
    if value is None:
        del asset_wire[field]
    else:
        asset_wire[field] = value

    with pytest.raises(GatewayError) as exc_info:
        parse_asset_reply(Reply(200, asset_wire))

    assert_bad_response(exc_info, "trading")


@pytest.fixture
def clock_wire(trading_api: dict[str, Any]) -> dict[str, Any]:
    return schema_example(trading_api, "legacy_clock")


def test_clock_example_keeps_alpaca_text_and_offsets(clock_wire: dict[str, Any]) -> None:
    clock = parse_clock(clock_wire)

    assert clock["timestamp"] == clock_wire["timestamp"] == "2025-06-24T14:15:22-04:00"
    assert clock["next_open"] == clock_wire["next_open"]
    assert clock["next_close"] == clock_wire["next_close"]
    assert clock["is_open"] is clock_wire["is_open"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("is_open", None, id="is-open-missing"),
        pytest.param("is_open", "true", id="is-open-as-string"),
        pytest.param("is_open", 1, id="is-open-as-number"),
        pytest.param("next_open", None, id="next-open-missing"),
        pytest.param("timestamp", "June 24", id="timestamp-not-rfc3339"),
    ],
)
def test_clock_with_a_broken_field_is_a_bad_response(
    clock_wire: dict[str, Any], field: str, value: Any
) -> None:
    if value is None:
        del clock_wire[field]
    else:
        clock_wire[field] = value

    with pytest.raises(GatewayError) as exc_info:
        parse_clock(clock_wire)

    assert_bad_response(exc_info, "trading")


# --- request parameters: timeframe and start/end ----------------------------------------------
# From the `timeframe` parameter of Alpaca's market-data document: [1-59]Min/T, [1-23]Hour/H,
# 1Day/1D, 1Week/1W, [1,2,3,4,6,12]Month/M.
@pytest.mark.parametrize(
    ("timeframe", "seconds"),
    [
        ("1Min", 60),
        ("5T", 300),
        ("59Min", 59 * 60),
        ("1Hour", 3600),
        ("12H", 12 * 3600),
        ("23Hour", 23 * 3600),
        ("1Day", 86_400),
        ("1D", 86_400),
        ("1Week", 7 * 86_400),
        ("1W", 7 * 86_400),
    ],
)
def test_alpaca_timeframes_have_their_bar_length(timeframe: str, seconds: int) -> None:
    assert timeframe_seconds(timeframe) == seconds


@pytest.mark.parametrize("timeframe", ["1Month", "2M", "3Month", "4M", "6Month", "12M"])
def test_alpaca_month_timeframes_are_accepted(timeframe: str) -> None:
    assert timeframe_seconds(timeframe) > 7 * 86_400


@pytest.mark.parametrize(
    "timeframe",
    ["", "0Min", "60Min", "24Hour", "2Day", "2W", "5Month", "1min", "1 Min", "1Sec", "Min", "-1T"],
)
def test_timeframe_alpaca_would_refuse_is_a_validation_error(timeframe: str) -> None:
    with pytest.raises(GatewayError) as exc_info:
        timeframe_seconds(timeframe)

    assert exc_info.value.code is ErrorCode.VALIDATION_ERROR


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-01-03", datetime(2022, 1, 3, tzinfo=UTC)),
        ("2022-01-03T09:00:00Z", datetime(2022, 1, 3, 9, tzinfo=UTC)),
        ("2025-06-24T14:15:22-04:00", datetime(2025, 6, 24, 18, 15, 22, tzinfo=UTC)),
        (
            "2022-08-17T10:07:40.286587431Z",
            datetime(2022, 8, 17, 10, 7, 40, 286587, tzinfo=UTC),
        ),
    ],
)
def test_start_and_end_accept_rfc3339_and_dates(text: str, expected: datetime) -> None:
    assert time_bound("start", text) == pytest.approx(expected.timestamp(), abs=1e-6)


@pytest.mark.parametrize(
    "text", ["yesterday", "2022-02-30", "2022-13-01T00:00:00Z", "2022-01-03T09:00", "1641200400"]
)
def test_start_that_is_not_a_real_time_is_a_validation_error(text: str) -> None:
    with pytest.raises(GatewayError) as exc_info:
        time_bound("start", text)

    assert exc_info.value.code is ErrorCode.VALIDATION_ERROR
