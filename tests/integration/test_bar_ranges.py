"""Bars are cached by what Alpaca returned, not by every spelling of the request.

Each sharing is proved twice: the emulator counts one call, and the bars served equal what Alpaca
(the emulator, asked directly with that very spelling) answers. Where Alpaca's answer would
differ, the request makes its own call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_stock_endpoints import exact_json, expected_bar

pytestmark = pytest.mark.integration
BARS = "/v2/stocks/bars"
# Hourly bars 09:00..15:00 UTC on 2024-01-02: none between midnight and the first bar.
HOURS = range(9, 16)
FIRST_BAR = "2024-01-02T09:00:00Z"
CLOSED_END = "2024-01-03T00:00:00Z"


def hourly_bars() -> list[dict[str, Any]]:
    return [
        {
            "t": f"2024-01-02T{hour:02d}:00:00Z",
            "o": Decimal(f"{180 + hour}.0001"),
            "h": Decimal(f"{181 + hour}.25"),
            "l": Decimal(f"{179 + hour}.9999"),
            "c": Decimal(f"{180 + hour}.5001"),
            "v": 10_000 + hour,
            "n": 500 + hour,
            "vw": Decimal(f"{180 + hour}.432109"),
        }
        for hour in HOURS
    ]


@pytest.fixture
async def alpaca(emulator_process: EmulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator asked directly, as Alpaca would be by a client of its own."""
    headers = {
        "APCA-API-KEY-ID": emulator_process.key_id,
        "APCA-API-SECRET-KEY": emulator_process.secret_key,
    }
    async with httpx.AsyncClient(base_url=emulator_process.base_url, headers=headers) as client:
        yield client


async def gateway_bars(gateway: GatewayClient, start: str, **params: Any) -> dict[str, Any]:
    query = {"timeframe": "1Hour", "start": start, **params}
    response = await gateway.get("/v1/stocks/AAPL/bars", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = exact_json(response)
    return body


async def alpacas_bars(alpaca: httpx.AsyncClient, start: str, **params: Any) -> list[Any]:
    """What Alpaca answers this exact spelling, in the gateway's vocabulary."""
    query = {"symbols": "AAPL", "timeframe": "1Hour", "feed": "iex", "start": start, **params}
    answer = exact_json(await alpaca.get(BARS, params=query))
    return [expected_bar(bar) for bar in answer["bars"].get("AAPL", [])]


async def bar_spans_gauge(gateway: GatewayClient) -> float:
    for family in text_string_to_metric_families((await gateway.get("/metrics")).text):
        for sample in family.samples:
            if sample.name == "gateway_inprocess_entries" and sample.labels == {
                "structure": "bar_spans"
            }:
                return float(sample.value)
    raise AssertionError("gateway_inprocess_entries{structure='bar_spans'} is not exported")


@pytest.fixture
async def stored(emulator: EmulatorControl) -> list[dict[str, Any]]:
    bars = hourly_bars()
    await emulator.set_bars("AAPL", bars)
    return [expected_bar(bar) for bar in bars]


async def test_spellings_of_one_instant_share_one_entry(
    emulator: EmulatorControl,
    gateway: GatewayClient,
    alpaca: httpx.AsyncClient,
    stored: list[Any],
) -> None:
    spellings = [
        "2024-01-02T00:00:00Z",
        "2024-01-02T00:00:00+00:00",
        "2024-01-02T00:00:00.000Z",
        "2024-01-01T19:00:00-05:00",
    ]
    # An open range (no end): only the spelling is shared, never a span.
    bodies = [await gateway_bars(gateway, start) for start in spellings]

    assert await emulator.calls_to(BARS) == 1
    assert [b["provenance"]["cache"] for b in bodies] == ["miss", "hit", "hit", "hit"]
    for start, body in zip(spellings, bodies, strict=True):
        assert body["bars"] == stored == await alpacas_bars(alpaca, start)


async def test_a_bare_date_keeps_its_own_entry(
    emulator: EmulatorControl, gateway: GatewayClient, stored: list[Any]
) -> None:
    # Alpaca does not document a bare date's zone: it is not assumed to be UTC midnight.
    instant = await gateway_bars(gateway, "2024-01-02T00:00:00Z", end=CLOSED_END)
    date = await gateway_bars(gateway, "2024-01-02", end=CLOSED_END)

    assert await emulator.calls_to(BARS) == 2
    assert instant["bars"] == date["bars"] == stored


async def test_a_closed_range_is_shared_by_every_start_up_to_its_first_bar(
    emulator: EmulatorControl,
    gateway: GatewayClient,
    alpaca: httpx.AsyncClient,
    stored: list[Any],
) -> None:
    first = await gateway_bars(gateway, "2024-01-02T00:00:00Z", end=CLOSED_END)
    later_starts = ["2024-01-02T00:00:00.000000001Z", "2024-01-02T05:17:00+00:00", FIRST_BAR]
    shared = [await gateway_bars(gateway, start, end=CLOSED_END) for start in later_starts]

    assert await emulator.calls_to(BARS) == 1
    assert first["bars"] == stored
    assert [b["provenance"]["cache"] for b in shared] == ["hit"] * 3
    # Served with the first answer's true fetch time, not made to look fresh.
    assert {b["provenance"]["fetched_at"] for b in shared} == {first["provenance"]["fetched_at"]}
    for start, body in zip(later_starts, shared, strict=True):
        assert body["bars"] == await alpacas_bars(alpaca, start, end=CLOSED_END)
    assert await bar_spans_gauge(gateway) == 1


async def test_a_start_whose_answer_differs_makes_its_own_call(
    emulator: EmulatorControl,
    gateway: GatewayClient,
    alpaca: httpx.AsyncClient,
    stored: list[Any],
) -> None:
    await gateway_bars(gateway, "2024-01-02T00:00:00Z", end=CLOSED_END)

    after_first_bar = await gateway_bars(gateway, "2024-01-02T09:00:00.000000001Z", end=CLOSED_END)
    before_the_span = await gateway_bars(gateway, "2024-01-01T23:00:00Z", end=CLOSED_END)

    assert await emulator.calls_to(BARS) == 3
    assert after_first_bar["bars"] == stored[1:]  # the 09:00 bar is before this start
    assert after_first_bar["bars"] == await alpacas_bars(
        alpaca, "2024-01-02T09:00:00.000000001Z", end=CLOSED_END
    )
    assert before_the_span["provenance"]["cache"] == "miss"  # a bar might have been there


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="open-range"),
        pytest.param({"end": CLOSED_END, "limit": 3}, id="series-cut-by-limit"),
    ],
)
async def test_no_span_is_shared_unless_the_range_is_closed_and_complete(
    emulator: EmulatorControl, gateway: GatewayClient, stored: list[Any], params: dict[str, Any]
) -> None:
    # Open: a bar may still be added or change. Cut by limit: Alpaca's next_page_token is its
    # own answer to that request, and nothing is proved about the bars after the cut.
    await gateway_bars(gateway, "2024-01-02T00:00:00Z", **params)
    later = await gateway_bars(gateway, "2024-01-02T05:00:00Z", **params)

    assert await emulator.calls_to(BARS) == 2
    assert later["provenance"]["cache"] == "miss"
    assert await bar_spans_gauge(gateway) == 0


