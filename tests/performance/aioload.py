"""A bounded asyncio/aiohttp load generator: the fallback when wrk or hey is not installed.

Runs in its own process (so it can be pinned to its own core) and prints one JSON line with the
same keys as the wrk ``done()`` hook in ``pct.lua``:

    python -m tests.performance.aioload --url URL --duration 4 --connections 16      # closed loop
    python -m tests.performance.aioload --url URL --duration 5 --rate 1000           # fixed rate
    python -m tests.performance.aioload --url URL --requests 10000 --rate 1700       # fixed rate

Closed loop: ``connections`` workers send back to back until the deadline. Fixed rate: request
``i`` is due at ``start + i / rate``; its latency counts from that due time, so a slow server is
not hidden by a generator that falls behind (no coordinated omission). Every loop is bounded:
by the deadline, by a per-request timeout and by a hard limit on the whole run. Only loopback
URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

REQUEST_TIMEOUT_S = 5.0
GRACE_S = 10.0  # beyond the planned duration, the whole run is cut off
MAX_IN_FLIGHT = 256  # fixed-rate mode: outstanding requests beyond this wait for a slot


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    socket_errors: int = 0


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(tally: Tally, elapsed_s: float) -> dict[str, Any]:
    lat = sorted(tally.latencies_s)
    done = len(lat)
    status_errors = sum(n for code, n in tally.statuses.items() if not 200 <= code < 400)
    return {
        "requests": done,
        "rps": round(done / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "errors": status_errors + tally.socket_errors,
        "status_errors": status_errors,
        "socket_errors": tally.socket_errors,
        "duration_s": round(elapsed_s, 3),
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "p90_ms": round(percentile(lat, 90) * 1000, 3),
        "p99_ms": round(percentile(lat, 99) * 1000, 3),
        "max_ms": round((lat[-1] if lat else 0.0) * 1000, 3),
        "statuses": {str(code): n for code, n in sorted(tally.statuses.items())},
    }


async def _one(session: aiohttp.ClientSession, url: str, since: float, tally: Tally) -> None:
    try:
        async with session.get(url) as response:
            await response.read()
            tally.statuses[response.status] += 1
    except (aiohttp.ClientError, TimeoutError):
        tally.socket_errors += 1
        return
    tally.latencies_s.append(time.perf_counter() - since)


async def closed_loop(url: str, duration_s: float, connections: int) -> dict[str, Any]:
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await _one(session, url, time.perf_counter(), tally)

        await _bounded(asyncio.gather(*(worker() for _ in range(connections))), duration_s)
        return summary(tally, time.perf_counter() - start)


async def fixed_rate(url: str, rate: float, total: int, connections: int) -> dict[str, Any]:
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    planned_s = total / rate
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()

        async def produce() -> None:
            for i in range(total):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= MAX_IN_FLIGHT:
                    # Far behind: wait for a slot. Latency still counts from the due time.
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(_one(session, url, due, tally))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

        try:
            await _bounded(produce(), planned_s)
        finally:
            for task in tasks:
                task.cancel()
        return summary(tally, time.perf_counter() - start)


async def _bounded(work: Coroutine[Any, Any, Any] | asyncio.Future[Any], planned_s: float) -> None:
    # Cut off at the limit: what finished so far is the result.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(work, timeout=planned_s + GRACE_S)


def _loopback_only(url: str) -> str:
    if urlsplit(url).hostname != "127.0.0.1":
        raise SystemExit(f"refusing {url!r}: benchmarks target 127.0.0.1 only")
    return url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, type=_loopback_only)
    parser.add_argument("--duration", type=float, help="seconds (closed loop or fixed rate)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, help="requests per second: fixed-rate mode")
    parser.add_argument("--requests", type=int, help="fixed-rate mode: total instead of duration")
    args = parser.parse_args(argv)
    if args.rate is None:
        if args.duration is None:
            parser.error("closed loop needs --duration")
        work = closed_loop(args.url, args.duration, args.connections)
    else:
        total = args.requests or math.ceil(args.rate * (args.duration or 0))
        if total <= 0 or args.rate <= 0:
            parser.error("fixed rate needs --rate > 0 and --duration or --requests")
        work = fixed_rate(args.url, args.rate, total, max(args.connections, 64))
    print(json.dumps(_run(work)), flush=True)
    return 0


def _run(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop  # optional: a faster loop for the generator itself
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


if __name__ == "__main__":
    raise SystemExit(main())
