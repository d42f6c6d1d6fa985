"""The face's bar pages are cached by the instants asked for, and kept long only once their bars
can no longer change (the same rules as /v1/stocks/{symbol}/bars)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl

BARS = "/alpaca/v2/stocks/bars"


def day_bar(t: datetime, close: float) -> dict[str, object]:
    stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "t": stamp,
        "o": close,
        "h": close,
        "l": close,
        "c": close,
        "v": 10,
        "n": 2,
        "vw": close,
    }


async def test_two_spellings_of_one_instant_share_one_page(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_bars("AAPL", [day_bar(datetime(2024, 1, 2, 5, tzinfo=UTC), 185.64)])
    gateway = await make_gateway()
    await emulator.reset_calls()
    answers = [
        await gateway.get(
            BARS, params={"symbols": "AAPL", "timeframe": "1Day", "start": start, "end": end}
        )
        for start, end in (
            ("2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"),
            ("2024-01-01T00:00:00+00:00", "2024-01-04T19:00:00-05:00"),
            ("2024-01-01T00:00:00.000Z", "2024-01-05T00:00:00.000000000Z"),
        )
    ]

    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert answers[0].json() == answers[1].json() == answers[2].json()
    assert answers[0].json()["bars"]["AAPL"][0]["c"] == 185.64
    assert await emulator.calls_to("/v2/stocks/bars") == 1


async def test_a_day_bar_still_forming_is_not_kept_as_history(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    # An end a few minutes ago lies inside today's daily bar, which may still change: the page is
    # kept CACHE_OPEN_BARS_TTL_S, as on /v1, not the day history is kept.
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    await emulator.set_bars("AAPL", [day_bar(today, 190.0)], timeframe="1Day")
    gateway = await make_gateway(cache_open_bars_ttl_s=0.2, cache_closed_bars_ttl_s=3600)
    params = {
        "symbols": "AAPL",
        "timeframe": "1Day",
        "start": (today - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    await emulator.reset_calls()

    first = await gateway.get(BARS, params=params)
    await asyncio.sleep(0.3)
    second = await gateway.get(BARS, params=params)

    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert await emulator.calls_to("/v2/stocks/bars") == 2


async def test_a_closed_range_is_kept_as_history(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_bars("AAPL", [day_bar(datetime(2024, 1, 2, 5, tzinfo=UTC), 185.64)])
    gateway = await make_gateway(cache_open_bars_ttl_s=0.2, cache_closed_bars_ttl_s=3600)
    params = {"symbols": "AAPL", "timeframe": "1Day", "start": "2024-01-01", "end": "2024-01-05"}
    await emulator.reset_calls()

    first = await gateway.get(BARS, params=params)
    await asyncio.sleep(0.3)
    second = await gateway.get(BARS, params=params)

    assert first.json() == second.json()
    assert await emulator.calls_to("/v2/stocks/bars") == 1


async def test_minute_bars_ending_minutes_ago_are_not_history_yet(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    # The last 1Min bar closed 4 minutes ago, but SIP reaches the free plan 15 minutes late and
    # trades are corrected after the fact: the range may still gain bars. /v1 and the face both
    # keep it the open-bars TTL, not a day.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await emulator.set_bars("AAPL", [day_bar(now - timedelta(minutes=6), 190.0)], timeframe="1Min")
    gateway = await make_gateway(cache_open_bars_ttl_s=0.2, cache_closed_bars_ttl_s=3600)
    start = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    face = {"symbols": "AAPL", "timeframe": "1Min", "start": start, "end": end}
    v1 = {"timeframe": "1Min", "start": start, "end": end}
    await emulator.reset_calls()

    for _ in range(2):
        assert (await gateway.get(BARS, params=face)).status_code == 200
        assert (await gateway.get("/v1/stocks/AAPL/bars", params=v1)).status_code == 200
        await asyncio.sleep(0.3)

    assert await emulator.calls_to("/v2/stocks/bars") == 4
