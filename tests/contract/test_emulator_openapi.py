"""The emulator against Alpaca's own OpenAPI documents.

Every endpoint the emulator serves must exist in Alpaca's documents with the same path, method
and query parameters, and its 200 answers must validate against the documented response
schema. The data stored for each call is the document's own example payload, so the test also
shows that the emulator hands such payloads back unchanged.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

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
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.emulator import params
from tests.emulator.control import EmulatorControl, shared_ssl_context
from tests.emulator.process import REPO_ROOT, EmulatorProcess
from tests.emulator.responses import ApiFamily
from tests.emulator.routes import ROUTES, AlpacaRoute
from tests.emulator.samples import sample_bar, sample_quote
from tests.emulator.timestamps import rfc3339_ns

pytestmark = pytest.mark.contract

DOCUMENTS = {
    ApiFamily.MARKET_DATA: "market-data-api.json",
    ApiFamily.TRADING: "trading-api.json",
}
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
_PATH_PARAM = re.compile(r"{(\w+)}")
# The samples hold Decimals (the emulator's exact numbers); the SDK test sends plain floats.
SAMPLE_QUOTE = json.loads(json.dumps(sample_quote(), default=float))
SAMPLE_BAR = json.loads(json.dumps(sample_bar(), default=float))

Json = Any  # parsed JSON documents and answers


def _openapi_dir() -> Path:
    configured = os.environ.get("ALPACA_OPENAPI_DIR")
    return Path(configured) if configured else (REPO_ROOT / ".." / "shared" / "alpaca-openapi")


@dataclass(frozen=True)
class Document:
    """One OpenAPI document plus a validator factory that resolves its $refs."""

    uri: str
    spec: dict[str, Json]
    registry: Registry[Json] = field(repr=False)

    def operation(self, path: str, method: str) -> dict[str, Json]:
        operation: dict[str, Json] = self.spec["paths"][path][method.lower()]
        return operation

    def parameters(self, path: str, method: str) -> list[dict[str, Json]]:
        """Path-level and operation-level parameters, $refs resolved."""
        declared = [*self.spec["paths"][path].get("parameters", [])]
        declared += self.operation(path, method).get("parameters", [])
        return [self._resolve(parameter) for parameter in declared]

    def ok_response(self, path: str, method: str) -> dict[str, Json]:
        response: dict[str, Json] = self._resolve(self.operation(path, method)["responses"]["200"])
        return response

    def validate_ok_body(self, path: str, method: str, body: Json) -> None:
        pointer = "/".join(
            segment.replace("~", "~0").replace("/", "~1")
            for segment in ("paths", path, method.lower(), "responses", "200", "content")
        )
        ref = f"{self.uri}#/{quote(pointer)}/application~1json/schema"
        validator = Draft4Validator({"$ref": ref}, registry=self.registry, format_checker=_FORMATS)
        errors = sorted(validator.iter_errors(body), key=lambda error: list(error.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)

    def _resolve(self, node: dict[str, Json]) -> dict[str, Json]:
        while "$ref" in node:
            target: Json = self.spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node


def _with_nullable(node: Json) -> Json:
    """OpenAPI 3.0 ``nullable: true`` as JSON Schema: ``null`` joins the allowed types."""
    if isinstance(node, list):
        return [_with_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _with_nullable(value) for key, value in node.items()}
    if converted.get("nullable") is True and isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    return converted


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
def documents() -> dict[ApiFamily, Document]:
    directory = _openapi_dir()
    missing = [name for name in DOCUMENTS.values() if not (directory / name).is_file()]
    if missing:
        # Never a skip: without the documents this contract is simply unchecked.
        pytest.fail(
            f"Alpaca's OpenAPI documents {missing} are not in {directory}. Set "
            "ALPACA_OPENAPI_DIR to the directory holding market-data-api.json and "
            "trading-api.json (default: ../shared/alpaca-openapi beside the repository).",
            pytrace=False,
        )
    loaded: dict[ApiFamily, Document] = {}
    for family, name in DOCUMENTS.items():
        spec = _with_nullable(json.loads((directory / name).read_text(encoding="utf-8")))
        uri = f"urn:alpaca-openapi:{family.value}"
        registry: Registry[Json] = Registry().with_resource(
            uri, Resource.from_contents(spec, default_specification=DRAFT4)
        )
        loaded[family] = Document(uri, spec, registry)
    return loaded


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess() as process:
        yield process


@pytest.fixture
async def control(emulator: EmulatorProcess) -> AsyncIterator[EmulatorControl]:
    async with EmulatorControl(emulator.base_url) as client:
        await client.reset()
        yield client


@pytest.fixture
async def alpaca(emulator: EmulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    headers = emulator.auth_headers
    async with httpx.AsyncClient(
        base_url=emulator.base_url, headers=headers, verify=shared_ssl_context()
    ) as client:
        yield client


def _example(document: Document, path: str) -> Json:
    """The first example value of the documented 200 answer."""
    content = document.ok_response(path, "GET")["content"]["application/json"]
    if "example" in content:
        return copy.deepcopy(content["example"])
    return copy.deepcopy(next(iter(content["examples"].values()))["value"])


# --- the table of served endpoints ------------------------------------------------------------


def test_every_served_path_and_method_is_documented(
    documents: dict[ApiFamily, Document],
) -> None:
    for route in ROUTES:
        paths = documents[route.family].spec["paths"]
        assert route.path in paths, f"{route.path} is not in the {route.family.value} document"
        assert route.method.lower() in paths[route.path], f"{route.method} {route.path}"


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
    Case("/v2/clock", "/v2/clock", {}),
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
    elif route_path == "/v2/clock":
        await control.set_clock(example)
    elif route_path == "/v2/assets/{symbol_or_asset_id}":
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
    return case.url.replace("{order_id}", submitted.json()["id"])


def _documented_example(documents: dict[ApiFamily, Document], route: AlpacaRoute) -> Json:
    document = documents[route.family]
    schemas = document.spec["components"]["schemas"]
    if route.endpoint.value == "clock":  # the clock's example sits on its schema
        return copy.deepcopy(schemas["legacy_clock"]["example"])
    if route.endpoint.value == "asset":  # and the asset's in the schema's x-examples
        return copy.deepcopy(schemas["Assets"]["x-examples"]["example-1"])
    if route.endpoint.value in ("positions", "position"):
        return copy.deepcopy(schemas["Position"]["x-examples"]["example-2"])
    if route.endpoint.value in ("option_contracts", "option_contract"):
        # No response example: the schema's per-property examples make one contract.
        properties = schemas["OptionContract"]["properties"]
        return {
            name: copy.deepcopy(prop["example"])
            for name, prop in properties.items()
            if "example" in prop
        }
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
    for header in document.ok_response(route.path, route.method).get("headers", {}):
        assert response.headers[header].isdigit(), header
    if route.path in ("/v2/stocks/bars", "/v2/stocks/{symbol}/bars"):
        # The example's next_page_token points at data the example does not show.
        assert body["bars"] == example["bars"]
        assert body["next_page_token"] is None
    elif route.path in ("/v2/assets/{symbol_or_asset_id}", "/v2/options/contracts/{symbol_or_id}"):
        assert body | example == body  # the example's fields, plus realistic defaults
    elif route.path == "/v2/options/contracts":
        assert [body["option_contracts"][0] | example] == body["option_contracts"]
        assert body["next_page_token"] is None
    elif route.path.startswith("/v1beta1/options/snapshots"):
        # The example's next_page_token points at data the example does not show.
        assert body == {"snapshots": example["snapshots"], "next_page_token": None}
    elif route.path == "/v2/positions":
        assert body == [example]
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
    schemas = documents[ApiFamily.MARKET_DATA].spec["components"]["schemas"]

    assert set(schemas["stock_latest_feed"]["enum"]) == params.LATEST_FEEDS
    assert set(schemas["stock_historical_feed"]["enum"]) == params.HISTORICAL_FEEDS


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
