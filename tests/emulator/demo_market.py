"""The market ``make demo`` shows: AAPL, MSFT and SPY in Alpaca's wire shapes, stored in a
running emulator through its control API.

Quotes, trades and snapshots stamped in the last seconds (with the emulator's random walk on,
they move from there), daily bars for the last trading days (``1Day``), minute bars for the last
hour (``1Min``), the clock, AAPL and SPY option chains and contracts, and one AAPL position.
This is the demo's own seed data; tests store their own values.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from .control import EmulatorControl
from .decimals import decimal_text
from .demo_options import Chain, Wire, chain_data
from .samples import asset_id_of

NEW_YORK = ZoneInfo("America/New_York")
DAILY_BARS = 5
MINUTE_BARS = 60


@dataclass(frozen=True)
class Listing:
    """A symbol's demo prices: last daily close and the tape its primary exchange reports to."""

    symbol: str
    close: float
    tape: str  # A = NYSE, B = NYSE Arca / regional, C = Nasdaq


LISTINGS = (
    Listing("AAPL", 229.87, "C"),
    Listing("MSFT", 423.46, "C"),
    Listing("SPY", 591.15, "B"),
)
CHAINS = {
    "AAPL": Chain("AAPL", strike_step=5, strikes_each_side=2, volatility=0.24),
    "SPY": Chain("SPY", strike_step=5, strikes_each_side=1, volatility=0.13),
}
POSITION_QTY = Decimal(10)
POSITION_ENTRY = Decimal("221.43")


# --- timestamps ---------------------------------------------------------------------------------


