"""`make bench`: the gateway against the bare stack and against nginx, all in one run.

The processes (see ``fleet``) run side by side; one is loaded at a time.

Phase 1, ROUNDS rounds, the order rotating each round: closed-loop throughput (wrk, 64
connections) of the cached quote (in-process and Redis), the bare Starlette app, breaker-open
503s and nginx; then one-connection runs of one quote and of a 100-symbol batch (their latency
is the service time). Phase 2, ROUNDS rounds: fixed-rate runs (``paced``) at half of the
phase-1 median throughput of the cached quote and of breaker-open, each with the bare app at
the same rate (the stack's floor), and a constant nginx answer at the cached quote's rate (the
generator's floor: the load generator, loopback and a busy machine, nothing else). Then one
hot symbol under load with the emulator counting upstream calls, and each worker's RSS. Every
run records the upstream calls it caused and the CPU time of the worker it loaded. Last, the
several-instance rows (``scaleout``) and the stream fan-out rows (``stream_fanout``).

Medians of rounds are printed, ratios are taken per round (a drift of the machine hits both
sides) and their median printed. It measures; it does not tune itself to pass.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.performance.fleet import (
    BATCH,
    BATCH_SYMBOLS,
    COLD,
    QUOTES_PATH,
    REDIS_URL,
    SINGLE,
    Fleet,
    expect_circuit_open,
)
from tests.performance.report import Report, Results, table
from tests.performance.runners import Cores, LoadResult, Tools
from tests.performance.scaleout import fleet_rows
from tests.performance.seed import quote_wire
from tests.performance.stream_fanout import bench_rows as stream_rows

RUN_S = 4  # each closed-loop run
WARMUP_S = 2  # once per target, discarded
CONNECTIONS = 64
LATENCY_RUN_S = 3  # one-connection runs
FIXED_RATE_S = 4
HOT_SYMBOL = "HOT"
HOT_S = 6  # >= 5 s, so the 1 s quote TTL expires about six times
HOT_CONNECTIONS = 16
NGINX_CONSTANT = "/health"  # nginx answers it itself: no cache lookup, no upstream


def say(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


class Served(Protocol):
    def url(self, path: str) -> str: ...
    def worker_cpu_s(self) -> float: ...


@dataclass(frozen=True)
class Run:
    """One load run: the key its results are filed under, and how to make it."""

    key: str
    start: Callable[[], Awaitable[LoadResult]]
    cpu_s: Callable[[], float]  # CPU time so far of the worker under load


class Bench:
    def __init__(self, fleet: Fleet, tools: Tools, rounds: int) -> None:
        self.fleet = fleet
        self.control = fleet.control
        self.tools = tools
        self.results = Results([each.server for each in fleet.stacks], rounds)

    async def run(self) -> None:
        symbols = ["AAPL", HOT_SYMBOL, *BATCH_SYMBOLS]
        await self.control.set_state(
            quotes={s: quote_wire(100.0 + i) for i, s in enumerate(symbols)}
        )
        async with AsyncExitStack() as stack:
            say("starting the gateways, nginx, then the bare apps")
            await self.fleet.start(stack)
            runs = self._throughput_runs(WARMUP_S)
            say(f"warm-up: {len(runs)} targets, {WARMUP_S} s each (discarded)")
            for run in runs:
                await run.start()
            await self._rounds([*self._throughput_runs(RUN_S), *self._latency_runs()], "phase 1")
            await self._rounds(self._fixed_rate_runs(), "phase 2")
            for each in self.fleet.stacks:
                await expect_circuit_open(each.breaker)  # still open, still answering 503
                await self._hot_symbol(
                    each.server, each.cached.url(f"/v1/stocks/{HOT_SYMBOL}/quote")
                )
            for each in self.fleet.stacks:
                for role, app in each.workers():
                    self.results.rss_mib[f"{each.server}/{role}"] = app.worker_rss_mib()

    def _closed(self, key: str, app: Served, path: str, duration_s: float, connections: int) -> Run:
        url = app.url(path)
        return Run(
            key, lambda: self.tools.closed_loop(url, duration_s, connections), app.worker_cpu_s
        )

    def _paced(self, key: str, app: Served, path: str, rate: float) -> Run:
        self.results.rates[key] = rate
        url = app.url(path)
        return Run(
            key, lambda: self.tools.fixed_rate(url, rate, duration_s=FIXED_RATE_S), app.worker_cpu_s
        )

    def _throughput_runs(self, duration_s: float) -> list[Run]:
        runs = []
        for each in self.fleet.stacks:
            assert each.bare is not None
            s = each.server
            runs += [
                self._closed(f"{s}/cached", each.cached, SINGLE, duration_s, CONNECTIONS),
                self._closed(f"{s}/bare", each.bare, SINGLE, duration_s, CONNECTIONS),
                self._closed(f"{s}/redis", each.redis, SINGLE, duration_s, CONNECTIONS),
                self._closed(f"{s}/breaker", each.breaker, COLD, duration_s, CONNECTIONS),
            ]
        runs.append(self._closed("nginx", self.fleet.nginx, SINGLE, duration_s, CONNECTIONS))
        return runs

    def _latency_runs(self) -> list[Run]:
        runs = []
        for each in self.fleet.stacks:
            s = each.server
            runs += [
                self._closed(f"{s}/single_c1", each.cached, SINGLE, LATENCY_RUN_S, 1),
                self._closed(f"{s}/batch_c1", each.cached, BATCH, LATENCY_RUN_S, 1),
            ]
        return runs

    def _fixed_rate_runs(self) -> list[Run]:
        """Half of each row's phase-1 median throughput; the bare app at those same rates."""
        runs = []
        for each in self.fleet.stacks:
            assert each.bare is not None
            s = each.server
            cached_rate = self.results.median(f"{s}/cached").rps / 2
            breaker_rate = self.results.median(f"{s}/breaker").rps / 2
            runs += [
                self._paced(f"{s}/cached@50%", each.cached, SINGLE, cached_rate),
                self._paced(f"{s}/bare@cached", each.bare, SINGLE, cached_rate),
                self._paced(f"{s}/breaker@50%", each.breaker, COLD, breaker_rate),
                self._paced(f"{s}/bare@breaker", each.bare, SINGLE, breaker_rate),
            ]
        first_rate = self.results.rates[f"{self.results.servers[0]}/cached@50%"]
        # nginx's constant answer (no cache, no upstream): what the generator and loopback add.
        runs.append(self._paced("floor@cached", self.fleet.nginx, NGINX_CONSTANT, first_rate))
        return runs

    async def _measure(self, run: Run) -> LoadResult:
        """One run and the upstream calls it caused (only one target is loaded at a time)."""
        await self.control.reset_calls()
        cpu_before_s = run.cpu_s()
        result = await run.start()
        cpu_s = run.cpu_s() - cpu_before_s
        measured = self.results.measured[run.key]
        measured.results.append(result)
        measured.cpu_s.append(cpu_s)
        measured.upstream_calls.append(await self.control.calls_to(QUOTES_PATH))
        return result

    async def _rounds(self, runs: Sequence[Run], label: str) -> None:
        rounds = self.results.rounds
        for round_no in range(rounds):
            started = time.monotonic()
            shift = round_no % len(runs)  # rotate: no target always follows the same one
            done = [(run.key, await self._measure(run)) for run in [*runs[shift:], *runs[:shift]]]
            took = time.monotonic() - started
            summary = ", ".join(f"{key} {result.rps:.0f}" for key, result in sorted(done))
            say(f"{label} round {round_no + 1}/{rounds} ({took:.0f} s, rps): {summary}")

    async def _hot_symbol(self, server: str, url: str) -> None:
        """Closed loop on one symbol for HOT_S seconds; the emulator counts the upstream calls.
        (A fixed rate of 10k requests in 6 s would overload a gateway slower than 1.7k req/s.)"""
        say(f"{server}: {HOT_SYMBOL} for {HOT_S} s, {HOT_CONNECTIONS} connections")
        await self.control.reset_calls()
        result = await self.tools.closed_loop(url, HOT_S, HOT_CONNECTIONS)
        self.results.hot[server] = (result, await self.control.calls_to(QUOTES_PATH))


