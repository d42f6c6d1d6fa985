"""The emulator against Alpaca's own OpenAPI documents, through the facts taken from them.

Every endpoint the emulator serves must exist in Alpaca's documents with the same path, method
and query parameters, and its 200 answers must validate against the documented response
schema. The data stored for each call is the document's own example payload, so the test also
shows that the emulator hands such payloads back unchanged.

Alpaca's documents are not in this repository: ``alpaca_facts.json`` beside this module holds
what these tests use of them (paths, parameters, response schemas as self-contained JSON
Schema, the example payloads), written by ``python -m tests.contract.extract_alpaca_facts``.
Where the documents are available, ``test_facts_file_is_what_alpaca_documents_give`` checks
that the committed file is still what they give.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import json
import os
import re
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import httpx
import pytest
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import BarSet
from alpaca.data.requests import StockBarsRequest, StockLatestQuoteRequest, StockSnapshotRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.models import Asset, Clock, TradeAccount
from jsonschema import Draft4Validator, FormatChecker

from tests.contract import extract_alpaca_facts as extractor
from tests.emulator import params
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.emulator.responses import ApiFamily
from tests.emulator.routes import ROUTES, AlpacaRoute
from tests.emulator.samples import sample_bar, sample_quote
from tests.emulator.timestamps import rfc3339_ns

pytestmark = pytest.mark.contract

RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_PATH_PARAM = re.compile(r"{(\w+)}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The samples hold Decimals (the emulator's exact numbers); the SDK test sends plain floats.
SAMPLE_QUOTE = json.loads(json.dumps(sample_quote(), default=float))
SAMPLE_BAR = json.loads(json.dumps(sample_bar(), default=float))

Json = Any  # parsed JSON documents and answers


@dataclass(frozen=True)
class Document:
    """What the facts file knows of one of Alpaca's documents."""

    facts: dict[str, Json]

    def is_documented(self, path: str, method: str) -> bool:
        return method.lower() in self.facts["documented"].get(path, [])

    def operation(self, path: str, method: str) -> dict[str, Json]:
        key = f"{method.upper()} {path}"
        operations: dict[str, dict[str, Json]] = self.facts["operations"]
        assert key in operations, (
            f"{key} has no facts in {extractor.FACTS_PATH.name}: run "
            "python -m tests.contract.extract_alpaca_facts with Alpaca's documents"
        )
        return operations[key]

    def parameters(self, path: str, method: str) -> list[dict[str, Json]]:
        """Path-level and operation-level parameters."""
        parameters: list[dict[str, Json]] = self.operation(path, method)["parameters"]
        return parameters

    def ok_response(self, path: str, method: str) -> dict[str, Json]:
        response: dict[str, Json] = self.operation(path, method)["ok"]
        return response

    def validate_ok_body(self, path: str, method: str, body: Json) -> None:
        schema = self.ok_response(path, method)["schema"]
        validator = Draft4Validator(schema, format_checker=_FORMATS)
        errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)

    def schema_example(self, name: str) -> Json:
        return copy.deepcopy(self.facts["schema_examples"][name])


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    # Nanosecond precision is valid RFC 3339; the emulator's own parser accepts exactly that.
    if isinstance(value, str):
        rfc3339_ns(value)  # raises ValueError for anything else
    return True


@_FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)  # raises ValueError if malformed
    return True


@pytest.fixture(scope="module")
def facts() -> dict[str, Json]:
    return extractor.load_facts()


@pytest.fixture(scope="module")
def documents(facts: dict[str, Json]) -> dict[ApiFamily, Document]:
    return {family: Document(facts[family.value]) for family in ApiFamily}


def _example(document: Document, path: str) -> Json:
    """The first example value of the documented 200 answer."""
    return copy.deepcopy(document.ok_response(path, "GET")["example"])


# --- the facts file ---------------------------------------------------------------------------


