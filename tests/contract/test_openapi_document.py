"""The OpenAPI document is the contract bots and CI code against: committed, complete, and
saying exactly what the server accepts.

`openapi.json` at the repository root is the document the gateway serves with the default
settings; a contract change is therefore always a visible diff. Regenerate it with

    .venv/bin/python -m app.api.openapi > openapi.json
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from app.errors import ErrorCode, GatewayError
from app.models.patterns import (
    DATE_PATTERN,
    OCC_PATTERN,
    SYMBOL_PATTERN,
    TIME_BOUND_PATTERN,
    TIMEFRAME_PATTERN,
    regex,
)
from app.models.trading import OrderRequest
from app.reads.stocks import time_bound, timeframe_seconds
from app.symbols import option_contract, stock_symbol
from tests.conftest import GatewayFactory

pytestmark = [pytest.mark.contract, pytest.mark.integration]

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
REGENERATE = ".venv/bin/python -m app.api.openapi > openapi.json"
PROBLEM_JSON = "application/problem+json"


def committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return document


def differences(ours: Any, theirs: Any, where: str = "") -> Iterator[str]:
    """JSON pointers where two documents differ (the first few are enough to act on)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs)):
            yield from differences(ours.get(key), theirs.get(key), f"{where}/{key}")
    elif isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            yield from differences(a, b, f"{where}/{index}")
    elif ours != theirs:
        yield where or "/"


async def served_document(make_gateway: GatewayFactory, **settings: Any) -> dict[str, Any]:
    gateway = await make_gateway(**settings)
    response = await gateway.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def test_the_served_document_is_the_committed_one(make_gateway: GatewayFactory) -> None:
    served = await served_document(make_gateway, gateway_anonymous_data=False)

    changed = list(differences(served, committed()))

    assert not changed, (
        f"the served OpenAPI document differs from {COMMITTED.name} at {changed[:10]}; if the "
        f"contract change is intended, regenerate it: {REGENERATE}"
    )


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_reference_resolves_inside_the_document() -> None:
    document = committed()
    found = set(refs(document))

    assert found, "the document names no component"
    for ref in sorted(found):
        assert ref.startswith("#/components/"), ref
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict), f"{ref} does not resolve"
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_answer_is_a_problem_naming_the_codes_it_can_carry() -> None:
    document = committed()
    problem = document["components"]["schemas"]["Problem"]

    assert problem["properties"]["code"]["enum"] == [c.name for c in ErrorCode]
    for label, operation in operations(document):
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in response["headers"], f"{label} {status}"
            if int(status) < 400:
                continue
            assert set(response["content"]) == {PROBLEM_JSON}, f"{label} {status}"
            named = re.findall(r"`([A-Z_]+)`", response["description"])
            assert named, f"{label} {status} names no code"
            assert {int(ErrorCode[c].status) for c in named} == {int(status)}, f"{label} {status}"
        # What every operation can meet, whatever it does.
        assert {"405", "413", "500"} <= set(operation["responses"]), label


def test_keys_are_declared_per_route_with_the_scope_each_needs() -> None:
    document = committed()
    schemes = document["components"]["securitySchemes"]

    assert schemes["bearerAuth"] == schemes["bearerAuth"] | {"type": "http", "scheme": "bearer"}
    assert (
        schemes["apiKeyHeader"] | {"in": "header", "name": "X-API-Key"} == schemes["apiKeyHeader"]
    )
    scopes = {}
    for label, operation in operations(document):
        security = operation.get("security")
        if label.split(" ", 1)[1] in ("/health", "/ready", "/metrics"):
            assert security is None, label
            continue
        (scope,) = {tuple(roles) for requirement in security for roles in requirement.values()}
        assert security == [{"bearerAuth": list(scope)}, {"apiKeyHeader": list(scope)}], label
        assert {"401", "403", "429"} <= set(operation["responses"]), label
        scopes[label] = scope[0]
    assert {s for label, s in scopes.items() if "/v1/stocks" in label} == {"data:read"}
    assert scopes["GET /v1/orders"] == scopes["GET /v1/account"] == "trading:read"
    assert scopes["POST /v1/orders"] == scopes["DELETE /v1/orders/{order_id}"] == "trading:write"


