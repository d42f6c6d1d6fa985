"""Every operation the contract says needs a key answers 401 without one, and asks Alpaca nothing.

The operations are read from the committed OpenAPI document (what users code against), not from
the app's route table, so a route added without a security requirement fails the first test and
one whose code forgets to check the key fails the second. Each request is otherwise valid: a key
is the only thing it lacks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.support.contract import REPO_ROOT

pytestmark = pytest.mark.integration

DOCUMENT = json.loads((REPO_ROOT / "openapi.json").read_text(encoding="utf-8"))
PUBLIC = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics")}
PATH_VALUES = {
    "symbol": "AAPL",
    "contract": "AAPL250117C00200000",
    "underlying": "AAPL",
    "order_id": "2b1d4fd6-9a0e-4a8a-9d3f-5f1c2a7e0b11",
}
QUERY_VALUES = {"symbols": "AAPL,MSFT", "timeframe": "1Day", "underlying": "AAPL"}
ORDER = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in DOCUMENT["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_operation_but_health_readiness_and_metrics_requires_a_key() -> None:
    unsecured = {(m, p) for m, p, op in operations() if not op.get("security")}

    assert unsecured == PUBLIC
    assert len(operations()) > len(PUBLIC) + 10  # the document was read, not an empty one


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, _ in operations() if (m, p) not in PUBLIC],
    ids=lambda value: str(value),
)
@pytest.mark.parametrize("presented", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}])
async def test_without_a_key_the_answer_is_401_and_alpaca_is_not_asked(
    make_gateway: GatewayFactory,
    emulator: EmulatorControl,
    method: str,
    path: str,
    presented: dict[str, str],
) -> None:
    gateway = await make_gateway(gateway_anonymous_data=False)
    url = path.format(**PATH_VALUES)
    operation = DOCUMENT["paths"][path][method.lower()]
    query = {
        p["name"]: QUERY_VALUES[p["name"]]
        for p in operation.get("parameters", [])
        if p["in"] == "query" and p.get("required")
    }
    headers = {**presented, "Idempotency-Key": "no-key-1"} if method == "POST" else presented
    await emulator.reset_calls()

    response = await gateway.request(
        method, url, params=query, headers=headers, json=ORDER if method == "POST" else None
    )

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "UNAUTHENTICATED"
    assert await emulator.calls() == {}