def test_facts_file_is_what_alpaca_documents_give(facts: dict[str, Json]) -> None:
    """alpaca_facts.json is well-formed and, where Alpaca's documents are at hand, up to date.

    The file alone is always checked: its provenance names both documents (title, version,
    sha256) and the origin commit, every operation it describes is a documented one, and every
    response and parameter schema is a valid draft-4 JSON Schema. Where the documents are
    available (ALPACA_OPENAPI_DIR, else the shared docs beside the repository) the extraction
    also runs again in memory and must give the committed facts, the date aside: a changed
    document, a changed route table or a hand edit fails here. Without them (a fresh clone)
    nothing says the facts are current, and a pass means "well-formed" only; the test never
    skips. ALPACA_OPENAPI_DIR set to a directory without the documents is a failure.
    """
    about = facts["about"]
    date.fromisoformat(about["extracted_on"])
    assert re.fullmatch(r"[0-9a-f]{40}", about["origin"]["commit"])
    for family, name in extractor.DOCUMENTS.items():
        source = about["documents"][family]
        assert source["file"] == name
        assert _SHA256.fullmatch(source["sha256"]), source
        assert source["title"]
        assert source["version"]
        for key, operation in facts[family]["operations"].items():
            method, path = key.split(" ", 1)
            assert Document(facts[family]).is_documented(path, method), key
            for parameter in operation["parameters"]:
                assert parameter["in"] in ("path", "query", "header", "cookie"), key
                assert isinstance(parameter["required"], bool), key
                Draft4Validator.check_schema(parameter["schema"])
            if "ok" in operation:
                Draft4Validator.check_schema(operation["ok"]["schema"])

    directory = extractor.openapi_dir()
    if not extractor.documents_present(directory):
        assert extractor.OPENAPI_DIR_VARIABLE not in os.environ, (
            f"{extractor.OPENAPI_DIR_VARIABLE}={directory} does not hold Alpaca's documents"
        )
        return  # no source to compare with: well-formed is all that can be said
    fresh = extractor.render(extractor.without_date(extractor.extract(directory, "")))
    committed = extractor.render(extractor.without_date(facts))
    if fresh != committed:
        diff = difflib.unified_diff(
            committed.splitlines(keepends=True),
            fresh.splitlines(keepends=True),
            "committed",
            f"from {directory}",
        )
        pytest.fail(
            f"{extractor.FACTS_PATH.name} is not what Alpaca's documents give: run "
            f"python -m tests.contract.extract_alpaca_facts --openapi-dir {directory}\n"
            + "".join(list(diff)[:80]),
            pytrace=False,
        )


# --- the table of served endpoints ------------------------------------------------------------


def test_every_served_path_and_method_is_documented(
    documents: dict[ApiFamily, Document],
) -> None:
    for route in ROUTES:
        paths = documents[route.family].facts["documented"]
        assert route.path in paths, f"{route.path} is not in the {route.family.value} document"
        assert documents[route.family].is_documented(route.path, route.method), (
            f"{route.method} {route.path}"
        )


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.method} {route.path}")
def test_every_served_parameter_is_documented(
    documents: dict[ApiFamily, Document], route: AlpacaRoute
) -> None:
    declared = documents[route.family].parameters(route.path, route.method)
    query = {p["name"] for p in declared if p["in"] == "query"}
    path = {p["name"] for p in declared if p["in"] == "path"}
    assert set(route.query) <= query, f"undocumented: {set(route.query) - query}"
    assert set(_PATH_PARAM.findall(route.path)) == path


def test_required_query_parameters_are_read_by_the_emulator(
    documents: dict[ApiFamily, Document],
) -> None:
    for route in ROUTES:
        declared = documents[route.family].parameters(route.path, route.method)
        required = {p["name"] for p in declared if p["in"] == "query" and p.get("required")}
        assert required <= set(route.query), f"{route.path} ignores {required - set(route.query)}"


# --- answers against the documented schemas, with the documents' examples as data -------------


@dataclass(frozen=True)
class Case:
    """One call per served endpoint: how to store the example, what to ask, what must match.

    ``url`` may hold ``{order_id}``, filled in with the id of an order the case submits first.
    """

    route_path: str
    url: str
    query: dict[str, str]
    method: str = "GET"
    body: dict[str, Any] | None = None


