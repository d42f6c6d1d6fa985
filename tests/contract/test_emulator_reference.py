"""The market calendar (GET /v2/calendar) and the asset list (GET /v2/assets) behave like
Alpaca's: only what a test stored (the calendar invents no day), Alpaca's filters and defaults,
its error bodies, and faults on their paths. alpaca-py parses both. Each test drives the real
process."""

from __future__ import annotations

import asyncio
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, AssetExchange, AssetStatus
from alpaca.trading.models import Asset, Calendar
from alpaca.trading.requests import GetAssetsRequest, GetCalendarRequest

from tests.emulator.control import EmulatorControl, EmulatorControlError
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.contract

CALENDAR, ASSETS = "/v2/calendar", "/v2/assets"


def day(on: str, settles: str, *, close: str = "16:00") -> dict[str, str]:
    return {"date": on, "open": "09:30", "close": close, "session_open": "0400",
            "session_close": "2000", "settlement_date": settles}  # fmt: skip


# Thanksgiving week 2025: no session on the 27th, an early close on the 28th, and T+1
# settlement that skips the holiday and the weekend.
WEEK = [
    day("2025-11-24", "2025-11-25"),
    day("2025-11-25", "2025-11-26"),
    day("2025-11-26", "2025-11-28"),
    day("2025-11-28", "2025-12-01", close="13:00"),
]


@pytest.fixture
def trading(emulator: EmulatorProcess) -> TradingClient:
    return TradingClient(
        emulator.key_id, emulator.secret_key, paper=True, url_override=emulator.base_url
    )


# --- the calendar -----------------------------------------------------------------------------


async def test_the_calendar_is_empty_until_days_are_stored(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    before = await alpaca.get(CALENDAR)
    await control.set_calendar(list(reversed(WEEK)))
    stored = await alpaca.get(CALENDAR)
    await control.reset()
    after_reset = await alpaca.get(CALENDAR)

    assert (before.status_code, before.json()) == (200, [])
    assert stored.json() == WEEK  # ordered by date, each day verbatim
    assert after_reset.json() == []


@pytest.mark.parametrize(
    ("query", "dates"),
    [
        ({"start": "2025-11-25", "end": "2025-11-26"}, ["2025-11-25", "2025-11-26"]),
        ({"start": "2025-11-27"}, ["2025-11-28"]),  # no day is made up for the holiday
        ({"end": "2025-11-24"}, ["2025-11-24"]),
        ({"start": "2025-11-26T23:30:00-05:00"}, ["2025-11-26", "2025-11-28"]),  # its own date
        ({"start": "2025-11-28", "end": "2025-11-24"}, []),
        ({"start": "2025-11-28", "date_type": "SETTLEMENT"}, ["2025-11-26", "2025-11-28"]),
        ({"end": "2025-11-26", "date_type": "TRADING"}, ["2025-11-24", "2025-11-25", "2025-11-26"]),
    ],
)
async def test_the_calendar_is_filtered_by_trading_or_settlement_date(
    control: EmulatorControl, alpaca: httpx.AsyncClient, query: dict[str, str], dates: list[str]
) -> None:
    await control.set_calendar(WEEK)

    response = await alpaca.get(CALENDAR, params=query)

    assert [listed["date"] for listed in response.json()] == dates


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"start": "2025-11-31"}, "invalid start: 2025-11-31"),
        ({"end": "tomorrow"}, "invalid end: tomorrow"),
        ({"end": "2025-11-26T25:00:00Z"}, "invalid end: 2025-11-26T25:00:00Z"),
        ({"date_type": "trading"}, "invalid date_type: trading"),
    ],
)
async def test_bad_calendar_parameters_are_400_with_a_code(
    control: EmulatorControl, alpaca: httpx.AsyncClient, query: dict[str, str], message: str
) -> None:
    response = await alpaca.get(CALENDAR, params=query)

    assert response.status_code == 400
    assert response.json() == {"code": 40010000, "message": message}


@pytest.mark.parametrize(
    "days",
    [
        [{"open": "09:30"}],  # no date to order or filter by
        [day("2025-11-24", "2025-11-25"), day("2025-11-24", "2025-11-25")],
        [day("24/11/2025", "2025-11-25")],
    ],
)
async def test_the_control_api_refuses_a_calendar_it_cannot_use_and_keeps_the_old_one(
    control: EmulatorControl, alpaca: httpx.AsyncClient, days: list[dict[str, str]]
) -> None:
    await control.set_calendar(WEEK)

    with pytest.raises(EmulatorControlError) as refused:
        await control.set_calendar(days)

    assert refused.value.status_code == 400
    assert (await alpaca.get(CALENDAR)).json() == WEEK


