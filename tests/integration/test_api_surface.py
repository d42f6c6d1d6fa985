"""The gateway's HTTP surface: problem+json everywhere, request ids, health, metrics, OpenAPI.

The closed list of error codes is parsed from the README's table at test time, so the OpenAPI
document and the problem bodies are checked against the contract, not against app code.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.support.contract import error_table

pytestmark = pytest.mark.integration

PROBLEM_JSON = "application/problem+json"
PROBLEM_MEMBERS = {
    "type",
    "title",
    "status",
    "detail",
    "instance",
    "code",
    "request_id",
    "retryable",
}
QUOTE = {
    "t": "2024-03-15T19:59:59.123456789Z",
    "bx": "V",
    "bp": 172.6201,
    "bs": 3,
    "ax": "Q",
    "ap": 172.6299,
    "as": 7,
    "c": ["R"],
    "z": "C",
}
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
# Contract field names (api-contract.md, "Field names").
QUOTE_FIELDS = {
    "symbol",
    "bid_price",
    "bid_size",
    "bid_exchange",
    "ask_price",
    "ask_size",
    "ask_exchange",
    "conditions",
    "tape",
    "timestamp",
}
TRADE_FIELDS = {"symbol", "price", "size", "exchange", "id", "conditions", "tape", "timestamp"}
BAR_FIELDS = {"timestamp", "open", "high", "low", "close", "volume", "trade_count", "vwap"}


def contract_error_table() -> dict[str, tuple[int, bool]]:
    """code -> (status, retryable), from the README's error-code table."""
    return {code: (row.status, row.retryable) for code, row in error_table().items()}


def assert_contract_problem(response: httpx.Response, code: str) -> dict[str, Any]:
    """A problem+json body with every contract member, consistent with the contract's table."""
    status, retryable = contract_error_table()[code]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_MEMBERS, body
    assert body["code"] == code
    assert body["status"] == response.status_code
    assert body["retryable"] is retryable
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert "Traceback" not in response.text
    return body