LATEST = {"feed": "iex", "currency": "USD"}
TWO_SYMBOLS = {"symbols": "AAPL,TSLA", **LATEST}
HISTORICAL = {
    "timeframe": "1Min",
    "start": "2022-01-03T00:00:00Z",
    "end": "2022-01-04",
    "limit": "1000",
    "adjustment": "raw",
    "asof": "2022-01-03",
    "feed": "sip",
    "currency": "USD",
    "sort": "asc",
}
# Historical quotes and trades take the bars' parameters but timeframe and adjustment.
TICKS = {k: v for k, v in HISTORICAL.items() if k not in ("timeframe", "adjustment")}
OPTION_PAGE = {"feed": "indicative", "limit": "10", "updated_since": "2024-04-01T00:00:00Z"}
CONTRACT_FILTERS = {
    "underlying_symbols": "AAPL", "show_deliverables": "true", "status": "active",
    "expiration_date": "2025-06-20", "expiration_date_gte": "2025-06-01",
    "expiration_date_lte": "2025-07-01", "root_symbol": "AAPL", "type": "call",
    "style": "american", "strike_price_gte": "100", "strike_price_lte": "100", "limit": "5",
    "ppind": "false",
}  # fmt: skip
ORDER_FILTERS = {
    "status": "all", "limit": "10", "after": "2000-01-01T00:00:00Z",
    "until": "2100-01-01", "direction": "asc", "nested": "false", "symbols": "AAPL",
    "side": "buy", "asset_class": "us_equity",
}  # fmt: skip
ASSET_FILTERS = {"status": "active", "asset_class": "us_equity", "exchange": "NASDAQ",
                 "attributes": "has_options,ipo"}  # fmt: skip
CALENDAR = {"start": "2025-01-01", "end": "2025-01-31T23:59:59-05:00", "date_type": "TRADING"}
# The documented request example for an equity order, with a client_order_id of our own.
ORDER_BODY = {
    "symbol": "AAPL",
    "qty": "2",
    "side": "buy",
    "type": "limit",
    "time_in_force": "gtc",
    "limit_price": "150",
    "client_order_id": "client-1",
}
# The documented Equity replace example, with a client_order_id for the new order.
REPLACE_BODY = {"limit_price": "155", "qty": "4", "time_in_force": "gtc",
                "client_order_id": "client-2"}  # fmt: skip
CASES = [
    Case("/v2/stocks/quotes/latest", "/v2/stocks/quotes/latest", TWO_SYMBOLS),
    Case("/v2/stocks/{symbol}/quotes/latest", "/v2/stocks/AAPL/quotes/latest", LATEST),
    Case("/v2/stocks/trades/latest", "/v2/stocks/trades/latest", {"symbols": "AAPL", **LATEST}),
    Case("/v2/stocks/{symbol}/trades/latest", "/v2/stocks/AAPL/trades/latest", LATEST),
    Case("/v2/stocks/bars/latest", "/v2/stocks/bars/latest", TWO_SYMBOLS),
    Case("/v2/stocks/{symbol}/bars/latest", "/v2/stocks/AAPL/bars/latest", LATEST),
    Case("/v2/stocks/snapshots", "/v2/stocks/snapshots", TWO_SYMBOLS),
    Case("/v2/stocks/{symbol}/snapshot", "/v2/stocks/AAPL/snapshot", LATEST),
    Case("/v2/stocks/bars", "/v2/stocks/bars", {"symbols": "AAPL", **HISTORICAL}),
    Case("/v2/stocks/{symbol}/bars", "/v2/stocks/AAPL/bars", HISTORICAL),
    Case("/v2/stocks/quotes", "/v2/stocks/quotes", {"symbols": "AAPL", **TICKS}),
    Case("/v2/stocks/{symbol}/quotes", "/v2/stocks/AAPL/quotes", TICKS),
    Case("/v2/stocks/trades", "/v2/stocks/trades", {"symbols": "AAPL", **TICKS}),
    Case("/v2/stocks/{symbol}/trades", "/v2/stocks/AAPL/trades", TICKS),
    Case("/v2/clock", "/v2/clock", {}),
    Case("/v2/calendar", "/v2/calendar", CALENDAR),
    Case("/v2/assets", "/v2/assets", ASSET_FILTERS),
    Case("/v2/assets/{symbol_or_asset_id}", "/v2/assets/AAPL", {}),
    Case("/v2/account", "/v2/account", {}),
    Case("/v1beta1/options/quotes/latest", "/v1beta1/options/quotes/latest",
         {"symbols": "AAPL240419P00140000,AAPL250321C00190000", "feed": "indicative"}),
    Case("/v1beta1/options/trades/latest", "/v1beta1/options/trades/latest",
         {"symbols": "AAPL250321C00190000", "feed": "indicative"}),
    Case("/v1beta1/options/snapshots", "/v1beta1/options/snapshots",
         {"symbols": "AAPL240426C00162500", **OPTION_PAGE}),
    Case("/v1beta1/options/snapshots/{underlying_symbol}", "/v1beta1/options/snapshots/AAPL",
         {**OPTION_PAGE, "type": "call", "strike_price_gte": "160", "strike_price_lte": "165",
          "expiration_date": "2024-04-26", "expiration_date_gte": "2024-04-01",
          "expiration_date_lte": "2024-05-01", "root_symbol": "AAPL"}),
    Case("/v2/options/contracts", "/v2/options/contracts", CONTRACT_FILTERS),
    Case("/v2/options/contracts/{symbol_or_id}", "/v2/options/contracts/AAPL250620C00100000",
         {}),
    Case("/v2/positions", "/v2/positions", {}),
    Case("/v2/positions/{symbol_or_asset_id}", "/v2/positions/AAPL", {}),
    Case("/v2/orders", "/v2/orders", {}, "POST", ORDER_BODY),
    Case("/v2/orders", "/v2/orders", ORDER_FILTERS),
    Case("/v2/orders/{order_id}", "/v2/orders/{order_id}", {"nested": "false"}),
    Case("/v2/orders/{order_id}", "/v2/orders/{order_id}", {}, "PATCH", REPLACE_BODY),
    Case("/v2/orders:by_client_order_id", "/v2/orders:by_client_order_id",
         {"client_order_id": "client-1"}),
]  # fmt: skip
# Endpoints whose success is not a 200 with a body; test_emulator_trading.py covers them.
NO_BODY_ROUTES = {("DELETE", "/v2/orders/{order_id}"), ("DELETE", "/v2/orders")}


