"""When Alpaca's 429 hold (X-RateLimit-Reset) ends, the calls waiting for it do not leave at
once: one probe goes first, the others are told to retry in a second until it has answered."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE

pytestmark = pytest.mark.integration
QUOTES_PATH = "/v2/stocks/quotes/latest"
SYMBOLS = [f"S{n:02d}" for n in range(30)]


async def held(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> tuple[GatewayClient, int]:
    """A gateway under a 429 hold, and the Retry-After it answered."""
    await emulator.set_state(quotes=dict.fromkeys(["AAPL", *SYMBOLS], QUOTE))
    gateway = await make_gateway()
    await emulator.add_fault(QUOTES_PATH, "rate_limited", count=1, retry_after_s=1)
    first = await gateway.get("/v1/stocks/AAPL/quote")
    assert first.json()["code"] == "UPSTREAM_RATE_LIMITED"
    return gateway, int(first.headers["Retry-After"])


async def test_one_probe_leaves_when_the_hold_ends_not_every_waiting_call(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, retry_after_s = await held(emulator, make_gateway)
    await asyncio.sleep(retry_after_s + 0.05)  # the hold is over
    await emulator.reset_calls()

    answers = await asyncio.gather(
        *(gateway.get(f"/v1/stocks/{symbol}/quote") for symbol in SYMBOLS)
    )

    assert await emulator.calls_to(QUOTES_PATH) == 1
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(served) == 1
    for answer in refused:
        assert answer.status_code == 503
        assert answer.json()["code"] == "UPSTREAM_RATE_LIMITED"
        assert answer.headers["Retry-After"] == "1"


async def test_calls_flow_again_once_the_probe_has_answered(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, retry_after_s = await held(emulator, make_gateway)
    await asyncio.sleep(retry_after_s + 0.05)
    probe = await gateway.get("/v1/stocks/AAPL/quote")
    assert probe.status_code == 200, probe.text
    await emulator.reset_calls()

    answers = await asyncio.gather(
        *(gateway.get(f"/v1/stocks/{symbol}/quote") for symbol in SYMBOLS[:5])
    )

    assert [a.status_code for a in answers] == [200] * 5
    assert await emulator.calls_to(QUOTES_PATH) == 5


async def test_a_probe_met_by_another_429_holds_everyone_again(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway, retry_after_s = await held(emulator, make_gateway)
    await emulator.add_fault(QUOTES_PATH, "rate_limited", count=1, retry_after_s=3)
    await asyncio.sleep(retry_after_s + 0.05)
    await emulator.reset_calls()

    answers = await asyncio.gather(
        *(gateway.get(f"/v1/stocks/{symbol}/quote") for symbol in SYMBOLS)
    )
    again = await gateway.get("/v1/stocks/AAPL/quote")

    assert await emulator.calls_to(QUOTES_PATH) == 1
    assert {a.json()["code"] for a in answers} == {"UPSTREAM_RATE_LIMITED"}
    assert again.json()["code"] == "UPSTREAM_RATE_LIMITED"
    assert int(again.headers["Retry-After"]) >= 2  # the new reset, not the probe's second
