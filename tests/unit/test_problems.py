"""Every error is problem+json with the contract's code, status and retryable flag.

The expectations are read at test time from the project's own contract, the README's "Error
codes" table, so this fails if either the table or `ErrorCode` drifts from the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.middleware import RequestContextMiddleware
from app.api.problems import add_exception_handlers, problem
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from tests.support.contract import ContractRow, error_table

REPO = Path(__file__).resolve().parents[2]
REQUIRED_MEMBERS = {
    "type",
    "title",
    "status",
    "detail",
    "instance",
    "code",
    "request_id",
    "retryable",
}


@pytest.fixture(scope="module")
def contract_codes() -> dict[str, ContractRow]:
    return error_table()


def test_error_codes_are_exactly_the_contract_list(contract_codes: dict[str, ContractRow]) -> None:
    assert {code.name for code in ErrorCode} == set(contract_codes)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_status_and_retryable_match_the_contract(
    contract_codes: dict[str, ContractRow], code: ErrorCode
) -> None:
    row = contract_codes.get(code.name)
    assert row is not None, f"{code.name} is not in the contract's table"
    assert int(code.status) == row.status
    assert code.retryable is row.retryable


# --- the problem body -------------------------------------------------------------------------
def test_problem_has_every_required_member() -> None:
    error = GatewayError(ErrorCode.NO_DATA, "Alpaca knows ZVZZT but has no value for it now")

    body = problem(error, "/v1/stocks/ZVZZT/quote")

    assert set(body) >= REQUIRED_MEMBERS
    assert body["code"] == "NO_DATA"
    assert body["status"] == 404
    assert body["detail"] == "Alpaca knows ZVZZT but has no value for it now"
    assert body["instance"] == "/v1/stocks/ZVZZT/quote"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["type"], str)
    assert isinstance(body["request_id"], str)
    assert body["retryable"] is True


def test_optional_members_are_absent_when_not_set() -> None:
    body = problem(GatewayError(ErrorCode.VALIDATION_ERROR, "bad symbol"), "/v1/stocks/x/quote")

    for member in ("retry_after_s", "upstream", "symbol", "age_ms"):
        assert member not in body


def test_optional_members_are_present_when_set() -> None:
    error = GatewayError(
        ErrorCode.DATA_STALE,
        "Newest real value for AAPL is 61000 ms old (max_age_ms=60000)",
        upstream="data",
        symbol="AAPL",
        retry_after_s=1,
        extensions={"age_ms": 61000},
    )

    body = problem(error, "/v1/stocks/AAPL/quote")

    assert body["retry_after_s"] == 1
    assert body["upstream"] == "data"
    assert body["symbol"] == "AAPL"
    assert body["age_ms"] == 61000


def test_extensions_cannot_overwrite_contract_members() -> None:
    error = GatewayError(
        ErrorCode.UPSTREAM_UNAVAILABLE,
        "Alpaca data API failed (HTTP 503)",
        extensions={"status": 200, "code": "OK", "retryable": False},
    )

    body = problem(error, "/v1/stocks/AAPL/quote")

    assert body["status"] == 503
    assert body["code"] == "UPSTREAM_UNAVAILABLE"
    assert body["retryable"] is True


def test_each_code_has_its_own_type_uri() -> None:
    types = {problem(GatewayError(code, "x"), "/")["type"] for code in ErrorCode}

    assert len(types) == len(ErrorCode)


# --- over HTTP: one mapping, status equals the code's --------------------------------------
@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    add_exception_handlers(app)
    app.add_middleware(RequestContextMiddleware, metrics=Metrics())

    @app.get("/fail/{name}")
    async def fail(name: str, retry_after_s: int | None = None) -> dict[str, Any]:
        raise GatewayError(
            ErrorCode[name],
            f"{name} for the test",
            upstream="data",
            symbol="AAPL",
            retry_after_s=retry_after_s,
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
async def test_problem_response_status_is_the_contract_status(
    client: httpx.AsyncClient, contract_codes: dict[str, ContractRow], code: ErrorCode
) -> None:
    response = await client.get(f"/fail/{code.name}", headers={"X-Request-ID": "req-123"})

    row = contract_codes[code.name]
    body = response.json()
    assert response.status_code == row.status
    assert response.headers["content-type"] == "application/problem+json"
    assert body["status"] == row.status
    assert body["code"] == code.name
    assert body["retryable"] is row.retryable
    assert body["request_id"] == "req-123"
    assert response.headers["X-Request-ID"] == "req-123"
    assert body["instance"] == f"/fail/{code.name}"
    assert body["upstream"] == "data"
    assert body["symbol"] == "AAPL"
    assert set(body) >= REQUIRED_MEMBERS


async def test_retry_after_is_sent_as_member_and_header(client: httpx.AsyncClient) -> None:
    response = await client.get("/fail/CIRCUIT_OPEN", params={"retry_after_s": 12})

    assert response.status_code == 503
    assert response.json()["retry_after_s"] == 12
    assert response.headers["Retry-After"] == "12"


async def test_without_retry_after_there_is_no_header(client: httpx.AsyncClient) -> None:
    response = await client.get("/fail/UPSTREAM_UNAVAILABLE")

    assert "retry_after_s" not in response.json()
    assert "Retry-After" not in response.headers


async def test_unknown_route_is_a_typed_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "ROUTE_NOT_FOUND"