def test_every_served_endpoint_has_a_schema_case() -> None:
    cases = {(case.method, case.route_path) for case in CASES}
    assert cases == {(route.method, route.path) for route in ROUTES} - NO_BODY_ROUTES


async def _store_example(control: EmulatorControl, route_path: str, example: Json) -> None:
    """Store the document's example so that the emulator's answer must reproduce it."""
    if route_path == "/v2/stocks/quotes/latest":
        await control.set_state(quotes=example["quotes"])
    elif route_path == "/v2/stocks/{symbol}/quotes/latest":
        await control.set_quote(example["symbol"], example["quote"])
    elif route_path == "/v2/stocks/trades/latest":
        await control.set_state(trades=example["trades"])
    elif route_path == "/v2/stocks/{symbol}/trades/latest":
        await control.set_trade(example["symbol"], example["trade"])
    elif route_path == "/v2/stocks/bars/latest":
        await control.set_state(bars={s: [bar] for s, bar in example["bars"].items()})
    elif route_path == "/v2/stocks/{symbol}/bars/latest":
        await control.set_bars(example["symbol"], [example["bar"]])
    elif route_path == "/v2/stocks/snapshots":
        await control.set_state(snapshots=example)
    elif route_path == "/v2/stocks/{symbol}/snapshot":
        await control.set_snapshot("AAPL", {k: v for k, v in example.items() if k != "symbol"})
    elif route_path == "/v2/stocks/bars":
        await control.set_state(bars=example["bars"])
    elif route_path == "/v2/stocks/{symbol}/bars":
        await control.set_bars(example["symbol"], example["bars"])
    elif route_path == "/v2/stocks/quotes":
        await control.set_state(quotes_history=example["quotes"])
    elif route_path == "/v2/stocks/{symbol}/quotes":
        await control.set_quotes_history(example["symbol"], example["quotes"])
    elif route_path == "/v2/stocks/trades":
        await control.set_state(trades_history=example["trades"])
    elif route_path == "/v2/stocks/{symbol}/trades":
        await control.set_trades_history(example["symbol"], example["trades"])
    elif route_path == "/v2/clock":
        await control.set_clock(example)
    elif route_path == "/v2/calendar":
        await control.set_calendar([example])
    elif route_path.startswith("/v2/assets"):
        await control.set_asset(example["symbol"], example)
    elif route_path == "/v1beta1/options/quotes/latest":
        await control.set_state(option_quotes=example["quotes"])
    elif route_path == "/v1beta1/options/trades/latest":
        await control.set_state(option_trades=example["trades"])
    elif route_path.startswith("/v1beta1/options/snapshots"):
        await control.set_state(option_snapshots=example["snapshots"])
    elif route_path.startswith("/v2/options/contracts"):
        await control.set_option_contract(example["symbol"], example)
    elif route_path.startswith("/v2/positions"):
        await control.set_position(example["symbol"], example)