# --- problem+json for framework errors ------------------------------------------------------------
async def test_unknown_route_is_route_not_found_problem(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/v1/no/such/route")

    assert_contract_problem(response, "ROUTE_NOT_FOUND")


async def test_wrong_method_is_method_not_allowed_with_allow_header(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.post("/v1/stocks/AAPL/quote")

    assert_contract_problem(response, "METHOD_NOT_ALLOWED")
    assert "GET" in [m.strip() for m in response.headers["Allow"].split(",")]
    assert await emulator.calls() == {}


@pytest.mark.parametrize(
    ("path", "params", "param_name"),
    [
        ("/v1/stocks/AAPL/bars", {"timeframe": "1Day", "limit": 0}, "limit"),
        ("/v1/stocks/AAPL/quote", {"max_age_ms": -1}, "max_age_ms"),
        ("/v1/stocks/AAPL/quote", {"max_age_ms": "soon"}, "max_age_ms"),
        ("/v1/stocks/AAPL/bars", {}, "timeframe"),
    ],
    ids=["limit-0", "max-age-negative", "max-age-not-int", "timeframe-missing"],
)
async def test_parameter_validation_is_a_validation_error_problem_naming_the_parameter(
    emulator: EmulatorControl,
    gateway: httpx.AsyncClient,
    path: str,
    params: dict[str, Any],
    param_name: str,
) -> None:
    response = await gateway.get(path, params=params)

    body = assert_contract_problem(response, "VALIDATION_ERROR")
    assert param_name in [p["name"] for p in body["invalid_params"]]
    assert all(isinstance(p["reason"], str) and p["reason"] for p in body["invalid_params"])
    assert await emulator.calls() == {}


async def test_gateway_errors_have_the_same_problem_shape(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_asset("MSFT")

    unknown = await gateway.get("/v1/stocks/ZZZZ/quote")
    empty = await gateway.get("/v1/stocks/MSFT/quote")
    bad_symbol = await gateway.get("/v1/stocks/1BAD/quote")

    assert assert_contract_problem(unknown, "SYMBOL_NOT_FOUND")["symbol"] == "ZZZZ"
    assert assert_contract_problem(empty, "NO_DATA")["symbol"] == "MSFT"
    assert_contract_problem(bad_symbol, "VALIDATION_ERROR")


# --- X-Request-ID ---------------------------------------------------------------------------------
async def test_safe_client_request_id_is_echoed(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    request_id = "bot-7.run_42"

    ok = await gateway.get("/v1/stocks/AAPL/quote", headers={"X-Request-ID": request_id})
    problem = await gateway.get("/v1/nope", headers={"X-Request-ID": request_id})

    assert ok.headers["X-Request-ID"] == request_id
    assert problem.headers["X-Request-ID"] == request_id
    assert problem.json()["request_id"] == request_id


@pytest.mark.parametrize(
    "unsafe",
    ["has space", "line\nbreak", "x" * 65, "semi;colon", ""],
    ids=["space", "newline", "65-chars", "semicolon", "empty"],
)
async def test_unsafe_client_request_id_is_replaced_by_a_generated_one(
    gateway: httpx.AsyncClient, unsafe: str
) -> None:
    response = await gateway.get("/v1/nope", headers={"X-Request-ID": unsafe})

    echoed = response.headers["X-Request-ID"]
    assert echoed != unsafe
    assert SAFE_REQUEST_ID.fullmatch(echoed)
    assert response.json()["request_id"] == echoed


async def test_generated_request_ids_differ_per_request(gateway: httpx.AsyncClient) -> None:
    first = await gateway.get("/health")
    second = await gateway.get("/health")

    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


# --- health and readiness -------------------------------------------------------------------------
async def test_health_answers_ok(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_reports_each_breaker_closed_and_the_cache_backend(
    gateway: httpx.AsyncClient,
) -> None:
    response = await gateway.get("/ready")

    assert response.status_code == 200, response.text
    body = response.json()
    assert {name: b["state"] for name, b in body["breakers"].items()} == {
        "data": "closed",
        "options": "closed",
        "trading": "closed",
        "reference": "closed",
    }
    assert body["dependencies"]["cache"]["backend"] == "memory"


async def test_ready_reports_redis_when_configured(
    make_gateway: GatewayFactory, redis_url: str
) -> None:
    gateway = await make_gateway(redis_url=redis_url, cache_namespace="test-ready")

    response = await gateway.get("/ready")

    assert response.status_code == 200, response.text
    cache = response.json()["dependencies"]["cache"]
    assert cache["backend"] == "redis"
    assert cache["state"] == "up"


async def test_without_credentials_not_ready_and_quotes_are_upstream_not_configured(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(alpaca_api_key_id=None, alpaca_api_secret_key=None)

    ready = await gateway.get("/ready")
    quote = await gateway.get("/v1/stocks/AAPL/quote")
    batch = await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL"})

    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] != "ready"
    assert_contract_problem(quote, "UPSTREAM_NOT_CONFIGURED")
    assert batch.json()["errors"]["AAPL"]["code"] == "UPSTREAM_NOT_CONFIGURED"
    assert batch.json()["quotes"] == {}
    assert await emulator.calls() == {}


# --- metrics --------------------------------------------------------------------------------------
def metric_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def sample_value(
    samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str
) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    matching = [
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    ]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


async def test_metrics_use_route_templates_and_never_a_symbol_as_a_label(
    emulator: EmulatorControl, gateway: httpx.AsyncClient
) -> None:
    await emulator.set_quote("QXWZ", QUOTE)
    assert (await gateway.get("/v1/stocks/QXWZ/quote")).status_code == 200
    assert (await gateway.get("/v1/stocks/QXWZ/quote")).status_code == 200
    assert (await gateway.get("/v1/stocks/JQVK/quote")).status_code == 404
    assert (await gateway.get("/v1/stocks/quotes", params={"symbols": "QXWZ,KZVQ"})).is_success
    assert (await gateway.get("/v1/QXWZ/nowhere")).status_code == 404

    response = await gateway.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    quote_route = "/v1/stocks/{symbol}/quote"
    assert (
        sample_value(samples, "gateway_http_requests_total", route=quote_route, status_class="2xx")
        == 2
    )
    assert (
        sample_value(samples, "gateway_http_requests_total", route=quote_route, status_class="4xx")
        == 1
    )
    assert sample_value(samples, "gateway_upstream_requests_total", upstream="data") >= 2
    assert sample_value(samples, "gateway_circuit_breaker_state", upstream="data") == 0
    assert sample_value(samples, "gateway_cache_requests_total", kind="quote", result="hit") >= 1
    assert sample_value(samples, "gateway_cache_requests_total", kind="quote", result="miss") >= 1
    assert sample_value(samples, "gateway_data_age_seconds_count", kind="quote") >= 2
    for name, labels, _ in samples:
        for value in labels.values():
            for symbol in ("QXWZ", "JQVK", "KZVQ"):
                assert symbol not in value, f"{name}{labels} carries the symbol {symbol}"


# --- OpenAPI --------------------------------------------------------------------------------------
CONTRACT_PATHS = {
    "/v1/stocks/{symbol}/quote": "get",
    "/v1/stocks/quotes": "get",
    "/v1/stocks/{symbol}/trade": "get",
    "/v1/stocks/{symbol}/snapshot": "get",
    "/v1/stocks/{symbol}/bars": "get",
    "/v1/clock": "get",
    "/health": "get",
    "/ready": "get",
    "/metrics": "get",
}


@pytest.fixture
async def openapi(gateway: httpx.AsyncClient) -> dict[str, Any]:
    response = await gateway.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def test_openapi_lists_every_contract_path(openapi: dict[str, Any]) -> None:
    for path, method in CONTRACT_PATHS.items():
        assert method in openapi["paths"].get(path, {}), f"{method.upper()} {path} missing"


def test_openapi_error_responses_are_problem_json(openapi: dict[str, Any]) -> None:
    declared = 0
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if not status.startswith(("4", "5")):
                    continue
                declared += 1
                content = response.get("content", {})
                assert set(content) == {PROBLEM_JSON}, f"{method} {path} {status}"
                assert content[PROBLEM_JSON]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }, f"{method} {path} {status}"
    assert declared > 0


def test_openapi_problem_code_enum_is_the_contract_closed_list(openapi: dict[str, Any]) -> None:
    problem = openapi["components"]["schemas"]["Problem"]
    enum = problem["properties"]["code"]["enum"]

    assert len(enum) == len(set(enum))
    assert set(enum) == set(contract_error_table())
    assert set(problem["required"]) >= PROBLEM_MEMBERS


def test_openapi_declares_every_error_status_a_stock_read_can_answer(
    openapi: dict[str, Any],
) -> None:
    # Codes a latest-quote read can produce, per the contract's table.
    codes = [
        "VALIDATION_ERROR",
        "SYMBOL_NOT_FOUND",
        "NO_DATA",
        "DATA_STALE",
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "CIRCUIT_OPEN",
        "UPSTREAM_AUTH_FAILED",
        "FEED_NOT_PERMITTED",
        "UPSTREAM_BAD_RESPONSE",
        "UPSTREAM_NOT_CONFIGURED",
    ]
    table = contract_error_table()
    statuses = {str(table[code][0]) for code in codes}
    for path in ("/v1/stocks/{symbol}/quote", "/v1/stocks/{symbol}/trade"):
        declared = set(openapi["paths"][path]["get"]["responses"])
        assert statuses <= declared, f"{path} does not declare {sorted(statuses - declared)}"


def test_openapi_success_responses_reference_typed_models(openapi: dict[str, Any]) -> None:
    def ok_schema(path: str) -> dict[str, Any]:
        content = openapi["paths"][path]["get"]["responses"]["200"]["content"]
        schema = content["application/json"]["schema"]
        assert "$ref" in schema, f"{path} 200 is not a named model: {schema}"
        return resolve(openapi, schema)

    quote = ok_schema("/v1/stocks/{symbol}/quote")
    assert set(quote["properties"]) >= QUOTE_FIELDS | {"provenance"}
    example = quote.get("example") or (quote.get("examples") or [None])[0]
    assert example is not None, "the quote model has no example"
    assert set(example) >= QUOTE_FIELDS | {"provenance"}
    assert set(ok_schema("/v1/stocks/{symbol}/trade")["properties"]) >= TRADE_FIELDS
    assert set(ok_schema("/v1/stocks/quotes")["properties"]) >= {"quotes", "errors"}
    snapshot = ok_schema("/v1/stocks/{symbol}/snapshot")["properties"]
    assert set(snapshot) >= {"latest_trade", "latest_quote", "minute_bar", "daily_bar"}
    bars = ok_schema("/v1/stocks/{symbol}/bars")["properties"]
    assert {"bars", "provenance"} <= set(bars)
    bar_item = resolve(openapi, bars["bars"]["items"])
    assert set(bar_item["properties"]) >= BAR_FIELDS
    clock = ok_schema("/v1/clock")["properties"]
    assert {"timestamp", "is_open", "next_open", "next_close", "provenance"} <= set(clock)


async def test_each_bounded_in_process_structure_reports_its_size(
    gateway: httpx.AsyncClient, emulator: EmulatorControl
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    assert (await gateway.get("/v1/stocks/AAPL/quote")).status_code == 200

    exposition = (await gateway.get("/metrics")).text
    sizes = {
        sample.labels["structure"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "gateway_inprocess_entries"
        for sample in family.samples
    }

    assert sizes["value_cache"] >= 1  # the quote just fetched
    assert sizes["flights"] == 0  # nothing is being fetched now
    assert sizes["key_cache"] == 0  # anonymous data: no key was checked
    assert 'gateway_inprocess_bytes{structure="value_cache"}' in exposition
