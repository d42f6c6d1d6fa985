"""A fixed-rate (open-loop) load generator: latency below saturation, without coordinated omission.

    python -m tests.performance.paced --url URL --rate 2000 --duration 5
    python -m tests.performance.paced --url URL --rate 1667 --requests 10000

Request ``i`` is due at ``start + i / rate`` whatever happened to the ones before (wrk2's
open-loop model; wrk2 itself is not packaged by Debian). A due request goes out at once on a
free keep-alive connection and its latency counts from that send; when the server holds every
connection, it waits and its latency counts from its due time, so a server that stalls is
charged for every request it held up (no coordinated omission). How late the generator itself
sent (its own scheduling, not the server's) is reported apart as ``send_lag_p99_ms``.

Why not Debian's ``hey -q``: each worker waits for its answer before taking the next tick, so
a stall hides the requests it delays, and all workers tick in phase, sending bursts of ``-c``
requests at once. Why not wrk with a pacing Lua script: wrk's ``delay()`` is per connection
and after the answer, the same omission.

Plain HTTP/1.1 over asyncio protocols (no client library on the hot path, uvloop when
installed). It sleeps between due times rather than spinning: on a machine where anything else
runs, a spinning process is the one the kernel preempts for a whole time slice (measured here:
a send lag p99 of 12-17 ms while spinning), whereas a sleeping one is woken promptly. The
price: timers are millisecond-coarse, so at 2,000 req/s requests leave in pairs each tick.

Prints one JSON line with the keys of the wrk ``done()`` hook (``pct.lua``) plus ``statuses``
and ``send_lag_p99_ms``. Every run is bounded; only 127.0.0.1 is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

CONNECTIONS = 32
GRACE_S = 5.0  # answers still missing this long after the last due time count as timeouts
START_DELAY_S = 0.05  # the schedule starts after the pool is open
TICK_S = 0.001  # the shortest sleep: the event loop's timer resolution


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Tally:
    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.send_lags_s: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.socket_errors = 0


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._buffer = bytearray()
        self._transport: asyncio.WriteTransport | None = None
        self.since: float | None = None  # the in-flight request's latency counts from here

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's is no subclass

    def send(self, since: float) -> None:
        assert self._transport is not None
        self.since = since
        self._transport.write(self._pool.request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        header_end = self._buffer.find(b"\r\n\r\n")
        if header_end < 0 or self.since is None:
            return
        length = _CONTENT_LENGTH.search(self._buffer, 0, header_end + 2)
        if length is None:  # chunked answers are not expected from the servers measured here
            raise RuntimeError(f"an answer without Content-Length: {bytes(self._buffer[:40])!r}")
        total = header_end + 4 + int(length.group(1))
        if len(self._buffer) < total:
            return
        status = int(self._buffer[9:12])  # "HTTP/1.1 200 ..."
        del self._buffer[:total]
        since, self.since = self.since, None
        self._pool.answered(self, since, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool.lost(self)


class Pool:
    """Keep-alive connections; a due request takes a free one or queues for the next."""

    def __init__(self, host: str, port: int, path_query: str, tally: Tally) -> None:
        self.host, self.port = host, port
        self.request = (
            f"GET {path_query} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench-paced\r\n\r\n"
        ).encode("ascii")
        self.tally = tally
        self.idle: deque[Connection] = deque()
        self.waiting: deque[float] = deque()  # due times of requests that found no free connection
        self.in_flight = 0

    async def open(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, protocol = await loop.create_connection(
                lambda: Connection(self), self.host, self.port
            )
            self.idle.append(protocol)

    def submit(self, due: float) -> None:
        """Send now on a free connection (latency from the send: how late the generator itself
        was is reported apart, as send lag), or queue: then latency counts from the due time,
        because the server holding every connection is what delayed it."""
        self.in_flight += 1
        if self.idle:
            now = time.perf_counter()
            self.tally.send_lags_s.append(now - due)
            self.idle.popleft().send(now)
        else:
            self.waiting.append(due)

    def answered(self, connection: Connection, since: float, status: int) -> None:
        self.tally.latencies_s.append(time.perf_counter() - since)
        self.tally.statuses[status] += 1
        self.in_flight -= 1
        if self.waiting:
            connection.send(self.waiting.popleft())
        else:
            self.idle.append(connection)

    def lost(self, connection: Connection) -> None:
        if connection.since is not None:  # closed with a request in flight
            self.tally.socket_errors += 1
            self.in_flight -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if self.waiting or self.in_flight:
            asyncio.get_running_loop().create_task(self.open(1))


async def paced(url: str, rate: float, total: int, connections: int) -> dict[str, Any]:
    parts = urlsplit(url)
    path_query = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    tally = Tally()
    pool = Pool(parts.hostname or "127.0.0.1", parts.port or 80, path_query, tally)
    await pool.open(connections)
    start = time.perf_counter() + START_DELAY_S
    last_due = start + (total - 1) / rate
    cutoff = last_due + GRACE_S
    sent = 0
    while True:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            pool.submit(start + sent / rate)
            sent += 1
        if sent == total and pool.in_flight == 0:
            break
        if now > cutoff:
            tally.socket_errors += pool.in_flight  # never answered: timeouts
            break
        # Sleep until the next due time (answers wake the loop at once). The loop's timers are
        # millisecond-coarse, so requests closer together than that go out in small batches.
        ahead_s = start + sent / rate - now if sent < total else TICK_S
        await asyncio.sleep(max(ahead_s, TICK_S))
    elapsed = time.perf_counter() - start
    return summary(tally, elapsed)


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
        "send_lag_p99_ms": round(percentile(sorted(tally.send_lags_s), 99) * 1000, 3),
    }


def _loopback_only(url: str) -> str:
    if urlsplit(url).hostname != "127.0.0.1":
        raise SystemExit(f"refusing {url!r}: benchmarks target 127.0.0.1 only")
    return url


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, type=_loopback_only)
    parser.add_argument("--rate", required=True, type=float, help="requests per second")
    parser.add_argument("--duration", type=float, help="seconds of schedule")
    parser.add_argument("--requests", type=int, help="total requests instead of --duration")
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    args = parser.parse_args(argv)
    total = args.requests or math.ceil(args.rate * (args.duration or 0))
    if total <= 0 or args.rate <= 0:
        parser.error("needs --rate > 0 and --duration or --requests")
    print(json.dumps(_run(paced(args.url, args.rate, total, args.connections))), flush=True)
    return 0


def _run(work: Any) -> dict[str, Any]:
    try:
        import uvloop  # a faster loop: less of the generator's own time in every latency
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


if __name__ == "__main__":
    raise SystemExit(main())