async def _prepare(
    control: EmulatorControl, alpaca: httpx.AsyncClient, case: Case, example: Json
) -> str:
    """Store the example (or submit an order) and return the URL to call."""
    route_path = case.route_path
    if not route_path.startswith("/v2/orders"):
        await _store_example(control, route_path, example)
        return case.url
    await control.set_asset("AAPL")
    if case.method == "POST":
        return case.url
    submitted = await alpaca.post("/v2/orders", json=ORDER_BODY)
    assert submitted.status_code == 200, submitted.text
    order_id = submitted.json()["id"]
    if case.method == "PATCH":
        await control.set_order_status(order_id, "new")  # Alpaca replaces only orders it routed
    return case.url.replace("{order_id}", order_id)


def _documented_example(documents: dict[ApiFamily, Document], route: AlpacaRoute) -> Json:
    document = documents[route.family]
    if route.endpoint.value == "clock":  # the clock's example sits on its schema
        return document.schema_example("legacy_clock")
    if route.endpoint.value in ("asset", "assets"):  # the asset's is in the schema's x-examples
        return document.schema_example("Assets")
    if route.endpoint.value == "calendar":  # the calendar day's properties make one
        return document.schema_example("legacy_calendar_day")
    if route.endpoint.value in ("positions", "position"):
        return document.schema_example("Position")
    if route.endpoint.value in ("option_contracts", "option_contract"):
        # No response example: the schema's per-property examples make one contract.
        return document.schema_example("OptionContract")
    if route.path.startswith("/v2/orders"):
        return None  # orders are submitted, not stored
    return _example(document, route.path)


def _route(case: Case) -> AlpacaRoute:
    return next(r for r in ROUTES if (r.method, r.path) == (case.method, case.route_path))


def _case_id(case: Case) -> str:
    return f"{case.method} {case.route_path}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
async def test_answer_validates_against_the_documented_schema(
    documents: dict[ApiFamily, Document],
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    case: Case,
) -> None:
    route = _route(case)
    document = documents[route.family]
    example = _documented_example(documents, route)
    url = await _prepare(control, alpaca, case, example)

    response = await alpaca.request(case.method, url, params=case.query, json=case.body)

    assert response.status_code == 200, response.text
    body = response.json()
    document.validate_ok_body(route.path, route.method, body)
    for header in document.ok_response(route.path, route.method)["headers"]:
        assert response.headers[header].isdigit(), header
    if route.endpoint.value in ("bars", "symbol_bars", "quotes", "symbol_quotes", "trades",
                                "symbol_trades"):  # fmt: skip
        # The example's next_page_token points at data the example does not show.
        assert body == example | {"next_page_token": None}
    elif route.path in ("/v2/assets/{symbol_or_asset_id}", "/v2/options/contracts/{symbol_or_id}"):
        assert body | example == body  # the example's fields, plus realistic defaults
    elif route.path == "/v2/assets":
        assert [body[0] | example] == body
    elif route.path == "/v2/calendar":
        assert body == [example]
    elif route.path == "/v2/options/contracts":
        assert [body["option_contracts"][0] | example] == body["option_contracts"]
        assert body["next_page_token"] is None
    elif route.path.startswith("/v1beta1/options/snapshots"):
        # The example's next_page_token points at data the example does not show.
        assert body == {"snapshots": example["snapshots"], "next_page_token": None}
    elif route.path == "/v2/positions":
        assert body == [example]
    elif case.method == "PATCH":
        assert (body["client_order_id"], body["replaces"]) == ("client-2", url.split("/")[-1])
        assert (body["qty"], body["limit_price"], body["time_in_force"]) == ("4", "155", "gtc")
    elif route.path.startswith("/v2/orders"):
        order = body[0] if isinstance(body, list) else body
        assert order["client_order_id"] == "client-1"
        assert (order["qty"], order["limit_price"], order["status"]) == ("2", "150", "accepted")
    elif route.path != "/v2/account":
        assert body == example