def rfc3339_ns(ns_since_epoch: int) -> str:
    """Alpaca's ``t`` format: UTC, nanosecond precision, ``Z``."""
    seconds, fraction = divmod(ns_since_epoch, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def utc_z(moment: datetime) -> str:
    """A whole-second UTC time as Alpaca stamps bars: ``2024-01-03T05:00:00Z``."""
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"


def trading_days(before: date, count: int) -> list[date]:
    """The ``count`` weekdays before ``before``, oldest first (holidays are not modelled)."""
    days: list[date] = []
    day = before
    while len(days) < count:
        day -= timedelta(days=1)
        if day.weekday() < 5:
            days.append(day)
    return days[::-1]


def daily_bar_time(day: date) -> str:
    """Daily bars are stamped at midnight New York time (T04:00:00Z in EDT, T05:00:00Z in EST)."""
    return utc_z(datetime(day.year, day.month, day.day, tzinfo=NEW_YORK))


# --- wire objects (alpaca-notes §2.1 / §2.3) ---------------------------------------------------


def bar(t: str, open_: float, close: float, volume: int, trades: int, *, wick: float) -> Wire:
    """A bar whose high and low reach ``wick`` (a fraction) beyond its open and close."""
    high = round(max(open_, close) * (1 + wick), 2)
    low = round(min(open_, close) * (1 - wick), 2)
    vwap = round((open_ + close + high + low) / 4, 6)
    return {"t": t, "o": open_, "h": high, "l": low, "c": close, "v": volume, "n": trades,
            "vw": vwap}  # fmt: skip


def daily_bars(listing: Listing, days: list[date]) -> list[Wire]:
    """One daily bar per day, oldest first, ending at the listing's close, moving ±0.4-0.6%."""
    bars: list[Wire] = []
    close = listing.close
    for age, day in enumerate(reversed(days)):  # newest first, then reversed below
        move = (0.6 if age % 2 else -0.4) * listing.close / 100
        open_ = round(close - move, 2)
        volume = 48_000_000 - age * 1_700_000
        trades = 512_000 - age * 9_137
        bars.append(bar(daily_bar_time(day), open_, close, volume, trades, wick=0.004))
        close = round(open_ - move / 2, 2)
    return bars[::-1]


def minute_bars(listing: Listing, last_minute: datetime) -> list[Wire]:
    """``MINUTE_BARS`` one-minute bars, oldest first, the last one starting at ``last_minute``
    and closing at the listing's close; each moves a few cents from the one before."""
    rng = random.Random(listing.symbol)  # the same hour of bars on every run
    bars: list[Wire] = []
    close = listing.close
    for age in range(MINUTE_BARS):
        open_ = round(close - rng.randint(-6, 6) / 100, 2)
        start = last_minute - timedelta(minutes=age)
        volume = rng.randint(1_800, 9_500)
        bars.append(bar(utc_z(start), open_, close, volume, volume // 80, wick=0.0002))
        close = open_
    return bars[::-1]


def quote(listing: Listing, t: str) -> Wire:
    # IEX (exchange V) is the free plan's feed and the gateway's default.
    bid, ask = round(listing.close - 0.02, 2), round(listing.close + 0.03, 2)
    return {"t": t, "bx": "V", "bp": bid, "bs": 2, "ax": "V", "ap": ask, "as": 1, "c": ["R"],
            "z": listing.tape}  # fmt: skip


def trade(listing: Listing, t: str, trade_id: int) -> Wire:
    return {"t": t, "x": "V", "p": listing.close, "s": 100, "i": trade_id, "c": ["@"],
            "z": listing.tape}  # fmt: skip


def clock(now: datetime) -> Wire:
    """Alpaca's clock: ET offsets, regular session 09:30-16:00 on weekdays."""
    et = now.astimezone(NEW_YORK).replace(microsecond=0)

    def session(day: date, hour: int, minute: int) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK)

    def next_weekday(day: date) -> date:
        day += timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return day

    today = et.date()
    is_weekday = today.weekday() < 5
    is_open = is_weekday and session(today, 9, 30) <= et < session(today, 16, 0)
    before_open = is_weekday and et < session(today, 9, 30)
    open_day = today if before_open else next_weekday(today)
    close_day = today if is_weekday and et < session(today, 16, 0) else next_weekday(today)
    return {
        "timestamp": et.isoformat(),
        "is_open": is_open,
        "next_open": session(open_day, 9, 30).isoformat(),
        "next_close": session(close_day, 16, 0).isoformat(),
    }


def position(listing: Listing, previous_close: Any) -> Wire:
    """A long position bought at ``POSITION_ENTRY``, valued at the listing's close (decimals as
    strings, computed exactly, as Alpaca's positions carry them)."""
    price, lastday = Decimal(str(listing.close)), Decimal(str(previous_close))
    market_value, cost_basis = POSITION_QTY * price, POSITION_QTY * POSITION_ENTRY
    intraday = POSITION_QTY * (price - lastday)

    def ratio(part: Decimal, whole: Decimal) -> str:
        return decimal_text(round(part / whole, 16))

    return {
        "asset_id": asset_id_of(listing.symbol),
        "symbol": listing.symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "asset_marginable": True,
        "avg_entry_price": decimal_text(POSITION_ENTRY),
        "qty": decimal_text(POSITION_QTY),
        "qty_available": decimal_text(POSITION_QTY),
        "side": "long",
        "market_value": decimal_text(market_value),
        "cost_basis": decimal_text(cost_basis),
        "unrealized_pl": decimal_text(market_value - cost_basis),
        "unrealized_plpc": ratio(market_value - cost_basis, cost_basis),
        "unrealized_intraday_pl": decimal_text(intraday),
        "unrealized_intraday_plpc": ratio(intraday, POSITION_QTY * lastday),
        "current_price": decimal_text(price),
        "lastday_price": decimal_text(lastday),
        "change_today": ratio(price - lastday, lastday),
    }


# --- seeding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedData:
    first_bar_day: date
    option_contract: str  # one OCC symbol the printout can ask about


async def seed(base_url: str) -> SeedData:
    """Store the demo market in the emulator at ``base_url``."""
    now = datetime.now(UTC)
    now_ns = time.time_ns()
    today = now.astimezone(NEW_YORK).date()
    days = trading_days(today, DAILY_BARS)
    last_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    contracts: list[str] = []
    async with EmulatorControl(base_url) as control:  # closes its HTTP client (aclose)
        await control.set_clock(clock(now))
        for index, listing in enumerate(LISTINGS):
            quote_t = rfc3339_ns(now_ns - (1_500 + 731 * index) * 1_000_000 - 417)
            trade_t = rfc3339_ns(now_ns - (2_900 + 389 * index) * 1_000_000 - 233)
            latest_quote = quote(listing, quote_t)
            latest_trade = trade(listing, trade_t, 52_983_525_029_461 + index * 7_919)
            days_bars = daily_bars(listing, days)
            minutes = minute_bars(listing, last_minute)
            await control.set_asset(listing.symbol, {})
            await control.set_quote(listing.symbol, latest_quote)
            await control.set_trade(listing.symbol, latest_trade)
            await control.set_bars(listing.symbol, days_bars, timeframe="1Day")
            await control.set_bars(listing.symbol, minutes, timeframe="1Min")
            await control.set_snapshot(
                listing.symbol,
                {
                    "latestTrade": latest_trade,
                    "latestQuote": latest_quote,
                    "minuteBar": minutes[-1],
                    "dailyBar": days_bars[-1],
                    "prevDailyBar": days_bars[-2],
                },
            )
            if listing.symbol == "AAPL":
                await control.set_position("AAPL", position(listing, days_bars[-2]["c"]))
            chain = CHAINS.get(listing.symbol)
            if chain is not None:
                options = chain_data(chain, listing.close, today, quote_t, trade_t, days[-1])
                await control.set_state(
                    option_contracts=options.contracts,
                    option_snapshots=options.snapshots,
                    option_quotes=options.quotes,
                    option_trades=options.trades,
                )
                contracts.append(options.at_money_call)
    return SeedData(first_bar_day=days[0], option_contract=contracts[0])