async def test_with_anonymous_data_a_key_is_optional_on_data_routes_only(
    make_gateway: GatewayFactory,
) -> None:
    document = await served_document(make_gateway, gateway_anonymous_data=True)

    for label, operation in operations(document):
        security = operation.get("security") or []
        optional = {} in security
        assert optional == (security[1:2] == [{"bearerAuth": ["data:read"]}]), label


def test_system_routes_say_what_they_answer() -> None:
    paths = committed()["paths"]

    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    ready = paths["/ready"]["get"]["responses"]
    assert set(metrics) == {"text/plain"}
    assert ready["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }
    assert "UPSTREAM_NOT_CONFIGURED" in ready["503"]["description"]


def test_orders_document_their_headers_body_and_answers() -> None:
    document = committed()
    submit = document["paths"]["/v1/orders"]["post"]
    schemas = document["components"]["schemas"]

    (key,) = [p for p in submit["parameters"] if p["in"] == "header"]
    assert key["name"] == "Idempotency-Key"
    assert key["required"] is True
    ok = submit["responses"]["200"]
    assert ok["headers"]["Idempotent-Replayed"]["required"] is True
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderRequest"
    }
    assert {"409", "415", "422", "504"} <= set(submit["responses"])
    for name in ("Account", "Position", "Order"):
        assert schemas[name].get("additionalProperties") is True, name
    assert schemas["Order"]["properties"]["qty"]["anyOf"] == [
        {"type": "string"},
        {"type": "null"},
    ]


# --- the patterns say what the server's own checks accept ---------------------------------------
def accepts(check: Any, value: str) -> bool:
    try:
        check(value)
    except (GatewayError, ValueError):
        return False
    return True


def test_the_date_pattern_is_a_calendar_date() -> None:
    pattern = regex(DATE_PATTERN)
    years = [1, 4, 99, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 2400, 9999]
    for year in years:
        for month in range(14):
            for day in range(33):
                text = f"{year:04d}-{month:02d}-{day:02d}"
                assert bool(pattern.search(text)) == accepts(date.fromisoformat, text), text
    assert not pattern.search("0000-01-01")


def test_the_occ_pattern_is_what_the_server_takes() -> None:
    pattern = regex(OCC_PATTERN)
    for year in range(100):
        for month in (0, 1, 2, 4, 12, 13):
            for day in (0, 1, 28, 29, 30, 31, 32):
                text = f"spy{year:02d}{month:02d}{day:02d}p00500000"
                assert bool(pattern.search(text)) == accepts(option_contract, text), text


def test_the_symbol_pattern_is_what_the_server_takes() -> None:
    pattern = regex(SYMBOL_PATTERN)
    samples = ["AAPL", "brk.b", "BF-B", "A..B", "BRK.", ".A", "1BAD", "ABCDEFGHIJ", "A-B.C"]
    samples += ["ABCDEFGHIJK", "A1", "A_B", "A B", "A.-B", "\u017fpy", "Z"]
    for text in samples:
        exact = bool(pattern.search(text)) and len(text) <= 10
        assert exact == accepts(stock_symbol, text), text


def test_the_timeframe_pattern_is_what_the_server_takes() -> None:
    pattern = regex(TIMEFRAME_PATTERN)
    for amount in ("0", "01", *map(str, range(1, 100))):
        for unit in ("Min", "T", "Hour", "H", "Day", "D", "Week", "W", "Month", "M", "Y"):
            text = amount + unit
            assert bool(pattern.search(text)) == accepts(timeframe_seconds, text), text