async def test_account_default_is_the_documented_example_shape(
    documents: dict[ApiFamily, Document], control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    example = _example(documents[ApiFamily.TRADING], "/v2/account")

    body = (await alpaca.get("/v2/account")).json()

    assert set(example) <= set(body)
    decimals = [name for name, value in example.items() if isinstance(value, str)]
    assert all(isinstance(body[name], str) for name in decimals)


async def test_rate_limit_headers_on_every_documented_answer(
    documents: dict[ApiFamily, Document], control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    single_quote = _example(documents[ApiFamily.MARKET_DATA], "/v2/stocks/{symbol}/quotes/latest")
    await control.set_quote("AAPL", single_quote["quote"])

    for url in ("/v2/stocks/AAPL/quotes/latest", "/v2/clock", "/v2/assets/NOPE"):
        response = await alpaca.get(url)
        assert all(response.headers[name].isdigit() for name in RATE_LIMIT_HEADERS), url


@pytest.mark.parametrize("kind", ["schema_missing_t", "schema_wrong_type"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
async def test_schema_faults_break_the_documented_schema(
    documents: dict[ApiFamily, Document],
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    case: Case,
    kind: Literal["schema_missing_t", "schema_wrong_type"],
) -> None:
    """The validator above can fail, and the schema faults really break Alpaca's contract."""
    route = _route(case)
    url = await _prepare(control, alpaca, case, _documented_example(documents, route))
    await control.add_fault(url, kind, count=1)

    response = await alpaca.request(case.method, url, params=case.query, json=case.body)

    assert response.status_code == 200
    with pytest.raises(AssertionError):
        documents[route.family].validate_ok_body(route.path, route.method, response.json())


def test_accepted_feeds_are_the_documented_ones(documents: dict[ApiFamily, Document]) -> None:
    enums = documents[ApiFamily.MARKET_DATA].facts["schema_enums"]

    assert set(enums["stock_latest_feed"]) == params.LATEST_FEEDS
    assert set(enums["stock_historical_feed"]) == params.HISTORICAL_FEEDS


async def test_alpaca_py_reads_every_kind_of_answer(
    emulator: EmulatorProcess, control: EmulatorControl
) -> None:
    """Alpaca's own SDK, pointed at the emulator with url_override, parses what it answers."""
    await control.set_state(
        quotes={"AAPL": {**SAMPLE_QUOTE, "bp": 0.0001}},
        bars={"AAPL": [{**SAMPLE_BAR, "t": f"2024-01-0{day}T05:00:00Z"} for day in (2, 3)]},
        snapshots={"AAPL": {"latestQuote": SAMPLE_QUOTE}},
    )
    data = StockHistoricalDataClient(
        emulator.key_id, emulator.secret_key, url_override=emulator.base_url
    )
    trading = TradingClient(emulator.key_id, emulator.secret_key, url_override=emulator.base_url)
    symbols = ["AAPL", "MSFT"]

    quotes = await asyncio.to_thread(
        data.get_stock_latest_quote,
        StockLatestQuoteRequest(symbol_or_symbols=symbols, feed=DataFeed.IEX),
    )
    bars = await asyncio.to_thread(
        data.get_stock_bars,
        StockBarsRequest(symbol_or_symbols=symbols, timeframe=TimeFrame.Day, feed=DataFeed.IEX),
    )
    snapshots = await asyncio.to_thread(
        data.get_stock_snapshot, StockSnapshotRequest(symbol_or_symbols=symbols, feed=DataFeed.IEX)
    )
    clock = await asyncio.to_thread(trading.get_clock)
    asset = await asyncio.to_thread(trading.get_asset, "AAPL")
    account = await asyncio.to_thread(trading.get_account)

    assert isinstance(bars, BarSet)  # models, not raw dicts: the SDK validated every answer
    assert isinstance(clock, Clock)
    assert isinstance(asset, Asset)
    assert isinstance(account, TradeAccount)
    assert set(quotes) == {"AAPL"}
    assert quotes["AAPL"].bid_price == 0.0001
    assert [bar.timestamp.day for bar in bars.data["AAPL"]] == [2, 3]
    assert snapshots["AAPL"].latest_quote is not None
    assert snapshots["AAPL"].latest_trade is None
    assert clock.is_open is True
    assert asset.symbol == "AAPL"
    assert account.status.value == "ACTIVE"
