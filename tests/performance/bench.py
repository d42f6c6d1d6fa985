"""`make bench`: throughput, latency and upstream-call scenarios of the gateway, one run.

Scenarios (one uvicorn worker pinned to one core, the load generator on the other):

(a) GET /v1/stocks/AAPL/quote from the in-process cache (and, as an extra row, from Redis)
(b) GET /health on the same process: constant JSON through the same middleware (the ceiling);
    (a) and (b) alternate for ROUNDS rounds and the median per-round ratio (a)/(b) is reported
    (a) p99 at a fixed rate of 50% of (a)'s max throughput
(c) GET /v1/stocks/quotes with 100 cached symbols
(d) a cold symbol while the data breaker is open: 503 CIRCUIT_OPEN
(e) upstream calls for 10,000 requests of one hot symbol, spread over >= 5 s (1 s quote TTL)

Ratios and upstream-call counts are what to compare across runs; absolute numbers depend on
the machine. Every load is bounded in time and aimed at 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.performance.gateway import GatewayProcess
from tests.performance.runners import Cores, LoadResult, Tools

ROUNDS = 3
RUN_S = 4  # each measured closed-loop run
WARMUP_S = 2
CONNECTIONS = 16
FIXED_RATE_S = 5
FIXED_RATE_WORKERS = 4
HOT_REQUESTS = 10_000
HOT_WORKERS = 8
HOT_SPREAD_S = 6.0  # >= 5 s, so the 1 s TTL expires about six times
QUOTE_TTL_S = 1.0  # the gateway's default CACHE_QUOTE_TTL_S, left unset on purpose
BREAKER_DRIVE_MAX = 40  # distinct failing symbols tried before giving up on opening the breaker

QUOTES_PATH = "/v2/stocks/quotes/latest"
SINGLE = "/v1/stocks/AAPL/quote"
CEILING = "/health"
BATCH_SYMBOLS = [f"B{i:03d}" for i in range(100)]
BATCH = "/v1/stocks/quotes?symbols=" + ",".join(BATCH_SYMBOLS)
HOT_SYMBOL = "HOT"
COLD = "/v1/stocks/COLD/quote"

TARGET_RATIO = 0.8
TARGET_P99_HALF_LOAD_MS = 5.0
TARGET_P99_BREAKER_MS = 2.0


@dataclass(frozen=True)
class Row:
    scenario: str
    rps: str
    p50: str
    p99: str
    notes: str


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _row(scenario: str, result: LoadResult, notes: str = "") -> Row:
    return Row(scenario, f"{result.rps:.0f}", _ms(result.p50_ms), _ms(result.p99_ms), notes)


def _errors(result: LoadResult) -> str:
    if result.errors == 0:
        return "0 errors"
    return f"{result.status_errors} non-2xx, {result.socket_errors} socket errors"


def _statuses(result: LoadResult) -> str:
    if not result.statuses:
        return f"{result.status_errors}/{result.requests} non-2xx"
    return ", ".join(f"{code}: {n}" for code, n in result.statuses.items())


def rfc3339_now() -> str:
    now_ns = time.time_ns()
    seconds, fraction = divmod(now_ns, 1_000_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def quote_wire(price: float) -> dict[str, Any]:
    return {
        "t": rfc3339_now(),
        "bx": "V",
        "bp": round(price - 0.02, 2),
        "bs": 2,
        "ax": "V",
        "ap": round(price + 0.03, 2),
        "as": 1,
        "c": ["R"],
        "z": "C",
    }


def say(message: str) -> None:
    print(message, flush=True)


class Bench:
    def __init__(self, emulator: EmulatorProcess, control: EmulatorControl, cores: Cores) -> None:
        self.emulator = emulator
        self.control = control
        self.cores = cores
        self.tools = Tools(self.cores)
        self.rows: list[Row] = []
        self.footer: list[str] = []
        self.verdicts: list[str] = []

    async def seed(self) -> None:
        symbols = ["AAPL", HOT_SYMBOL, *BATCH_SYMBOLS]
        await self.control.set_state(
            quotes={s: quote_wire(100.0 + i) for i, s in enumerate(symbols)}
        )

    async def run(self) -> None:
        say(f"pinning: {self.cores.describe()}")
        say(f"load generators: {self.tools.describe()}")
        notice = self.tools.missing_notice()
        if notice is not None:
            say(f"NOTE: {notice}")
        await self.seed()
        async with GatewayProcess(self.emulator, self.cores) as gateway:
            await self._expect_backend(gateway, "memory")
            await self.memory_cache_scenarios(gateway)
        await self.redis_scenario()
        async with GatewayProcess(
            self.emulator, self.cores, {"BREAKER_OPEN_DURATION_S": "600"}
        ) as gateway:
            await self.breaker_open_scenario(gateway)

    async def _expect_backend(self, gateway: GatewayProcess, backend: str) -> str:
        status, ready = await gateway.get_json("/ready")
        cache = ready["dependencies"]["cache"]
        if cache["backend"] != backend:
            raise RuntimeError(f"expected the {backend} cache, /ready says {ready}")
        for path in (SINGLE, BATCH):
            status, _ = await gateway.get_json(path)
            if status != 200:
                raise RuntimeError(f"GET {path} answered {status} before the benchmark")
        state: str = cache["state"]
        return state

    # --- (a), (b), (a) at 50%, (c), (e) on the in-process cache --------------------------------

    async def memory_cache_scenarios(self, gateway: GatewayProcess) -> None:
        tools = self.tools
        say(f"warm-up ({WARMUP_S} s each, discarded): (a), (b), (c)")
        for path in (SINGLE, CEILING, BATCH):
            await tools.closed_loop(gateway.url(path), WARMUP_S, CONNECTIONS)

        cached: list[LoadResult] = []
        ceiling: list[LoadResult] = []
        for round_no in range(1, ROUNDS + 1):
            # Alternate the order too, so a drift in machine speed does not favour one side.
            order = (SINGLE, CEILING) if round_no % 2 else (CEILING, SINGLE)
            for path in order:
                result = await tools.closed_loop(gateway.url(path), RUN_S, CONNECTIONS)
                (cached if path == SINGLE else ceiling).append(result)
            ratio = cached[-1].rps / ceiling[-1].rps
            say(
                f"round {round_no}: (a) {cached[-1].rps:.0f} rps, (b) {ceiling[-1].rps:.0f} rps,"
                f" ratio {ratio:.3f}"
            )
        ratios = [a.rps / b.rps for a, b in zip(cached, ceiling, strict=True)]
        median_ratio = statistics.median(ratios)
        a_mid, b_mid = _median_result(cached), _median_result(ceiling)
        per_round = "/".join(f"{r.rps:.0f}" for r in cached)
        self.rows.append(
            _row("(a) cached quote", a_mid, f"median of {ROUNDS}: {per_round}; {_errors(a_mid)}")
        )
        per_round = "/".join(f"{r.rps:.0f}" for r in ceiling)
        self.rows.append(
            _row(
                "(b) constant JSON (ceiling)",
                b_mid,
                f"GET /health; median of {ROUNDS}: {per_round}; {_errors(b_mid)}",
            )
        )
        ok = median_ratio >= TARGET_RATIO
        self.rows.append(
            Row(
                f"(a)/(b) ratio (median of {ROUNDS})",
                f"{median_ratio:.3f}",
                "",
                "",
                f"target >= {TARGET_RATIO} {'MET' if ok else 'MISSED'};"
                f" rounds {', '.join(f'{r:.3f}' for r in ratios)}",
            )
        )
        self.verdicts.append(f"(a)/(b) >= {TARGET_RATIO}: {'met' if ok else 'MISSED'}")

        max_rps = a_mid.rps
        rate = max_rps / 2
        say(f"(a) at a fixed {rate:.0f} rps (50% of {max_rps:.0f}) for {FIXED_RATE_S} s")
        half = await tools.fixed_rate(
            gateway.url(SINGLE), rate, duration_s=FIXED_RATE_S, workers=FIXED_RATE_WORKERS
        )
        ok = half.p99_ms < TARGET_P99_HALF_LOAD_MS and half.errors == 0
        self.rows.append(
            _row(
                "(a) p99 at 50% of max rps",
                half,
                f"target p99 < {TARGET_P99_HALF_LOAD_MS:g} ms {'MET' if ok else 'MISSED'};"
                f" {half.tool} at {rate:.0f} rps; {_errors(half)}",
            )
        )
        self.verdicts.append(
            f"(a) p99 < {TARGET_P99_HALF_LOAD_MS:g} ms at 50% load: {'met' if ok else 'MISSED'}"
        )

        say(f"(c) 100-symbol batch for {RUN_S} s")
        batch = await tools.closed_loop(gateway.url(BATCH), RUN_S, CONNECTIONS)
        self.rows.append(
            _row(
                "(c) 100-symbol batch",
                batch,
                f"{batch.rps * 100:.0f} symbol-quotes/s; {_errors(batch)}",
            )
        )

        await self.hot_symbol_scenario(gateway)

    async def hot_symbol_scenario(self, gateway: GatewayProcess) -> None:
        rate = HOT_REQUESTS / HOT_SPREAD_S
        say(f"(e) {HOT_REQUESTS} requests for {HOT_SYMBOL} at {rate:.0f} rps (~{HOT_SPREAD_S:g} s)")
        await self.control.reset_calls()
        result = await self.tools.fixed_rate(
            gateway.url(f"/v1/stocks/{HOT_SYMBOL}/quote"),
            rate,
            requests=HOT_REQUESTS,
            workers=HOT_WORKERS,
        )
        calls = await self.control.calls_to(QUOTES_PATH)
        answered = max(result.requests, 1)
        per_10k = calls * 10_000 / answered
        windows = max(result.duration_s / QUOTE_TTL_S, 1e-9)
        self.rows.append(
            _row(
                "(e) hot symbol load",
                result,
                f"{result.requests} requests in {result.duration_s:.2f} s; {_errors(result)}",
            )
        )
        self.footer.append(
            f"(e) upstream calls / 10k req for one hot symbol: {per_10k:.0f}"
            f" (≈ {calls / windows:.2f} per {QUOTE_TTL_S:g} s TTL)"
        )
        self.footer.append(
            f"    calls per 10k requests: {per_10k:.1f};"
            f" calls per TTL window: {calls / windows:.2f}"
            f" ({calls} calls to {QUOTES_PATH} for {result.requests} requests over"
            f" {result.duration_s:.2f} s; one per TTL would be ≈ {windows:.1f})"
        )

    # --- (a) with Redis -------------------------------------------------------------------------

    async def redis_scenario(self) -> None:
        extra = {
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CACHE_NAMESPACE": f"bench-{os.getpid()}",
        }
        async with GatewayProcess(self.emulator, self.cores, extra) as gateway:
            state = await self._expect_backend(gateway, "redis")
            if state != "up":
                self.rows.append(Row("(a) cached quote, Redis", "-", "-", "-", f"Redis {state}"))
                return
            say(f"(a) with the Redis cache: warm-up {WARMUP_S} s, then {RUN_S} s")
            await self.tools.closed_loop(gateway.url(SINGLE), WARMUP_S, CONNECTIONS)
            result = await self.tools.closed_loop(gateway.url(SINGLE), RUN_S, CONNECTIONS)
        self.rows.append(
            _row(
                "(a) cached quote, Redis cache",
                result,
                f"REDIS_URL=127.0.0.1:6379, one run; {_errors(result)}",
            )
        )

    # --- (d) breaker open -----------------------------------------------------------------------

    async def breaker_open_scenario(self, gateway: GatewayProcess) -> None:
        await self.control.add_fault(QUOTES_PATH, "status_500")
        try:
            tried = await self._open_data_breaker(gateway)
            status, body = await gateway.get_json(COLD)
            code = body.get("code") if isinstance(body, dict) else None
            if status != 503 or "CIRCUIT_OPEN" not in str(body):
                raise RuntimeError(f"GET {COLD} answered {status} {body}, not 503 CIRCUIT_OPEN")
            say(f"(d) breaker open after {tried} failing symbols; {COLD} -> {status} {code}")
            await self.tools.closed_loop(gateway.url(COLD), WARMUP_S, CONNECTIONS)
            before = await self.control.calls_to(QUOTES_PATH)
            result = await self.tools.closed_loop(gateway.url(COLD), RUN_S, CONNECTIONS)
            rate = result.rps / 2
            say(f"(d) at a fixed {rate:.0f} rps (50% of {result.rps:.0f}) for {FIXED_RATE_S} s")
            half = await self.tools.fixed_rate(
                gateway.url(COLD),
                rate,
                duration_s=FIXED_RATE_S,
                workers=FIXED_RATE_WORKERS,
            )
            upstream = await self.control.calls_to(QUOTES_PATH) - before
            # The stack's own floor at that rate: a constant-JSON endpoint, same server, same
            # load generator. A p99 target below it cannot be met by the route's code.
            floor = await self.tools.fixed_rate(
                gateway.url(CEILING),
                rate,
                duration_s=FIXED_RATE_S,
                workers=FIXED_RATE_WORKERS,
            )
        finally:
            await self.control.clear_faults()
        all_503 = result.status_errors == result.requests and result.socket_errors == 0
        self.rows.append(
            _row(
                "(d) breaker open (503)",
                result,
                f"{result.status_errors}/{result.requests} non-2xx"
                f" ({'all' if all_503 else 'NOT all'}; spot check: 503 {code});"
                f" {upstream} upstream calls",
            )
        )
        ok = half.p99_ms < TARGET_P99_BREAKER_MS and half.status_errors == half.requests
        self.rows.append(
            _row(
                "(d) p99 at 50% of max rps",
                half,
                f"target p99 < {TARGET_P99_BREAKER_MS:g} ms {'MET' if ok else 'MISSED'};"
                f" {half.tool} at {result.rps / 2:.0f} rps;"
                f" statuses {_statuses(half)}",
            )
        )
        self.rows.append(
            _row(
                "(b) p99 at that same rate (floor)",
                floor,
                f"constant JSON; {floor.tool} at {rate:.0f} rps; {_errors(floor)}",
            )
        )
        self.verdicts.append(
            f"(d) p99 < {TARGET_P99_BREAKER_MS:g} ms at 50% load, breaker open:"
            f" {'met' if ok else 'MISSED'}"
        )

    async def _open_data_breaker(self, gateway: GatewayProcess) -> int:
        """Distinct failing symbols (no negative-cache hits) until /ready says data is open."""
        for i in range(1, BREAKER_DRIVE_MAX + 1):
            await gateway.get_json(f"/v1/stocks/F{i:03d}/quote")
            _, ready = await gateway.get_json("/ready")
            if ready["breakers"]["data"]["state"] == "open":
                return i
        raise RuntimeError(f"the data breaker did not open after {BREAKER_DRIVE_MAX} failures")

    # --- output ---------------------------------------------------------------------------------

    def table(self) -> str:
        header = Row("scenario", "rps", "p50 ms", "p99 ms", "notes")
        widths = (32, 9, 9, 9)
        lines = []
        for row in (header, *self.rows):
            cells = (row.scenario, row.rps, row.p50, row.p99)
            lines.append(
                "".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w) + " "
                    for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
                )
                + "  "
                + row.notes
            )
        legend = (
            f"rows (a)-(d): closed loop, {CONNECTIONS} connections, {RUN_S} s per run (latency at"
            " saturation is queueing); '50% of max rps' rows: fixed rate, the latency targets"
        )
        return "\n".join([*lines, *self.footer, legend])


def _median_result(results: Sequence[LoadResult]) -> LoadResult:
    """The per-field median of several runs (rps, p50 and p99 each their own median)."""
    first = results[0]
    return LoadResult(
        tool=first.tool,
        requests=int(statistics.median(r.requests for r in results)),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        duration_s=sum(r.duration_s for r in results),
        status_errors=sum(r.status_errors for r in results),
        socket_errors=sum(r.socket_errors for r in results),
    )


async def _run(emulator: EmulatorProcess, cores: Cores) -> Bench:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM stops the run like Ctrl-C: children are stopped on the way out
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with EmulatorControl(emulator.base_url) as control:
        bench = Bench(emulator, control, cores)
        await bench.run()
        return bench


def main() -> int:
    started = time.monotonic()
    cores = Cores.detect()
    if cores.load is not None and hasattr(os, "sched_setaffinity"):
        # This process and the emulator it starts stay off the gateway's core.
        os.sched_setaffinity(0, {cores.load})
    try:
        with EmulatorProcess() as emulator:
            bench = asyncio.run(_run(emulator, cores))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: child processes stopped", file=sys.stderr)
        return 130
    say("")
    say(bench.table())
    say("")
    for verdict in bench.verdicts:
        say(verdict)
    say(f"bench took {time.monotonic() - started:.0f} s")
    return 0
