"""`make demo`: the gateway in front of the Alpaca emulator, with curl commands that work.

Starts the emulator as its own process, stores realistic market data in it for AAPL, MSFT and
SPY (wire shapes of Alpaca's data API, timestamps of the last minutes and days), starts the
gateway with uvicorn pointed at the emulator, prints commands to try, and runs until Ctrl-C
or SIGTERM, then stops both processes. Nothing here talks to the real Alpaca.

    python -m tests.demo          # gateway on GATEWAY_PORT (default 8000)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess

NEW_YORK = ZoneInfo("America/New_York")
GATEWAY_START_TIMEOUT_S = 30.0
GATEWAY_STOP_TIMEOUT_S = 10.0

Wire = dict[str, Any]


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
DAILY_BARS = 5


# --- timestamps ---------------------------------------------------------------------------------


def rfc3339_ns(ns_since_epoch: int) -> str:
    """Alpaca's `t` format: UTC, nanosecond precision, `Z`."""
    seconds, fraction = divmod(ns_since_epoch, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def utc_z(moment: datetime) -> str:
    """A whole-second UTC time as Alpaca stamps bars: `2024-01-03T05:00:00Z`."""
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"


def trading_days(before: date, count: int) -> list[date]:
    """The `count` weekdays before `before`, oldest first (holidays are not modelled)."""
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
    """A bar whose high and low reach `wick` (a fraction) beyond its open and close."""
    high = round(max(open_, close) * (1 + wick), 2)
    low = round(min(open_, close) * (1 - wick), 2)
    vwap = round((open_ + close + high + low) / 4, 6)
    return {
        "t": t,
        "o": open_,
        "h": high,
        "l": low,
        "c": close,
        "v": volume,
        "n": trades,
        "vw": vwap,
    }


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


def quote(listing: Listing, t: str) -> Wire:
    # IEX (exchange V) is the free plan's feed and the gateway's default.
    return {
        "t": t,
        "bx": "V",
        "bp": round(listing.close - 0.02, 2),
        "bs": 2,
        "ax": "V",
        "ap": round(listing.close + 0.03, 2),
        "as": 1,
        "c": ["R"],
        "z": listing.tape,
    }


def trade(listing: Listing, t: str, trade_id: int) -> Wire:
    return {
        "t": t,
        "x": "V",
        "p": listing.close,
        "s": 100,
        "i": trade_id,
        "c": ["@"],
        "z": listing.tape,
    }


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


@dataclass(frozen=True)
class SeedData:
    first_bar_day: date


async def seed(base_url: str) -> SeedData:
    """Store quotes, trades, bars, snapshots, assets and the clock in the emulator."""
    now = datetime.now(UTC)
    now_ns = time.time_ns()
    days = trading_days(now.astimezone(NEW_YORK).date(), DAILY_BARS)
    async with EmulatorControl(base_url) as control:  # closes its HTTP client (aclose)
        await control.set_clock(clock(now))
        for index, listing in enumerate(LISTINGS):
            quote_t = rfc3339_ns(now_ns - (1_500 + 731 * index) * 1_000_000 - 417)
            trade_t = rfc3339_ns(now_ns - (2_900 + 389 * index) * 1_000_000 - 233)
            latest_quote = quote(listing, quote_t)
            latest_trade = trade(listing, trade_t, 52_983_525_029_461 + index * 7_919)
            bars = daily_bars(listing, days)
            minute_start = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
            minute_open = round(listing.close - 0.05, 2)
            minute_bar = bar(
                utc_z(minute_start), minute_open, listing.close, 3_412, 41, wick=0.0002
            )

            await control.set_asset(listing.symbol, {})
            await control.set_quote(listing.symbol, latest_quote)
            await control.set_trade(listing.symbol, latest_trade)
            await control.set_bars(listing.symbol, bars)
            await control.set_snapshot(
                listing.symbol,
                {
                    "latestTrade": latest_trade,
                    "latestQuote": latest_quote,
                    "minuteBar": minute_bar,
                    "dailyBar": bars[-1],
                    "prevDailyBar": bars[-2],
                },
            )
    return SeedData(first_bar_day=days[0])


# --- processes ----------------------------------------------------------------------------------


def gateway_env(emulator: EmulatorProcess, store_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        ALPACA_DATA_URL=emulator.base_url,
        ALPACA_TRADING_URL=emulator.base_url,
        ALPACA_API_KEY_ID=emulator.key_id,
        ALPACA_API_SECRET_KEY=emulator.secret_key,
        UPSTREAM_SOURCE_NAME="emulator",
        # The demo's own embedded store, thrown away with it.
        EMBEDDED_DB_PATH=os.path.join(store_dir, "demo.sqlite3"),
    )
    return env


def create_demo_key(env: dict[str, str]) -> str:
    """A key made the way an operator makes one: the CLI prints it as its last line."""
    argv = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "demo"]
    argv += ["--scopes", "data:read,trading:read,trading:write"]
    created = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=60)
    return created.stdout.strip().splitlines()[-1]