async def run_bench(
    emulator: EmulatorProcess, cores: Cores, tools: Tools, servers: list[str], rounds: int
) -> str:
    """Run everything; the printed table (with its footer) is returned."""
    say(f"pinning: {cores.describe()}")
    say(f"load: {tools.describe()}")
    if tools.load == "aio":
        say(
            "NOTE: LOAD=aio: the asyncio generator tops out near 2.5k req/s, so closed-loop rows"
            " above that are its ceiling, not the server's (see 'of a core' in the notes)"
        )
    say(f"servers: {', '.join(servers)}; {rounds} rounds; at start: {load_average()}")
    async with EmulatorControl(emulator.base_url) as control:
        bench = Bench(Fleet(emulator, control, cores, servers), tools, rounds)
        await bench.run()
        # Several instances behind nginx, after the single-process rows (nothing else runs).
        several = await fleet_rows(emulator, control, tools, servers[0], rounds)
        # Then the stream fan-out (issue 12), as `make bench-streams` runs it; last, as it
        # resets the emulator.
        streams = await stream_rows(emulator, control, REDIS_URL)
    report = Report(bench.results)
    rows = [*report.rows(), *several, *streams]
    footer = [
        "",
        f"closed loop: {'wrk -t1' if tools.load == 'wrk' else 'aioload'} -c{CONNECTIONS},"
        f" {RUN_S} s per run; medians of {rounds}"
        " rounds; at saturation latency is mostly queueing. 'paced' rows: fixed rate (open loop),"
        f" {FIXED_RATE_S} s per run: they carry the latency targets.",
        f"at the end: {load_average()}",
        *report.summary(),
    ]
    return table(rows, footer)
