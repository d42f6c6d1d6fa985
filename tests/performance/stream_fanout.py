"""Stream fan-out figures (`make bench-streams`): `python -m tests.performance.stream_fanout
[CLIENTS] [SYMBOLS] [TICKS] [INSTANCES]`; `make bench` adds 1,000 x 10 x 10 on one instance and
on two (`bench_rows`) after its other rows.

The served gateway (granian, one worker, Redis if REDIS_URL is set; INSTANCES of them sharing
it, the clients spread over them) in front of the emulator;
CLIENTS MessagePack clients on `/alpaca/v2/iex`, each subscribed to SYMBOLS quotes; the emulator
pushes TICKS quotes per symbol (`t` stamped by the emulator as it sends). Prints the upstream
connections the emulator saw, messages delivered per second, and the delivery latency (emulator
send -> client receive) p50/p99, and the gateway's own delivery lag (frame in -> write to a
client, gateway_stream_delivery_lag_seconds) as the histogram bucket holding its p50/p99 and
its mean. Figures only: nothing here passes or fails.
"""

from __future__ import annotations

import asyncio
import collections
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgpack
import redis
from redis.exceptions import RedisError
from websockets.asyncio.client import connect

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.performance.report import Row
from tests.support.streams import MSGPACK, QUOTE, StreamGateway, stream_gateway

CLIENTS, SYMBOLS, TICKS = 1000, 10, 10  # make bench's rows (the figures)
DELIVERY_TIMEOUT_S = 120


async def client(
    gateway: StreamGateway, symbols: list[str], expected: int, latencies: list[float]
) -> None:
    async with connect(
        gateway.ws_url("/v2/iex"), additional_headers=MSGPACK, proxy=None, max_queue=None,
        open_timeout=60, ping_interval=None,
    ) as ws:  # fmt: skip
        await ws.recv()
        auth = msgpack.packb({"action": "auth", "key": gateway.key_id, "secret": gateway.secret})
        for _ in range(5):
            # A thousand first auths at once may outwait the key store's timeout (500: retry).
            await ws.send(auth)
            authed = msgpack.unpackb(await ws.recv())
            if authed == [{"T": "success", "msg": "authenticated"}]:
                break
        else:
            raise RuntimeError(f"auth answered {authed}")
        await ws.send(msgpack.packb({"action": "subscribe", "quotes": symbols}))
        await ws.recv()
        seen = 0
        while seen < expected:
            frame = await ws.recv()
            now_ns = time.time_ns()
            for message in msgpack.unpackb(frame, timestamp=0):
                if message.get("T") == "q":
                    seen += 1
                    latencies.append((now_ns - message["t"].to_unix_nano()) / 1e6)


@dataclass(frozen=True)
class Figures:
    clients: int
    symbols: int
    ticks: int
    instances: int
    connections: int  # open upstream connections on the feed at the end
    attempts: int  # upstream connection attempts on the feed, refused ones too
    delivered: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    lag: str  # the gateways' own delivery lag, per instance

    @property
    def shape(self) -> str:
        on = "1 instance" if self.instances == 1 else f"{self.instances} instances"
        return f"{self.clients:,} clients x {self.symbols} symbols x {self.ticks} ticks, {on}"

    def lines(self) -> list[str]:
        return [
            f"{self.shape}: upstream connections {self.connections} ({self.attempts} attempts),"
            f" {self.delivered} messages delivered in {self.elapsed_s:.1f} s"
            f" ({self.delivered / self.elapsed_s:,.0f}/s), latency p50 {self.p50_ms:.1f} ms,"
            f" p99 {self.p99_ms:.1f} ms",
            f"gateway delivery lag (iex): {self.lag}",
        ]

    def row(self) -> Row:
        """A `make bench` row: messages per second, the latencies, the one-connection goal."""
        met = "MET" if self.connections == self.attempts == 1 else "MISSED"
        return Row(
            f"stream fan-out, {self.shape}",
            f"{self.delivered / self.elapsed_s:.0f}",
            f"{self.p50_ms:.2f}",
            f"{self.p99_ms:.2f}",
            f"{self.connections} upstream connections ({self.attempts} attempts) vs 1: {met}",
            f"msg/s; {self.delivered:,} messages in {self.elapsed_s:.1f} s; gateway lag {self.lag}",
        )


