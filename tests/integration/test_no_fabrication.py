"""The central promise, as a property: whatever Alpaca serves, every value the gateway returns is
one Alpaca sent (unchanged), every missing value is null or a typed error, and nothing else
appears. Random upstream data: sub-penny prices, zero and absent sides, nanosecond and days-old
timestamps, random symbols, some with no data and some unknown to Alpaca."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
PRICE = st.one_of(
    st.just(0),
    st.decimals(min_value="0.0001", max_value="99999", places=4).map(float),
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=100_000),
)
SIZE = st.integers(min_value=0, max_value=4_000_000)
EXCHANGE = st.sampled_from(["V", "Q", "N", "K", "P", "Z"])


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """RFC 3339 with 0..9 fractional digits, from a few ms to ten days old."""
    age = draw(st.floats(min_value=0.001, max_value=10 * 86_400))
    moment = NOW - timedelta(seconds=age)
    digits = draw(st.integers(min_value=0, max_value=9))
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits == 0:
        return base + "Z"
    fraction = f"{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    return f"{base}.{fraction}Z"


@st.composite
def wire_quotes(draw: st.DrawFn) -> dict[str, Any]:
    quote: dict[str, Any] = {
        "t": draw(timestamps()),
        "c": draw(st.lists(st.sampled_from(["R", "Y"]), max_size=2)),
        "z": "C",
    }
    for price, size, exchange in (("bp", "bs", "bx"), ("ap", "as", "ax")):
        if draw(st.booleans()) or draw(st.booleans()):  # mostly present, sometimes absent
            quote[price] = draw(PRICE)
            quote[size] = draw(SIZE)
            quote[exchange] = draw(EXCHANGE)
    return quote


SYMBOL = st.from_regex(r"[A-Z]{1,4}(\.[A-Z])?", fullmatch=True)
CASE = st.sampled_from(["quote", "no_data", "unknown"])


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _has_side(quote: dict[str, Any], price: str) -> bool:
    return quote.get(price) not in (None, 0)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(universe=st.dictionaries(SYMBOL, st.tuples(CASE, wire_quotes()), min_size=1, max_size=8))
async def test_every_returned_value_is_one_alpaca_sent(
    universe: dict[str, tuple[str, dict[str, Any]]],
    emulator: EmulatorControl,
    make_gateway: GatewayFactory,
    redis_url: str,
) -> None:
    await emulator.reset()
    quotes = {s: q for s, (case, q) in universe.items() if case == "quote"}
    no_data = [s for s, (case, _) in universe.items() if case == "no_data"]
    await emulator.set_state(quotes=quotes, assets=no_data)
    # A fresh gateway per example: nothing cached from another example can leak in.
    gateway = await make_gateway()

    response = await gateway.get("/v1/stocks/quotes", params={"symbols": ",".join(universe)})
    received_at = time.time()
    assert response.status_code == 200
    body = response.json()
    assert set(body["quotes"]) | set(body["errors"]) == set(universe)

    for symbol, (case, sent) in universe.items():
        if case == "quote" and (_has_side(sent, "bp") or _has_side(sent, "ap")):
            quote = body["quotes"][symbol]
            for price, size, exchange, side in (
                ("bp", "bs", "bx", "bid"),
                ("ap", "as", "ax", "ask"),
            ):
                if _has_side(sent, price):
                    assert quote[f"{side}_price"] == sent[price]
                    assert type(quote[f"{side}_price"]) is type(sent[price])
                    assert quote[f"{side}_size"] == sent[size]
                    assert quote[f"{side}_exchange"] == sent[exchange]
                else:  # 0 or absent: no side, not a zero
                    assert quote[f"{side}_price"] is None
                    assert quote[f"{side}_size"] is None
                    assert quote[f"{side}_exchange"] is None
            assert quote["timestamp"] == sent["t"]
            provenance = quote.pop("provenance")
            assert provenance["observed_at"] == sent["t"]
            assert provenance["source"] == "emulator"
            observed = datetime.fromisoformat(sent["t"]).timestamp()
            assert abs(provenance["age_ms"] - (received_at - observed) * 1000) < 5_000
            # Nothing in the quote that the emulator did not send (the symbol is the request's).
            sent_values = [*_leaves(sent), symbol, None]
            for leaf in _leaves(quote):
                assert leaf in sent_values, f"{leaf!r} in {symbol} was never sent by Alpaca"
        else:
            assert symbol not in body["quotes"]
            error = body["errors"][symbol]
            expected = "SYMBOL_NOT_FOUND" if case == "unknown" else "NO_DATA"
            assert error["code"] == expected
            assert error["symbol"] == symbol
