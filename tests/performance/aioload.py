"""A bounded asyncio/aiohttp closed-loop generator: `make bench LOAD=aio`, never a fallback.

It tops out near 2.5k req/s on one core, below the servers it measures, so every closed-loop
row it produces is the generator's ceiling as much as the server's; it exists for a machine
where wrk cannot be installed, and the bench says so when it is used. Runs in its own process
(pinned to the load core) and prints one JSON line with the keys of the wrk ``done()`` hook:

    python -m tests.performance.aioload --url URL --duration 4 --connections 64

``connections`` workers send back to back until the deadline. Every loop is bounded: by the
deadline, by a per-request timeout and by a hard limit on the whole run. Only loopback URLs
are accepted.
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
    parser.add_argument("--duration", required=True, type=float, help="seconds")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    print(json.dumps(_run(closed_loop(args.url, args.duration, args.connections))), flush=True)
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