async def run(gateways: list[StreamGateway], emulator: EmulatorControl, clients: int,
              symbols: int, ticks: int,
              relays_ready: Callable[[], Awaitable[None]]) -> Figures:  # fmt: skip
    """CLIENTS clients spread over `gateways` (round robin), TICKS pushes of one quote per
    symbol, every client receiving every quote."""
    names = [f"SYM{chr(65 + n // 26)}{chr(65 + n % 26)}" for n in range(symbols)]
    latencies: list[float] = []
    tasks = [
        asyncio.create_task(client(gateways[n % len(gateways)], names, symbols * ticks, latencies))
        for n in range(clients)
    ]
    for name in names:
        await emulator.streams.wait_for_subscriber("iex", "quotes", name, timeout_s=120)
    await asyncio.sleep(1)  # every client's subscription answered
    await relays_ready()
    started = time.monotonic()
    for tick in range(ticks):
        await emulator.streams.push(
            "iex", [{**QUOTE, "S": name, "bs": tick + 1, "t": "now"} for name in names]
        )
    done, pending = await asyncio.wait(tasks, timeout=DELIVERY_TIMEOUT_S)
    if pending:
        for task in pending:
            task.cancel()
        late = [n % len(gateways) + 1 for n, task in enumerate(tasks) if task in pending]
        raise RuntimeError(
            f"{len(pending)} clients still waiting after {DELIVERY_TIMEOUT_S} s, by instance:"
            f" {dict(collections.Counter(late))}"
        )
    for task in done:
        task.result()  # a client's failure, raised
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100)
    lags = []
    async with httpx.AsyncClient(timeout=10) as http:
        for gateway in gateways:
            exposition = (await http.get(gateway.served.base_url + "/metrics")).text
            lags.append(lag_summary(exposition, "iex"))
    return Figures(
        clients, symbols, ticks, len(gateways), len(await emulator.streams.connections("iex")),
        await emulator.streams.attempts("iex"), len(latencies), elapsed, cuts[49], cuts[98],
        "; ".join(lags),
    )  # fmt: skip


@contextmanager
def gateways(
    emulator: EmulatorProcess, redis_url: str, clients: int, instances: int
) -> Iterator[tuple[str, list[StreamGateway]]]:
    """`instances` served gateways sharing one Redis namespace (deleted afterwards), and the
    namespace."""
    if instances > 1 and not redis_url:
        raise SystemExit("several instances share a feed through Redis: set REDIS_URL")
    tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    namespace = f"bench-streams-{uuid.uuid4().hex[:12]}"
    # Every client uses the one bench key: it may hold them all (100 by default).
    settings = {"LOG_LEVEL": "WARNING", "GATEWAY_MAX_CONNECTIONS": str(clients + 100),
                "STREAM_MAX_CLIENTS_PER_KEY": str(clients),
                "CACHE_NAMESPACE": namespace}  # fmt: skip
    try:
        with ExitStack() as stack:
            yield namespace, [
                stack.enter_context(stream_gateway(emulator, redis_url, tmp / f"gw{n}",
                                                   GATEWAY_INSTANCE=f"gw{n}", **settings))
                for n in range(1, instances + 1)
            ]  # fmt: skip
    finally:
        if redis_url:
            drop_namespace(redis_url, namespace)


