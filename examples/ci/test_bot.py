# ruff: noqa: S101 - pytest states its expectations with assert
"""The sample bot's tests, run against the contract-test kit (no Alpaca account needed).

Start the kit first; it prints the three variables these tests read:

    python -m tests.emulator.kit --scenario examples/ci/scenario.yaml --port 0 --detach > kit.env
    set -a; . ./kit.env; set +a
    python -m pytest examples/ci

Each test starts from the scenario's market (POST /_emulator/reset loads it again) and
changes it through the emulator's control API where it needs to: a fault, an order to check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from bot import Bot, GatewayProblem

NEEDED = ("GATEWAY_URL", "GATEWAY_KEY", "EMULATOR_URL")


@pytest.fixture(scope="session")
def kit_env() -> dict[str, str]:
    missing = [name for name in NEEDED if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} unset: start the kit first "
            "(python -m tests.emulator.kit --scenario examples/ci/scenario.yaml --detach)",
            pytrace=False,
        )
    return {name: os.environ[name] for name in NEEDED}


@pytest.fixture
def emulator(kit_env: dict[str, str]) -> Iterator[httpx.Client]:
    """The emulator's control API, with the scenario's market loaded afresh."""
    with httpx.Client(base_url=kit_env["EMULATOR_URL"], timeout=10.0) as control:
        control.post("/_emulator/reset").raise_for_status()
        yield control


@pytest.fixture
def gateway(kit_env: dict[str, str]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {kit_env['GATEWAY_KEY']}"}
    with httpx.Client(base_url=kit_env["GATEWAY_URL"], headers=headers, timeout=10.0) as client:
        yield client


def orders_at_alpaca(emulator: httpx.Client) -> list[dict[str, Any]]:
    """Every order that reached the (emulated) Alpaca account."""
    answer: list[dict[str, Any]] = emulator.get("/_emulator/orders").json()
    return answer


# The gateway caches a quote for a second (CACHE_QUOTE_TTL_S), so a test that changes what
# Alpaca answers reads a symbol no other test has just read.


def test_buys_one_share_when_the_ask_is_at_or_below_the_limit(
    gateway: httpx.Client, emulator: httpx.Client
) -> None:
    decision = Bot(gateway, max_ask=Decimal("230")).run_once("AAPL")

    assert decision.action == "bought"
    assert decision.ask_price == Decimal("229.90")  # the scenario's digits, exactly
    [order] = orders_at_alpaca(emulator)
    assert (order["symbol"], order["side"], order["type"], order["qty"]) == (
        "AAPL",
        "buy",
        "market",
        "1",
    )
    assert order["id"] == decision.order_id
    assert order["client_order_id"].startswith("bot-")  # the Idempotency-Key


def test_holds_when_the_ask_is_above_the_limit(
    gateway: httpx.Client, emulator: httpx.Client
) -> None:
    decision = Bot(gateway, max_ask=Decimal("200")).run_once("AAPL")

    assert decision.action == "held"
    assert orders_at_alpaca(emulator) == []


def test_skips_the_run_when_alpaca_answers_500(
    gateway: httpx.Client, emulator: httpx.Client
) -> None:
    fault = {"path": "/v2/stocks/quotes/latest", "kind": "status_500", "count": None}
    emulator.post("/_emulator/faults", json=fault).raise_for_status()

    decision = Bot(gateway, max_ask=Decimal("1000")).run_once("MSFT")

    assert decision.action == "skipped"
    assert decision.reason == "UPSTREAM_UNAVAILABLE"
    assert orders_at_alpaca(emulator) == []


def test_an_unknown_symbol_is_an_error_not_a_trade(
    gateway: httpx.Client, emulator: httpx.Client
) -> None:
    with pytest.raises(GatewayProblem) as problem:
        Bot(gateway, max_ask=Decimal("1000")).run_once("ZZZZ")

    assert (problem.value.status, problem.value.code) == (404, "SYMBOL_NOT_FOUND")
    assert orders_at_alpaca(emulator) == []
