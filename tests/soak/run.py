"""One soak: a gateway with one worker on the embedded store and the in-process cache (what
`make run` starts with no Redis or PostgreSQL), mixed traffic for `duration_s`, breaker trips,
and a sample every `every_s` seconds.

The bounds are settings and the soak states them: small enough that the traffic reaches them
within the warm-up, so what follows shows whether the bounds hold, not whether a run was too
short to find the end of a leak. Per-key quotas and Alpaca's budget are raised (one key carries
every request; the quota would otherwise answer 429 before any cache is touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from tests.chaos.load import Answer, Load
from tests.chaos.rig import create_key
from tests.emulator import demo_market
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.performance.servers import only_child_or_self
from tests.samples import QUOTE
from tests.served import ServedGateway, emulator_env
from tests.soak import sampler
from tests.soak.report import Verdict, judge, overall, table
from tests.soak.traffic import BAR_DAYS, DEMO_SYMBOLS, Mix, symbol_name

MIB = 2**20
SETTINGS = {
    "LOG_JSON": "true",
    "LOG_LEVEL": "WARNING",
    "KEY_QUOTA_PER_MINUTE": "100000000",
    "KEY_QUOTA_BURST": "1000000",
    "ALPACA_DATA_BUDGET_PER_MINUTE": "100000000",
    "ALPACA_DATA_BUDGET_BURST": "1000000",
    "ALPACA_TRADING_BUDGET_PER_MINUTE": "100000000",
    "ALPACA_TRADING_BUDGET_BURST": "1000000",
    "CACHE_MAX_ENTRIES": "20000",
    "CACHE_MAX_BYTES": str(8 * MIB),
    "KEY_CACHE_MAX_ENTRIES": "2000",
    "FLIGHTS_MAX_KEYS": "10000",
    "ERROR_LOG_MAX_ROWS": "20000",
    "BREAKER_OPEN_DURATION_S": "3",
    "MAX_BODY_BYTES": "65536",
}
TRIPPED_PATHS = "/v2/stocks/*"
NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class SoakOptions:
    duration_s: float = 300.0
    warmup_s: float = 60.0
    every_s: float = 5.0
    workers: int = 16
    unknown_symbols: int = 50_000
    known_symbols: int = 300
    trip_every_s: float = 30.0
    trip_for_s: float = 4.0
    max_requests: int = 10_000_000
    settings: dict[str, str] = field(default_factory=lambda: dict(SETTINGS))


@dataclass
class SoakReport:
    options: SoakOptions
    samples: list[sampler.Sample]
    verdicts: list[Verdict]
    told: Counter[str]
    untyped: list[Answer]
    elapsed_s: float
    trips: int

    @property
    def flat(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def verdict(self, name: str) -> Verdict:
        return next(v for v in self.verdicts if v.measure.name == name)

    def lines(self) -> list[str]:
        o = self.options
        sent = sum(self.told.values())
        bounds = " ".join(f"{k}={v}" for k, v in o.settings.items() if k.endswith(_BOUNDS))
        return [
            f"soak: {self.elapsed_s:.0f} s against one gateway worker, {o.workers} clients,"
            f" {sent:,} requests ({sent / max(self.elapsed_s, 1e-9):,.0f}/s),"
            f" {o.unknown_symbols:,} unknown + {o.known_symbols} known symbols,"
            f" {self.trips} breaker trips; sampled every {o.every_s:g} s, warm-up {o.warmup_s:g} s",
            f"bounds: {bounds}",
            *table(self.verdicts),
            f"answers: {_told(self.told)}",
            f"untyped answers: {len(self.untyped)}{_untyped_kinds(self.untyped)}"
            + "".join(f"; {a.told} to {a.request}" for a in self.untyped[:5]),
            overall(self.verdicts),
        ]


_BOUNDS = ("_MAX_ENTRIES", "_MAX_BYTES", "_MAX_KEYS", "_MAX_ROWS")


async def soak(emulator: EmulatorProcess, workdir: Path, options: SoakOptions) -> SoakReport:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    known = tuple(symbol_name("K", n) for n in range(options.known_symbols))
    async with EmulatorControl(emulator.base_url) as control:
        await control.reset()
        try:
            await _seed(emulator, control, known)
            return await _soak(emulator, control, workdir, known, options)
        finally:
            await control.reset()


async def _soak(
    emulator: EmulatorProcess,
    control: EmulatorControl,
    workdir: Path,
    known: tuple[str, ...],
    options: SoakOptions,
) -> SoakReport:
    database = workdir / "gateway.sqlite3"
    env = emulator_env(emulator, EMBEDDED_DB_PATH=str(database), **options.settings)
    for shared in ("REDIS_URL", "DATABASE_URL"):
        env.pop(shared, None)  # the embedded store and the in-process cache, as `make run`
    key = await create_key(env)
    gateway = ServedGateway(env, workdir / "gateway.log")
    await asyncio.to_thread(gateway.__enter__)
    try:
        assert gateway.process is not None
        worker = only_child_or_self(gateway.process.pid)
        told: Counter[str] = Counter()
        untyped: list[Answer] = []

        def tally(answer: Answer) -> None:
            told[answer.told] += 1
            if not answer.typed:
                untyped.append(answer)

        mix = Mix(
            key,
            known=(*known, *DEMO_SYMBOLS),
            unknown_pool=options.unknown_symbols,
            max_body_bytes=int(options.settings["MAX_BODY_BYTES"]),
        )
        load = Load(
            gateway.base_url,
            workers=options.workers,
            duration_s=options.duration_s,
            max_requests=options.max_requests,
            on_answer=tally,
        )
        samples: list[sampler.Sample] = []
        async with httpx.AsyncClient(timeout=10) as client:

            async def sample() -> None:
                sent = sum(told.values())
                samples.append(
                    await sampler.take(
                        client, gateway.base_url, worker, database, load.now(), sent, mix.invented
                    )
                )

            await sample()  # before any traffic
            sending = asyncio.create_task(load.run(mix.next))
            tripping = asyncio.create_task(_trips(control, options))
            while not sending.done():
                await asyncio.wait({sending}, timeout=options.every_s)
                await sample()
            tripping.cancel()
            trips = await asyncio.gather(tripping, return_exceptions=True)
            sending.result()
    finally:
        await asyncio.to_thread(gateway.stop)
    return SoakReport(
        options,
        samples,
        judge(samples, options.warmup_s, options.settings),
        told,
        untyped,
        samples[-1].at_s,
        trips[0] if isinstance(trips[0], int) else 0,
    )


async def _trips(control: EmulatorControl, options: SoakOptions) -> int:
    """Every trip_every_s, Alpaca's market data fails (500) for trip_for_s: the data breaker
    opens, answers CIRCUIT_OPEN, and closes again once the fault is gone. Returns the count
    when cancelled (as the task's result)."""
    trips = 0
    try:
        while True:
            await asyncio.sleep(options.trip_every_s)
            fault = await control.add_fault(TRIPPED_PATHS, "status_500")
            trips += 1
            try:
                await asyncio.sleep(options.trip_for_s)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(control.remove_fault(fault))
    except asyncio.CancelledError:
        return trips


async def _seed(
    emulator: EmulatorProcess, control: EmulatorControl, known: tuple[str, ...]
) -> None:
    """The demo market (AAPL, MSFT, SPY: bars, snapshots, options, a position), BAR_DAYS daily
    bars for each of them, and `known` symbols with live quotes; Alpaca's budget out of the way."""
    await demo_market.seed(emulator.base_url)
    today = datetime.now(UTC).astimezone(NEW_YORK).date()
    days = demo_market.trading_days(today, BAR_DAYS)
    for listing in demo_market.LISTINGS:
        await control.set_bars(listing.symbol, _daily_bars(listing, days), timeframe="1Day")
    await control.set_state(quotes=dict.fromkeys(known, QUOTE), assets=list(known))
    await control.set_random_walk(5, step_ms=500)
    await control.configure(rate_limit_per_minute=100_000_000)


def _daily_bars(listing: demo_market.Listing, days: list[date]) -> list[dict[str, Any]]:
    """A seeded walk of daily bars, on the cent, volumes positive (the demo's own few days
    would run negative this far back)."""
    rng = random.Random(listing.symbol)
    close = listing.close
    bars = []
    for day in days:
        open_ = close
        close = round(max(1.0, open_ * (1 + rng.uniform(-0.02, 0.02))), 2)
        volume = rng.randint(20_000_000, 60_000_000)
        t = demo_market.daily_bar_time(day)
        bars.append(demo_market.bar(t, open_, close, volume, volume // 90, wick=0.004))
    return bars


def _untyped_kinds(untyped: list[Answer]) -> str:
    """` (POST /v1/orders 50, ...)`: what was asked, without keys and error names."""
    kinds = Counter(" ".join(a.request.split()[:2]) for a in untyped)
    listed = ", ".join(f"{kind} {n:,}" for kind, n in kinds.most_common(4))
    return f" ({listed})" if listed else ""


def _told(told: Counter[str]) -> str:
    return ", ".join(f"{what} {n:,}" for what, n in told.most_common(12))