async def test_a_page_token_is_never_answered_from_a_span(
    emulator: EmulatorControl, gateway: GatewayClient, stored: list[Any]
) -> None:
    cut = await gateway_bars(gateway, "2024-01-02T00:00:00Z", end=CLOSED_END, limit=3)
    token = cut["next_page_token"]
    assert token is not None
    await gateway_bars(gateway, "2024-01-02T00:00:00Z", end=CLOSED_END)

    rest = await gateway_bars(
        gateway, "2024-01-02T05:00:00Z", end=CLOSED_END, limit=3, page_token=token
    )

    assert await emulator.calls_to(BARS) == 3
    assert rest["bars"] == stored[3:6]


async def test_the_span_index_is_bounded_by_its_setting(
    emulator: EmulatorControl, make_gateway: GatewayFactory, stored: list[Any]
) -> None:
    gateway = await make_gateway(cache_bar_spans_max_entries=1)
    await gateway_bars(gateway, "2024-01-02T00:00:00Z", end=CLOSED_END)
    await gateway_bars(gateway, "2024-01-02T00:00:00Z", end="2024-01-02T23:00:00Z")
    assert await bar_spans_gauge(gateway) == 1

    # The first range's span was let go: a new start is its own call again (never a wrong one).
    again = await gateway_bars(gateway, "2024-01-02T03:00:00Z", end=CLOSED_END)

    assert await emulator.calls_to(BARS) == 3
    assert again["bars"] == stored
    assert await bar_spans_gauge(gateway) == 1


async def test_instances_sharing_redis_share_a_closed_range_by_its_span(
    emulator: EmulatorControl,
    make_gateway: GatewayFactory,
    redis_url: str,
    alpaca: httpx.AsyncClient,
    stored: list[Any],
) -> None:
    # Each instance has its own index; the series it points to is the one both read in Redis.
    namespace = f"bar-spans-{uuid.uuid4().hex[:8]}"
    first = await make_gateway(redis_url=redis_url, cache_namespace=namespace)
    second = await make_gateway(redis_url=redis_url, cache_namespace=namespace)
    await gateway_bars(first, "2024-01-02T00:00:00Z", end=CLOSED_END)
    # The second instance learns the span from the entry it reads, then shares it.
    await gateway_bars(second, "2024-01-02T00:00:00+00:00", end=CLOSED_END)
    shared = await gateway_bars(second, "2024-01-02T06:00:00Z", end=CLOSED_END)

    assert await emulator.calls_to(BARS) == 1
    assert shared["bars"] == stored
    assert shared["bars"] == await alpacas_bars(alpaca, "2024-01-02T06:00:00Z", end=CLOSED_END)


async def test_a_bare_end_date_of_today_is_not_a_closed_range(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    """Alpaca does not say where a bare end date ends (the emulator: the day's last UTC
    nanosecond): today's bars may still change, so they are not kept for the closed-range TTL."""
    gateway = await make_gateway(cache_open_bars_ttl_s=0.2)
    today = datetime.now(UTC).date().isoformat()
    forming = {**hourly_bars()[0], "t": f"{today}T00:00:00Z"}
    await emulator.set_bars("AAPL", [forming], timeframe="1Min")
    # Read as UTC midnight, the range would be closed a minute into the day (and kept a day).
    params = {"timeframe": "1Min", "start": f"{today}T00:00:00Z", "end": today}

    first = await gateway.get("/v1/stocks/AAPL/bars", params=params)
    # The day is not over: its bar moves on.
    await emulator.set_bars("AAPL", [{**forming, "c": Decimal("999.0001")}], timeframe="1Min")
    await asyncio.sleep(0.3)
    second = await gateway.get("/v1/stocks/AAPL/bars", params=params)

    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert await emulator.calls_to(BARS) == 2
    assert exact_json(second)["bars"][0]["close"] == Decimal("999.0001")