def drop_namespace(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        keys = [
            *client.scan_iter(match=f"{namespace}*"),
            *client.scan_iter(match=f"{{{namespace}*"),
        ]
        if keys:
            client.delete(*keys)
    except (RedisError, OSError) as exc:
        print(f"note: the Redis keys {namespace}* were not deleted: {exc}", flush=True)
    finally:
        client.close()


async def measure(emulator: EmulatorProcess, control: EmulatorControl, redis_url: str, *,
                  clients: int, symbols: int, ticks: int, instances: int) -> Figures:  # fmt: skip
    await control.reset()  # the attempts counted are this run's
    with gateways(emulator, redis_url, clients, instances) as (namespace, served):

        async def relays_ready() -> None:
            """Every follower listens to the leader's relay (a thousand connections arriving
            at once can delay a follower's subscription by a lease; frames published before
            it would never reach its clients)."""
            if instances > 1:
                await asyncio.to_thread(wait_for_relay, redis_url, namespace, instances)

        return await run(served, control, clients, symbols, ticks, relays_ready)


def wait_for_relay(redis_url: str, namespace: str, instances: int) -> None:
    channel = f"{namespace}:stream:iex:relay"  # app/streams/leader.py's channel
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        deadline = time.monotonic() + 60
        while dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) < instances:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every instance listens to {channel}")
            time.sleep(0.05)
    finally:
        client.close()


async def bench_rows(
    emulator: EmulatorProcess, control: EmulatorControl, redis_url: str
) -> list[Row]:
    """`make bench`'s fan-out rows: CLIENTS x SYMBOLS x TICKS on one instance, then on two
    sharing Redis (one leader, the other relaying), the processes on every core."""
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # the gateways inherit it
    heading = (
        "stream fan-out: one upstream connection, MessagePack clients (latency: emulator"
        " send -> client receive, ms; rps: messages delivered per second)"
    )
    rows = [Row(heading)]
    try:
        for instances in (1, 2):
            print(f"stream fan-out: {CLIENTS:,} clients on {instances} instance(s)", flush=True)
            try:
                shape = {"clients": CLIENTS, "symbols": SYMBOLS, "ticks": TICKS}
                figures = await measure(emulator, control, redis_url, instances=instances, **shape)
            except RuntimeError as exc:  # the bench's other rows are still printed
                scenario = f"stream fan-out, {CLIENTS:,} clients, {instances} instance(s)"
                rows.append(Row(scenario, target="FAILED", notes=str(exc)))
                continue
            rows.append(figures.row())
    finally:
        os.sched_setaffinity(0, pinned)
    return rows


def lag_summary(exposition: str, feed: str) -> str:
    """p50 and p99 as the upper bound of the histogram bucket holding them, and the mean."""
    name = "gateway_stream_delivery_lag_seconds"
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in exposition.splitlines():
        if f'feed="{feed}"' not in line or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        if sample.startswith(name + "_bucket"):
            bound = sample.split('le="')[1].split('"')[0]
            buckets.append((float(bound), float(value)))
        elif sample.startswith(name + "_sum"):
            total = float(value)
        elif sample.startswith(name + "_count"):
            count = float(value)
    if not count:
        return "no frames measured"

    def upper(q: float) -> str:
        bound = next(b for b, cumulative in sorted(buckets) if cumulative >= q * count)
        return f"<= {bound * 1000:g} ms"

    return (f"{count:,.0f} client frames, p50 {upper(0.5)}, p99 {upper(0.99)},"
            f" mean {total / count * 1000:.2f} ms")  # fmt: skip


def main(argv: list[str]) -> None:
    clients, symbols, ticks, instances = (
        int(a) for a in (argv + ["200", "10", "20", "1"][len(argv) :])[:4]
    )
    # With REDIS_URL the feed goes through a leader lease and the relay, as in production;
    # without, the one instance holds it alone.
    redis_url = os.environ.get("REDIS_URL", "")
    with EmulatorProcess() as emulator:

        async def go() -> Figures:
            async with EmulatorControl(emulator.base_url) as control:
                return await measure(emulator, control, redis_url, clients=clients,
                                     symbols=symbols, ticks=ticks, instances=instances)  # fmt: skip

        print("\n".join(asyncio.run(go()).lines()))


if __name__ == "__main__":
    main(sys.argv[1:])
