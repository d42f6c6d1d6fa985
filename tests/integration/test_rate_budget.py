"""One gateway's rate budget for Alpaca (no Redis: the whole budget is this process's): only real
upstream calls spend it, a spent budget answers 503 with the true wait without calling Alpaca,
orders keep their reserve through a flood of reads, and Alpaca's own word (Remaining 0) holds
the lane until its reset."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_orders import ORDER
from tests.samples import QUOTE

pytestmark = pytest.mark.integration
QUOTES_PATH = "/v2/stocks/quotes/latest"
SYMBOLS = [f"B{n:02d}" for n in range(20)]


async def metric(gateway: GatewayClient, name: str, **labels: str) -> float:
    text = (await gateway.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} is not exported")


async def test_cache_hits_and_coalesced_followers_spend_no_budget(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_state(quotes=dict.fromkeys(["AAPL", *SYMBOLS], QUOTE))
    # A burst of 2, then one call a second: the second real call spends the last cell.
    gateway = await make_gateway(
        alpaca_data_budget_per_minute=62, alpaca_data_budget_burst=2, cache_quote_ttl_s=30
    )

    joined = await asyncio.gather(*(gateway.get("/v1/stocks/AAPL/quote") for _ in range(50)))
    hits = [await gateway.get("/v1/stocks/AAPL/quote") for _ in range(50)]

    assert [a.status_code for a in [*joined, *hits]] == [200] * 100
    assert await emulator.calls_to(QUOTES_PATH) == 1
    assert await metric(gateway, "gateway_upstream_budget_remaining", lane="data") == 1
    assert (await gateway.get(f"/v1/stocks/{SYMBOLS[0]}/quote")).status_code == 200
    assert await emulator.calls_to(QUOTES_PATH) == 2


async def test_a_spent_budget_answers_503_with_the_true_wait_and_calls_nothing(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_state(quotes=dict.fromkeys(SYMBOLS, QUOTE))
    # 3 at once, then one call every 4 s.
    gateway = await make_gateway(alpaca_data_budget_per_minute=18, alpaca_data_budget_burst=3)

    answers = [await gateway.get(f"/v1/stocks/{symbol}/quote") for symbol in SYMBOLS[:10]]

    assert [a.status_code for a in answers] == [200] * 3 + [503] * 7
    assert await emulator.calls_to(QUOTES_PATH) == 3
    for refused in answers[3:]:
        problem = refused.json()
        assert problem["code"] == "UPSTREAM_RATE_LIMITED"
        assert problem["upstream"] == "data"
        # The cell comes back 4 s after the burst (less the moments the calls took).
        assert refused.headers["Retry-After"] == "4"
        assert problem["retry_after_s"] == 4
    assert (
        await metric(gateway, "gateway_upstream_throttled_total", lane="data", reason="budget") == 7
    )
    # Options data lives on the data host: it spends the same budget.
    option = await gateway.get("/v1/options/AAPL250117C00150000/quote")
    assert option.status_code == 503
    assert option.json()["code"] == "UPSTREAM_RATE_LIMITED"
    assert await emulator.calls_to("/v1beta1/options/quotes/latest") == 0


async def test_orders_keep_their_reserve_through_a_flood_of_account_reads(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_asset("AAPL", {})
    gateway = await make_gateway(
        alpaca_trading_budget_per_minute=66,
        alpaca_trading_budget_burst=6,
        alpaca_order_budget_reserve=3,
        order_reconcile_first_wait_s=0.05,
        # Nothing in the background spends the lane (the market clock lives on the trading
        # host): the test counts every cell.
        clock_poll_interval_s=0,
        order_sweep_interval_s=0,
    )
    key = await gateway.issue_key("trading:read", "trading:write")
    auth = {"Authorization": f"Bearer {key}"}

    reads = await asyncio.gather(*(gateway.get("/v1/account", headers=auth) for _ in range(30)))
    orders = [
        await gateway.post(
            "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": f"bot-{uuid.uuid4()}"}
        )
        for _ in range(3)
    ]

    statuses = [r.status_code for r in reads]
    assert statuses.count(200) == 3, [r.text for r in reads[:2]]  # the reads' part of the burst
    assert statuses.count(503) == 27
    assert [o.status_code for o in orders] == [200] * 3, [o.text for o in orders]
    assert len(await emulator.orders()) == 3
    # And the reserve is the orders': the reads are still refused after them.
    after = await gateway.get("/v1/account", headers=auth)
    assert after.status_code == 503
    assert after.json()["code"] == "UPSTREAM_RATE_LIMITED"


async def test_alpacas_remaining_zero_holds_the_lane_until_its_reset(
    emulator: EmulatorControl, emulator_process: EmulatorProcess, make_gateway: GatewayFactory
) -> None:
    """Another client of the same account (a notebook, the SDK) spent all but one call."""
    await emulator.set_state(quotes=dict.fromkeys(SYMBOLS, QUOTE))
    await emulator.configure(rate_limit_per_minute=5)
    gateway = await make_gateway()
    headers = {
        "APCA-API-KEY-ID": emulator_process.key_id,
        "APCA-API-SECRET-KEY": emulator_process.secret_key,
    }
    async with httpx.AsyncClient(base_url=emulator_process.base_url, headers=headers) as other:
        for _ in range(4):
            spent = await other.get(QUOTES_PATH, params={"symbols": "B19"})
    assert spent.headers["X-RateLimit-Remaining"] == "1"

    last = await gateway.get(f"/v1/stocks/{SYMBOLS[0]}/quote")
    assert last.status_code == 200  # Alpaca answered it, and said Remaining: 0
    await emulator.reset_calls()
    held = [await gateway.get(f"/v1/stocks/{symbol}/quote") for symbol in SYMBOLS[1:6]]

    assert await emulator.calls_to(QUOTES_PATH) == 0
    for answer in held:
        assert answer.status_code == 503
        assert answer.json()["code"] == "UPSTREAM_RATE_LIMITED"
        assert 1 <= int(answer.headers["Retry-After"]) <= 61  # Alpaca's window reset
    assert (
        await metric(
            gateway, "gateway_upstream_throttled_total", lane="data", reason="alpaca_block"
        )
        == 5
    )
