"""The OpenAPI document says who may read operational detail (OPS_ACCESS), and both bodies
/ready can answer: the details, or the status alone. Each served body matches the schema the
document gives, in the mode that serves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import GatewayClient, GatewayFactory

pytestmark = [pytest.mark.contract, pytest.mark.integration]

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
OPS_KEY = "ops-key-for-the-contract-0123456789"


def committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return document


def readiness_validator(document: dict[str, Any]) -> Draft202012Validator:
    """The 200 schema of /ready, its references resolved inside `document`."""
    schema = document["paths"]["/ready"]["get"]["responses"]["200"]["content"]
    root = {**schema["application/json"]["schema"], "components": document["components"]}
    return Draft202012Validator(root)


async def served(gateway: GatewayClient) -> dict[str, Any]:
    document: dict[str, Any] = (await gateway.get("/openapi.json")).json()
    return document


def test_the_committed_document_describes_the_operations_key() -> None:
    scheme = committed()["components"]["securitySchemes"]["opsKey"]

    assert scheme | {"type": "http", "scheme": "bearer"} == scheme
    for said in ("OPS_ACCESS", "/metrics", "/ready", "OPS_KEY"):
        assert said in scheme["description"]


def test_readiness_is_the_details_or_the_status_alone_never_both() -> None:
    validator = readiness_validator(committed())
    details = {
        "status": "ready",
        "upstream_source": "alpaca",
        "credentials": "configured",
        "dependencies": {
            "cache": {"backend": "memory", "state": "up"},
            "database": {"backend": "sqlite", "state": "up"},
        },
        "breakers": {},
    }

    assert validator.is_valid(details)
    assert validator.is_valid({"status": "degraded"})
    assert not validator.is_valid({"status": "ready", "upstream_source": "alpaca"})
    assert not validator.is_valid({"status": "not_ready"})


async def test_with_an_ops_key_the_document_asks_it_of_metrics_and_offers_it_on_ready(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(ops_access="key", ops_key=OPS_KEY)
    paths = (await served(gateway))["paths"]

    assert paths["/metrics"]["get"]["security"] == [{"opsKey": []}]
    # Optional on /ready: without the key it still answers, its status alone.
    assert paths["/ready"]["get"]["security"] == [{}, {"opsKey": []}]
    assert "security" not in paths["/health"]["get"]


@pytest.mark.parametrize("ops_access", ["open", "internal"])
async def test_without_an_ops_key_mode_no_operation_asks_for_it(
    make_gateway: GatewayFactory, ops_access: str
) -> None:
    gateway = await make_gateway(ops_access=ops_access)
    document = await served(gateway)

    for methods in document["paths"].values():
        for operation in methods.values():
            assert {"opsKey": []} not in operation.get("security", [])


async def test_each_readiness_body_served_matches_the_document(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(ops_access="key", ops_key=OPS_KEY)
    validator = readiness_validator(await served(gateway))

    status_only = (await gateway.get("/ready")).json()
    details = (await gateway.get("/ready", headers={"Authorization": f"Bearer {OPS_KEY}"})).json()

    assert list(status_only) == ["status"]
    assert "dependencies" in details
    for body in (status_only, details):
        errors = [error.message for error in validator.iter_errors(body)]
        assert not errors, (body, errors)
