"""Options through the gateway: OCC validation, exact quotes, greeks only when Alpaca sent them,
contract strings untouched, unknown contract vs no data."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayClient
from tests.emulator.control import EmulatorControl

pytestmark = pytest.mark.integration

OCC = "AAPL240426C00162500"
PUT = "AAPL240426P00150000"
QUOTE: dict[str, Any] = {
    "t": "2024-04-22T19:59:59.992734208Z",
    "bx": "C",
    "bp": 4.15,
    "bs": 16,
    "ax": "B",
    "ap": 4.3,
    "as": 91,
    "c": "A",
}
GREEKS = {
    "delta": 0.7521304109871954,
    "gamma": 0.06241426404871288,
    "rho": 0.009910739032549095,
    "theta": -0.2847623059595503,
    "vega": 0.047540520834498785,
}


async def test_option_quote_is_alpacas_with_provenance_and_feed(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_option_quote(OCC, QUOTE)

    response = await gateway.get(f"/v1/options/{OCC.lower()}/quote")

    assert response.status_code == 200, response.text
    quote = response.json()
    assert (quote["bid_price"], quote["ask_price"]) == (QUOTE["bp"], QUOTE["ap"])
    assert (quote["bid_size"], quote["ask_size"]) == (QUOTE["bs"], QUOTE["as"])
    assert quote["condition"] == "A"
    assert quote["timestamp"] == QUOTE["t"]
    assert quote["provenance"]["feed"] == "indicative"  # the default is labelled as such
    assert quote["provenance"]["observed_at"] == QUOTE["t"]
    (request,) = [r for r in await emulator.requests() if "options/quotes" in r["path"]]
    assert request["query"]["feed"] == "indicative"


@pytest.mark.parametrize(
    "bad", ["AAPL", "AAPL24042C00162500", "AAPL241340C00162500", "../x", "A" * 30]
)
async def test_malformed_contract_is_rejected_before_any_upstream_call(
    emulator: EmulatorControl, gateway: GatewayClient, bad: str
) -> None:
    response = await gateway.get(f"/v1/options/{bad}/quote")

    assert response.status_code in (404, 422)  # `../x` never even matches the route
    assert response.json()["code"] in ("VALIDATION_ERROR", "ROUTE_NOT_FOUND")
    assert await emulator.calls() == {}


async def test_unknown_contract_vs_known_contract_without_a_quote(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_option_contract(PUT, {})

    unknown = await gateway.get(f"/v1/options/{OCC}/quote")
    no_data = await gateway.get(f"/v1/options/{PUT}/quote")

    assert unknown.status_code == 404
    assert unknown.json()["code"] == "CONTRACT_NOT_FOUND"
    assert no_data.status_code == 404
    assert no_data.json()["code"] == "NO_DATA"


async def test_chain_passes_greeks_and_iv_exactly_and_null_when_absent(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_asset("AAPL", {})
    await emulator.set_option_snapshot(
        OCC, {"latestQuote": QUOTE, "greeks": GREEKS, "impliedVolatility": 0.3372405712050441}
    )
    await emulator.set_option_snapshot(PUT, {"latestQuote": {**QUOTE, "bp": 0}})

    response = await gateway.get("/v1/options/chain/AAPL")

    assert response.status_code == 200, response.text
    chain = response.json()
    with_greeks, without = chain["snapshots"][OCC], chain["snapshots"][PUT]
    assert with_greeks["greeks"] == GREEKS
    assert with_greeks["implied_volatility"] == 0.3372405712050441
    assert without["greeks"] is None
    assert without["implied_volatility"] is None
    assert without["latest_quote"]["bid_price"] is None  # 0 is "no bid", never a price
    assert with_greeks["provenance"]["observed_at"] == QUOTE["t"]


async def test_chain_of_unknown_underlying_is_symbol_not_found(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    response = await gateway.get("/v1/options/chain/ZZZZ")

    assert response.status_code == 404
    assert response.json()["code"] == "SYMBOL_NOT_FOUND"


async def test_contracts_keep_alpacas_decimal_strings(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_option_contract(OCC, {"open_interest": "1204", "close_price": "4.2"})

    response = await gateway.get("/v1/options/contracts", params={"underlying": "AAPL"})

    assert response.status_code == 200, response.text
    (contract,) = response.json()["contracts"]
    assert contract["symbol"] == OCC
    assert contract["strike_price"] == "162.5"
    assert isinstance(contract["size"], str)
    assert isinstance(contract["multiplier"], str)
    assert contract["open_interest"] == "1204"
    assert contract["close_price"] == "4.2"
    (request,) = [r for r in await emulator.requests() if r["path"] == "/v2/options/contracts"]
    assert request["query"]["underlying_symbols"] == "AAPL"