def test_the_time_bound_pattern_is_what_the_server_takes() -> None:
    pattern = regex(TIME_BOUND_PATTERN)
    samples = ["2024-02-29", "2023-02-29", "2024-01-01T00:00:00Z", "2024-01-01T23:59:59+23:59"]
    samples += ["2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z", "2024-01-01T00:00:00.123456789Z"]
    samples += ["2024-01-01t00:00:00z", "2024-01-01T00:00:00", "0001-01-01T00:00:00+23:59"]
    samples += ["2024-01-01T00:00:00+24:00", "2024-1-01", "2024-01-01T00:00:00Z\n"]
    for text in samples:
        assert bool(pattern.search(text)) == accepts(lambda v: time_bound("start", v), text)
    assert accepts(datetime.fromisoformat, "2024-01-01T00:00:00.123456789+00:00")


# --- the order body's schema is what the model accepts ---------------------------------------
MARKET = {"symbol": "AAPL", "side": "buy", "type": "market", "time_in_force": "day"}
ORDER_BODIES = {
    "market qty": {**MARKET, "qty": "1"},
    "market notional number": {**MARKET, "notional": 150},
    "qty and notional": {**MARKET, "qty": "1", "notional": "5"},
    "neither qty nor notional": MARKET,
    "null qty only": {**MARKET, "qty": None},
    "mleg without qty": {**MARKET, "order_class": "mleg"},
    "limit without price": {**MARKET, "type": "limit", "qty": "1"},
    "limit with price": {**MARKET, "type": "limit", "qty": "1", "limit_price": "1.5"},
    "stop_limit without stop": {**MARKET, "type": "stop_limit", "qty": 1, "limit_price": 2},
    "trailing both": {**MARKET, "type": "trailing_stop", "qty": 1, "trail_price": 1}
    | {"trail_percent": 2},
    "trailing one": {**MARKET, "type": "trailing_stop", "qty": 1, "trail_percent": "2"},
    "zero qty": {**MARKET, "qty": "0.000"},
    "ten decimals": {**MARKET, "qty": "1.0000000001"},
    "13 digits": {**MARKET, "qty": "1000000000000"},
    "boolean qty": {**MARKET, "qty": True},
    "string extended_hours": {**MARKET, "qty": "1", "extended_hours": "true"},
    "bad symbol": {**MARKET, "qty": "1", "symbol": "A..B"},
    "occ symbol": {**MARKET, "qty": "1", "symbol": "spy250117c00500000"},
    "impossible occ date": {**MARKET, "qty": "1", "symbol": "SPY250230C00500000"},
    "five legs": {**MARKET, "order_class": "mleg", "legs": [{"symbol": "A", "ratio_qty": 1}] * 5},
    "unknown member": {**MARKET, "qty": "1", "note": "x"},
    "unknown intent": {**MARKET, "qty": "1", "position_intent": "open"},
}


@pytest.mark.parametrize("body", ORDER_BODIES.values(), ids=ORDER_BODIES.keys())
def test_the_order_schema_accepts_exactly_what_the_model_accepts(body: dict[str, Any]) -> None:
    document = committed()
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/OrderRequest", "components": document["components"]}
    )
    try:
        OrderRequest.model_validate(body)
    except ValidationError:
        model_accepts = False
    else:
        model_accepts = True

    assert validator.is_valid(body) == model_accepts


# --- /docs works offline ---------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


async def test_docs_load_only_assets_the_gateway_serves_itself(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()

    page = await gateway.get("/docs")

    assert page.status_code == 200
    parser = _Links()
    parser.feed(page.text)
    assert len(parser.urls) >= 3, parser.urls  # stylesheet, icon, script
    scripts = re.findall(r"https?://|//[a-z]", page.text)
    assert not scripts, f"/docs names another origin: {scripts}"
    for url in parser.urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await gateway.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    assert "url: '/openapi.json'" in page.text
    unknown: httpx.Response = await gateway.get("/docs/assets/index.html")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM_JSON
