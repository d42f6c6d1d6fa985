"""Option market data and option contracts as Alpaca serves them: OCC symbols, the OPRA
entitlement, ``c`` as one string, greeks only when stored, chain filters and pagination, and
contracts derived from their OCC symbol. alpaca-py's option clients must parse it all."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import httpx
import pytest
from alpaca.data.enums import OptionsFeed
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.requests import OptionChainRequest, OptionLatestQuoteRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import ContractType
from alpaca.trading.models import OptionContract, OptionContractsResponse
from alpaca.trading.requests import GetOptionContractsRequest

from tests.emulator.control import EmulatorControl, EmulatorControlError
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.contract

CALL = "AAPL240426C00162500"
PUT = "AAPL240426P00150000"
LATER_CALL = "AAPL240517C00170000"
MSFT_CALL = "MSFT240426C00400000"
QUOTE = {"t": "2024-04-22T19:59:59.992734208Z", "bx": "C", "bp": 4.15, "bs": 16, "ax": "B",
         "ap": 4.3, "as": 91, "c": "A"}  # fmt: skip
TRADE = {"t": "2024-04-22T19:57:32.589554432Z", "x": "A", "p": 4.1, "s": 1, "c": "I"}
GREEKS = {"delta": 0.7521304109871954, "gamma": 0.06241426404871288, "rho": 0.0099107390325,
          "theta": -0.2847623059595503, "vega": 0.047540520834498785}  # fmt: skip
QUOTES_LATEST = "/v1beta1/options/quotes/latest"
INDICATIVE = {"feed": "indicative"}


def snapshot(**extra: Any) -> dict[str, Any]:
    return {"latestQuote": QUOTE, "latestTrade": TRADE, **extra}


# --- latest quotes and trades -----------------------------------------------------------------


async def test_option_quotes_and_trades_come_back_verbatim_with_c_as_one_string(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_option_quote(CALL, QUOTE)
    await control.set_option_trade(CALL, TRADE)

    quotes = await alpaca.get(QUOTES_LATEST, params={"symbols": f"{CALL},{PUT}", **INDICATIVE})
    trades = await alpaca.get("/v1beta1/options/trades/latest", params={"symbols": CALL})

    assert quotes.json() == {"quotes": {CALL: QUOTE}}  # the unknown PUT is omitted
    assert isinstance(quotes.json()["quotes"][CALL]["c"], str)
    assert "z" not in quotes.json()["quotes"][CALL]
    assert trades.json() == {"trades": {CALL: TRADE}}


async def test_unknown_option_symbols_are_null_when_configured(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.configure(unknown_symbols="null")

    response = await alpaca.get(QUOTES_LATEST, params={"symbols": PUT})

    assert response.json() == {"quotes": {PUT: None}}


@pytest.mark.parametrize(
    "symbol", ["AAPL", "aapl240426C00162500", "AAPL240426X00162500", "AAPL241345C00162500",
               "TOOLONGX240426C00162500", "AAPL240426C0016250"],
)  # fmt: skip
async def test_symbols_that_are_not_occ_fail_the_whole_call(
    control: EmulatorControl, alpaca: httpx.AsyncClient, symbol: str
) -> None:
    response = await alpaca.get(QUOTES_LATEST, params={"symbols": f"{CALL},{symbol}"})

    assert response.status_code == 400
    assert response.json() == {"message": f"invalid symbol: {symbol}"}


async def test_at_most_100_option_symbols_per_call(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    symbols = [f"AAPL240426C{strike:08d}" for strike in range(1000, 102_000, 1000)]

    hundred = await alpaca.get(QUOTES_LATEST, params={"symbols": ",".join(symbols[:100])})
    too_many = await alpaca.get(QUOTES_LATEST, params={"symbols": ",".join(symbols)})

    assert hundred.status_code == 200
    assert too_many.status_code == 400
    assert "100" in too_many.json()["message"]


async def test_free_plan_may_not_query_opra(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_option_quote(CALL, QUOTE)
    query = {"symbols": CALL}

    opra = await alpaca.get(QUOTES_LATEST, params={**query, "feed": "opra"})
    chain = await alpaca.get("/v1beta1/options/snapshots/AAPL", params={"feed": "opra"})
    default = await alpaca.get(QUOTES_LATEST, params=query)
    unknown = await alpaca.get(QUOTES_LATEST, params={**query, "feed": "sip"})
    await control.configure(plan="unlimited")
    paid = await alpaca.get(QUOTES_LATEST, params={**query, "feed": "opra"})

    assert (opra.status_code, chain.status_code) == (403, 403)
    assert "subscription" in opra.json()["message"]
    assert set(opra.json()) == {"message"}  # a data-API body: no code
    assert default.status_code == 200
    assert unknown.json() == {"message": "invalid feed: sip"}
    assert paid.status_code == 200


# --- snapshots and the chain ------------------------------------------------------------------


async def test_greeks_and_implied_volatility_appear_only_when_stored(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    with_greeks = snapshot(greeks=GREEKS, impliedVolatility=0.3372405712050441)
    await control.set_state(option_snapshots={CALL: with_greeks, PUT: {"latestQuote": QUOTE}})

    chain = await alpaca.get("/v1beta1/options/snapshots/AAPL", params=INDICATIVE)
    by_symbols = await alpaca.get(
        "/v1beta1/options/snapshots", params={"symbols": f"{PUT},{CALL}", **INDICATIVE}
    )

    expected = {
        "snapshots": {CALL: with_greeks, PUT: {"latestQuote": QUOTE}},
        "next_page_token": None,
    }
    assert chain.json() == expected
    assert by_symbols.json() == expected
    assert "greeks" not in chain.json()["snapshots"][PUT]
    assert "impliedVolatility" not in chain.json()["snapshots"][PUT]


async def test_chain_holds_the_underlyings_options_and_applies_its_filters(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    adjusted = "AAPLQ240426C00100000"  # a different root whose stored contract names AAPL
    await control.set_state(
        option_snapshots={s: snapshot() for s in (CALL, PUT, LATER_CALL, MSFT_CALL, adjusted)},
        option_contracts={adjusted: {"underlying_symbol": "AAPL", "root_symbol": "AAPLQ"}},
    )

    async def chain(**query: str) -> list[str]:
        response = await alpaca.get("/v1beta1/options/snapshots/AAPL", params=query)
        assert response.status_code == 200, response.text
        return list(response.json()["snapshots"])

    assert await chain() == sorted([CALL, PUT, LATER_CALL, adjusted])  # by OCC symbol
    assert await chain(type="put") == [PUT]
    assert await chain(strike_price_gte="160", strike_price_lte="165") == [CALL]
    assert await chain(strike_price_gte="162.5", type="call") == [CALL, LATER_CALL]
    assert await chain(expiration_date="2024-05-17") == [LATER_CALL]
    assert await chain(expiration_date_gte="2024-05-01") == [LATER_CALL]
    assert await chain(expiration_date_lte="2024-04-30") == sorted([CALL, PUT, adjusted])
    assert await chain(root_symbol="AAPLQ") == [adjusted]
    bad = await alpaca.get("/v1beta1/options/snapshots/AAPL", params={"type": "straddle"})
    assert bad.status_code == 400


async def test_chain_pages_by_limit_and_max_page_size(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    symbols = sorted(f"AAPL240426C{strike:08d}" for strike in range(100_000, 105_000, 1000))
    await control.set_state(option_snapshots={s: snapshot() for s in symbols})

    async def pages(**query: str) -> list[list[str]]:
        seen: list[list[str]] = []
        token: str | None = None
        while True:
            params = {**query, **({"page_token": token} if token else {})}
            body = (await alpaca.get("/v1beta1/options/snapshots/AAPL", params=params)).json()
            seen.append(list(body["snapshots"]))
            token = body["next_page_token"]
            if token is None:
                return seen

    assert await pages(limit="2") == [symbols[0:2], symbols[2:4], symbols[4:]]
    assert await pages() == [symbols]  # default limit 100
    await control.configure(max_page_size=3)
    assert await pages(limit="1000") == [symbols[0:3], symbols[3:]]
    too_big = await alpaca.get("/v1beta1/options/snapshots/AAPL", params={"limit": "1001"})
    assert too_big.status_code == 400
    token = base64.b64encode(symbols[4].encode()).decode()
    resumed = await alpaca.get("/v1beta1/options/snapshots/AAPL", params={"page_token": token})
    assert list(resumed.json()["snapshots"]) == [symbols[4]]


# --- option contracts -------------------------------------------------------------------------


async def test_contract_defaults_are_derived_from_the_occ_symbol(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_state(assets=["AAPL"])
    await control.set_option_contract(CALL)
    await control.set_option_contract("SPY250620P00000500", {"open_interest": "237"})

    call = (await alpaca.get(f"/v2/options/contracts/{CALL}")).json()
    put = (await alpaca.get("/v2/options/contracts/SPY250620P00000500")).json()
    aapl = (await alpaca.get("/v2/assets/AAPL")).json()

    assert str(uuid.UUID(call["id"])) == call["id"]
    assert (call["strike_price"], call["type"], call["expiration_date"]) == (
        "162.5",
        "call",
        "2024-04-26",
    )
    assert (call["underlying_symbol"], call["root_symbol"], call["style"]) == (
        "AAPL",
        "AAPL",
        "american",
    )
    assert (call["size"], call["multiplier"], call["status"], call["tradable"]) == (
        "100",
        "100",
        "active",
        True,
    )
    assert call["underlying_asset_id"] == aapl["id"]
    assert {"open_interest", "close_price"}.isdisjoint(call)  # market values never invented
    assert (put["strike_price"], put["type"], put["open_interest"]) == ("0.5", "put", "237")
    by_id = await alpaca.get(f"/v2/options/contracts/{call['id']}")
    assert by_id.json() == call
    missing = await alpaca.get(f"/v2/options/contracts/{PUT}")
    assert missing.status_code == 404
    assert missing.json() == {"code": 40410000, "message": f"option contract {PUT} not found"}


async def test_contracts_are_filtered_and_paged_like_alpaca(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_state(
        option_contracts={
            CALL: {},
            PUT: {},
            LATER_CALL: {},
            MSFT_CALL: {},
            "AAPL240426C00155000": {"status": "inactive"},
            "AAPL250718C00200000": {},  # expires after the clock's upcoming weekend
        }
    )

    async def listed(**query: str) -> list[str]:
        response = await alpaca.get("/v2/options/contracts", params=query)
        assert response.status_code == 200, response.text
        return [contract["symbol"] for contract in response.json()["option_contracts"]]

    # The clock says 2025-06-24, so the default upper bound is Sunday 2025-06-29.
    assert await listed() == [CALL, PUT, LATER_CALL, MSFT_CALL]
    assert await listed(expiration_date_gte="2025-01-01", expiration_date_lte="2026-01-01") == [
        "AAPL250718C00200000"
    ]
    assert await listed(status="inactive") == ["AAPL240426C00155000"]
    assert await listed(underlying_symbols="MSFT,SPY") == [MSFT_CALL]
    assert await listed(type="put") == [PUT]
    assert await listed(strike_price_gte="160", strike_price_lte="170.0") == [CALL, LATER_CALL]
    assert await listed(expiration_date="2024-05-17") == [LATER_CALL]
    assert await listed(root_symbol="MSFT") == [MSFT_CALL]

    first = (await alpaca.get("/v2/options/contracts", params={"limit": "3"})).json()
    second = (
        await alpaca.get(
            "/v2/options/contracts", params={"limit": "3", "page_token": first["next_page_token"]}
        )
    ).json()
    assert [c["symbol"] for c in first["option_contracts"]] == [CALL, PUT, LATER_CALL]
    assert base64.b64decode(first["next_page_token"]) == b"3"  # an offset, as Alpaca's MTAwMA==
    assert [c["symbol"] for c in second["option_contracts"]] == [MSFT_CALL]
    assert second["next_page_token"] is None
    assert all("deliverables" not in c for c in first["option_contracts"])
    with_deliverables = (
        await alpaca.get("/v2/options/contracts", params={"show_deliverables": "true"})
    ).json()
    assert all(c["deliverables"] for c in with_deliverables["option_contracts"])
    refused = await alpaca.get("/v2/options/contracts", params={"limit": "10001"})
    assert (refused.status_code, refused.json()["code"]) == (422, 40010000)


async def test_option_control_calls_refuse_symbols_that_are_not_occ(
    control: EmulatorControl,
) -> None:
    with pytest.raises(EmulatorControlError) as single:
        await control.set_option_quote("AAPL", QUOTE)
    with pytest.raises(EmulatorControlError) as bulk:
        await control.set_state(option_contracts=["AAPL240426C001625"])

    assert (single.value.status_code, bulk.value.status_code) == (400, 400)


# --- alpaca-py --------------------------------------------------------------------------------


async def test_alpaca_py_option_clients_parse_chain_quotes_and_contracts(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    await control.set_state(
        option_quotes={CALL: QUOTE},
        option_snapshots={CALL: snapshot(greeks=GREEKS, impliedVolatility=0.33), PUT: snapshot()},
        option_contracts=[CALL, PUT],
    )
    await control.configure(max_page_size=1)  # the SDK must follow next_page_token
    data = OptionHistoricalDataClient(
        emulator.key_id, emulator.secret_key, url_override=emulator.base_url
    )
    trading = TradingClient(
        emulator.key_id, emulator.secret_key, paper=True, url_override=emulator.base_url
    )

    chain = await asyncio.to_thread(
        data.get_option_chain,
        OptionChainRequest(underlying_symbol="AAPL", feed=OptionsFeed.INDICATIVE),
    )
    quotes = await asyncio.to_thread(
        data.get_option_latest_quote,
        OptionLatestQuoteRequest(symbol_or_symbols=[CALL, PUT], feed=OptionsFeed.INDICATIVE),
    )
    contracts = await asyncio.to_thread(
        trading.get_option_contracts,
        GetOptionContractsRequest(underlying_symbols=["AAPL"], type=ContractType.CALL),
    )
    contract = await asyncio.to_thread(trading.get_option_contract, PUT)

    assert isinstance(chain, dict)
    assert set(chain) == {CALL, PUT}
    greeks = chain[CALL].greeks
    assert greeks is not None
    assert greeks.delta == GREEKS["delta"]
    assert chain[PUT].greeks is None
    assert chain[PUT].implied_volatility is None
    assert isinstance(quotes, dict)
    assert set(quotes) == {CALL}
    assert quotes[CALL].bid_price == QUOTE["bp"]
    assert isinstance(contracts, OptionContractsResponse)
    assert [c.symbol for c in contracts.option_contracts or []] == [CALL]
    assert isinstance(contract, OptionContract)
    assert contract.strike_price == 150.0


async def test_sdk_shapes_contracts_have_no_multiplier_and_a_number_strike(
    emulator: EmulatorProcess, control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_state(option_contracts={CALL: {}, PUT: {"strike_price": "150.00"}})
    await control.set_sdk_shapes()
    trading = TradingClient(
        emulator.key_id, emulator.secret_key, paper=True, url_override=emulator.base_url
    )

    listed = await alpaca.get("/v2/options/contracts", params={"show_deliverables": "true"})
    single = await alpaca.get(f"/v2/options/contracts/{PUT}")
    contracts = await asyncio.to_thread(
        trading.get_option_contracts, GetOptionContractsRequest(underlying_symbols=["AAPL"])
    )
    contract = await asyncio.to_thread(trading.get_option_contract, CALL)
    await control.set_sdk_shapes(False)
    documented = (await alpaca.get(f"/v2/options/contracts/{PUT}")).json()

    assert all("multiplier" not in c for c in listed.json()["option_contracts"])
    assert '"strike_price":162.5,' in listed.text
    assert '"strike_price":150.00,' in single.text  # the stored text, as a JSON number
    assert "multiplier" not in single.json()
    assert all(c["deliverables"] for c in listed.json()["option_contracts"])
    assert isinstance(contracts, OptionContractsResponse)
    assert [c.strike_price for c in contracts.option_contracts or []] == [162.5, 150.0]
    assert isinstance(contract, OptionContract)
    assert (contract.strike_price, contract.size) == (162.5, "100")
    assert (documented["strike_price"], documented["multiplier"]) == ("150.00", "100")
