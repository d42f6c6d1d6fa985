"""Upstream outcomes tell "answered with a value" from "answered with nothing" in /metrics,
so the real-data success ratio is computable in PromQL."""

from __future__ import annotations

import re

import pytest

from tests.conftest import GatewayClient
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration


def _count(exposition: str, upstream: str, endpoint: str, outcome: str) -> float:
    labels = f'endpoint="{endpoint}",outcome="{outcome}",upstream="{upstream}"'
    match = re.search(
        r"^gateway_upstream_requests_total\{" + labels + r"\} (\S+)$", exposition, re.M
    )
    assert match is not None, f"no series for {labels}"
    return float(match[1])


async def test_outcomes_separate_values_no_data_and_unknown_symbols(
    emulator: EmulatorControl, gateway: GatewayClient
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    await emulator.set_asset("MSFT", {})

    assert (await gateway.get("/v1/stocks/AAPL/quote")).status_code == 200
    assert (await gateway.get("/v1/stocks/MSFT/quote")).json()["code"] == "NO_DATA"
    assert (await gateway.get("/v1/stocks/ZZZZ/quote")).json()["code"] == "SYMBOL_NOT_FOUND"
    exposition = (await gateway.get("/metrics")).text

    assert _count(exposition, "data", "quotes_latest", "ok") == 1
    assert _count(exposition, "data", "quotes_latest", "no_data") == 2
    assert _count(exposition, "reference", "asset", "ok") == 1
    assert _count(exposition, "reference", "asset", "not_found") == 1