async def test_alpaca_py_reads_the_calendar_days_and_their_hours(
    control: EmulatorControl, trading: TradingClient
) -> None:
    await control.set_calendar(WEEK)

    days = await asyncio.to_thread(
        trading.get_calendar, GetCalendarRequest(start=date(2025, 11, 27), end=date(2025, 12, 31))
    )

    assert isinstance(days, list)
    assert all(isinstance(one, Calendar) for one in days)
    assert [(one.date, one.open, one.close) for one in days if isinstance(one, Calendar)] == [
        (date(2025, 11, 28), datetime(2025, 11, 28, 9, 30), datetime(2025, 11, 28, 13, 0))
    ]


async def test_faults_match_the_calendar_path(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.set_calendar(WEEK[:1])
    await control.add_fault(CALENDAR, "schema_wrong_type", count=1)
    await control.add_fault(CALENDAR, "status_503", count=1)

    wrong = await alpaca.get(CALENDAR)
    proxy = await alpaca.get(CALENDAR)
    healed = await alpaca.get(CALENDAR)

    assert wrong.json() == [{**WEEK[0], "open": 0, "close": 0}]
    assert (proxy.status_code, proxy.headers["Content-Type"].split(";")[0]) == (503, "text/plain")
    assert healed.json() == WEEK[:1]


# --- the asset list ---------------------------------------------------------------------------


async def register(control: EmulatorControl) -> None:
    await control.set_state(
        assets={
            "MSFT": {},
            "AAPL": {},
            "IBM": {"exchange": "NYSE", "attributes": []},
            "DELIST": {"status": "inactive", "tradable": False, "attributes": []},
            "ARKK": {"exchange": "ARCA", "attributes": ["fractional_eh_enabled"]},
            "BTC/USD": {"class": "crypto", "exchange": "CRYPTO", "attributes": []},
        }
    )


def symbols(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [listed["symbol"] for listed in response.json()]


async def test_assets_are_listed_by_class_exchange_and_symbol_equities_by_default(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await register(control)

    listed = await alpaca.get(ASSETS)
    one = (await alpaca.get("/v2/assets/AAPL")).json()

    assert symbols(listed) == ["ARKK", "AAPL", "DELIST", "MSFT", "IBM"]  # ARCA, NASDAQ, NYSE
    assert listed.json()[1] == one  # each in the single asset's shape


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "active"}, ["ARKK", "AAPL", "MSFT", "IBM"]),
        ({"status": "inactive"}, ["DELIST"]),
        ({"asset_class": "crypto"}, ["BTC/USD"]),
        ({"asset_class": "us_option"}, []),
        ({"exchange": "NYSE"}, ["IBM"]),
        ({"attributes": "has_options"}, ["AAPL", "MSFT"]),
        ({"attributes": "ipo,fractional_eh_enabled"}, ["ARKK"]),  # any of them
        ({"attributes": ""}, ["ARKK", "AAPL", "DELIST", "MSFT", "IBM"]),
        ({"status": "active", "exchange": "NASDAQ", "attributes": "has_options"}, ["AAPL", "MSFT"]),
    ],
)
async def test_asset_filters_are_alpacas(
    control: EmulatorControl,
    alpaca: httpx.AsyncClient,
    query: dict[str, str],
    expected: list[str],
) -> None:
    await register(control)

    assert symbols(await alpaca.get(ASSETS, params=query)) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [("status", "halted"), ("asset_class", "equity"), ("exchange", "LSE"), ("attributes", "x")],
)
async def test_asset_filter_values_outside_alpacas_enums_are_422(
    control: EmulatorControl, alpaca: httpx.AsyncClient, name: str, value: str
) -> None:
    response = await alpaca.get(ASSETS, params={name: value})

    assert response.status_code == 422
    assert response.json() == {"code": 40010000, "message": f"invalid {name}: {value}"}


async def test_no_assets_is_an_empty_list_and_faults_match_the_list_path(
    control: EmulatorControl, alpaca: httpx.AsyncClient
) -> None:
    await control.add_fault(ASSETS, "schema_missing_t", count=1)

    broken = await alpaca.get(ASSETS)
    empty = await alpaca.get(ASSETS)
    single = await alpaca.get("/v2/assets/AAPL")

    assert broken.status_code == 200
    assert [set(sample) & {"id"} for sample in broken.json()] == [set()]  # a sample, id dropped
    assert empty.json() == []
    assert single.status_code == 404  # the fault's path was the list's alone


async def test_alpaca_py_lists_the_assets(control: EmulatorControl, trading: TradingClient) -> None:
    await register(control)

    listed: Any = await asyncio.to_thread(
        trading.get_all_assets,
        GetAssetsRequest(
            status=AssetStatus.ACTIVE,
            asset_class=AssetClass.US_EQUITY,
            exchange=AssetExchange.NASDAQ,
        ),
    )

    assert all(isinstance(asset, Asset) for asset in listed)
    assert [(asset.symbol, asset.exchange) for asset in listed] == [
        ("AAPL", AssetExchange.NASDAQ),
        ("MSFT", AssetExchange.NASDAQ),
    ]