def start_gateway(env: dict[str, str], host: str, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", host, "--port", str(port)]
    return subprocess.Popen([*argv, "--no-access-log"], env=env)


def wait_for_health(gateway: subprocess.Popen[bytes], base_url: str) -> None:
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if gateway.poll() is not None:
                raise SystemExit(f"demo: the gateway exited with status {gateway.returncode}")
            try:
                if client.get(f"{base_url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.2)
    raise SystemExit(f"demo: the gateway did not answer {base_url}/health in time")


def stop_gateway(gateway: subprocess.Popen[bytes]) -> None:
    if gateway.poll() is None:
        gateway.terminate()
        try:
            gateway.wait(timeout=GATEWAY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_demo(host: str, port: int) -> int:
    base_url = f"http://{host}:{port}"
    with EmulatorProcess() as emulator, tempfile.TemporaryDirectory() as store_dir:
        seeded = asyncio.run(seed(emulator.base_url))
        env = gateway_env(emulator, store_dir)
        key = create_demo_key(env)
        gateway = start_gateway(env, host, port)
        try:
            wait_for_health(gateway, base_url)
            start = seeded.first_bar_day.isoformat()
            auth = f"-H 'Authorization: Bearer {key}'"
            order = '{"symbol":"AAPL","qty":1,"side":"buy","type":"market","time_in_force":"day"}'
            print(
                f"\nGateway on {base_url}, in front of the Alpaca emulator at {emulator.base_url}"
                " (provenance.source = emulator).\n"
                f"Demo API key (shown once; scopes data:read, trading:read, trading:write):\n"
                f"  {key}\n\nTry:\n\n"
                f"  curl -s {auth} '{base_url}/v1/stocks/AAPL/quote'\n"
                f"  curl -s {auth} '{base_url}/v1/stocks/quotes?symbols=AAPL,MSFT,SPY'\n"
                f"  curl -s {auth} '{base_url}/v1/stocks/AAPL/bars?timeframe=1Day&start={start}'\n"
                f"  curl -s {auth} -H 'Idempotency-Key: demo-order-1' -H 'Content-Type: "
                f"application/json' -d '{order}' '{base_url}/v1/orders'\n\n"
                f"API docs: {base_url}/docs. Ctrl-C stops the gateway and the emulator.",
                flush=True,
            )
            while gateway.poll() is None:
                time.sleep(0.5)
            print(f"demo: the gateway exited with status {gateway.returncode}", file=sys.stderr)
            return 1
        finally:
            stop_gateway(gateway)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    port = int(os.environ.get("GATEWAY_PORT", "8000"))
    try:
        return run_demo("127.0.0.1", port)
    except KeyboardInterrupt:
        print("\ndemo: stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
