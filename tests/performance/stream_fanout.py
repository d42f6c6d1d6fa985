"""Stream fan-out figures (`make bench-streams`): `python -m tests.performance.stream_fanout
[CLIENTS] [SYMBOLS] [TICKS]`.

The served gateway (granian, one worker, Redis if REDIS_URL is set) in front of the emulator;
CLIENTS MessagePack clients on `/alpaca/v2/iex`, each subscribed to SYMBOLS quotes; the emulator
pushes TICKS quotes per symbol (`t` stamped by the emulator as it sends). Prints the upstream
connections the emulator saw, messages delivered per second, and the delivery latency (emulator
send -> client receive) p50/p99, and the gateway's own delivery lag (frame in -> write to a
client, gateway_stream_delivery_lag_seconds) as the histogram bucket holding its p50/p99 and
its mean. Figures only: nothing here passes or fails.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgpack
from websockets.asyncio.client import connect

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.support.streams import MSGPACK, QUOTE, StreamGateway, stream_gateway


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


async def run(gateway: StreamGateway, emulator: EmulatorControl, clients: int, symbols: int,
              ticks: int) -> None:  # fmt: skip
    names = [f"SYM{chr(65 + n // 26)}{chr(65 + n % 26)}" for n in range(symbols)]
    latencies: list[float] = []
    tasks = [
        asyncio.create_task(client(gateway, names, symbols * ticks, latencies))
        for _ in range(clients)
    ]
    for name in names:
        await emulator.streams.wait_for_subscriber("iex", "quotes", name, timeout_s=120)
    await asyncio.sleep(1)  # every client's subscription answered
    started = time.monotonic()
    for tick in range(ticks):
        await emulator.streams.push(
            "iex", [{**QUOTE, "S": name, "bs": tick + 1, "t": "now"} for name in names]
        )
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100)
    connections = len(await emulator.streams.connections("iex"))
    print(f"{clients} clients x {symbols} symbols x {ticks} ticks: upstream connections"
          f" {connections}, {len(latencies)} messages delivered in {elapsed:.1f} s"
          f" ({len(latencies) / elapsed:,.0f}/s), latency p50 {cuts[49]:.1f} ms,"
          f" p99 {cuts[98]:.1f} ms")  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as http:
        exposition = (await http.get(gateway.served.base_url + "/metrics")).text
    print("gateway delivery lag (iex): " + lag_summary(exposition, "iex"))


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
    clients, symbols, ticks = (int(a) for a in (argv + ["200", "10", "20"][len(argv) :])[:3])
    # With REDIS_URL the feed goes through a leader lease and the relay, as in production;
    # without, the one instance holds it alone.
    redis_url = os.environ.get("REDIS_URL", "")
    with EmulatorProcess() as emulator:
        tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
        with stream_gateway(emulator, redis_url, tmp, LOG_LEVEL="WARNING",
                            GATEWAY_MAX_CONNECTIONS=str(clients + 100)) as gateway:  # fmt: skip

            async def go() -> None:
                async with EmulatorControl(emulator.base_url) as control:
                    await run(gateway, control, clients, symbols, ticks)

            asyncio.run(go())


if __name__ == "__main__":
    main(sys.argv[1:])
