"""Memory stays flat under load that repeats remembered failures.

A remembered failure (an unknown symbol is remembered for an hour) is served to every request that
asks again. If the same exception object were raised again and again, each raise would chain that
request's frames onto it and keep them alive for as long as the entry lives: under wrk the batch
route once took a worker from 79 MB to 1.2 GB. The gateway runs as users run it (uvicorn, its own
process) and its resident memory is read from /proc while thousands of such requests go through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE
from tests.served import ServedGateway, emulator_env

pytestmark = pytest.mark.integration

WARM_UP_REQUESTS = 400
MEASURED_REQUESTS = 4000
CONCURRENCY = 16
# Before the fix these requests grew the worker by about 25 MB (some 10 kB per batch request,
# never released); after it, by well under 1 MB.
ALLOWED_GROWTH_MB = 8


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture
def served(emulator_process: EmulatorProcess, tmp_path: Path) -> Iterator[ServedGateway]:
    env = emulator_env(
        emulator_process,
        GATEWAY_ANONYMOUS_DATA="true",
        LOG_LEVEL="WARNING",
        CLOCK_POLL_INTERVAL_S="0",
        EMBEDDED_DB_PATH=str(tmp_path / "gateway.sqlite3"),
    )
    env.pop("REDIS_URL", None)  # the in-process cache, the default a newcomer runs
    env.pop("DATABASE_URL", None)
    with ServedGateway(env, tmp_path / "gateway.log") as gateway:
        yield gateway


async def _hammer(client: httpx.AsyncClient, paths: list[str], total: int) -> set[int]:
    statuses: set[int] = set()
    queue = iter(range(total))

    async def worker() -> None:
        for index in queue:
            response = await client.get(paths[index % len(paths)])
            statuses.add(response.status_code)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses


async def test_remembered_failures_do_not_grow_memory(
    served: ServedGateway, emulator: EmulatorControl
) -> None:
    await emulator.set_quote("AAPL", QUOTE)  # ZZZZ and YYYY stay unknown to Alpaca
    paths = [
        "/v1/stocks/quotes?symbols=ZZZZ,YYYY,AAPL",
        "/v1/stocks/quotes?symbols=YYYY,AAPL",
        "/v1/stocks/ZZZZ/quote",
        "/v1/stocks/YYYY/trade",
    ]
    assert served.process is not None
    pid = served.process.pid
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10, limits=limits) as client:
        first = await client.get(paths[0])
        assert first.status_code == 200
        assert first.json()["errors"]["ZZZZ"]["code"] == "SYMBOL_NOT_FOUND"
        assert first.json()["quotes"]["AAPL"]["ask_price"] == QUOTE["ap"]
        await _hammer(client, paths, WARM_UP_REQUESTS)
        before_mb = resident_mb(pid)
        statuses = await _hammer(client, paths, MEASURED_REQUESTS)
        after_mb = resident_mb(pid)

    assert statuses == {200, 404}
    growth = after_mb - before_mb
    assert growth < ALLOWED_GROWTH_MB, (
        f"RSS grew {growth:.1f} MB ({before_mb:.1f} -> {after_mb:.1f}) over "
        f"{MEASURED_REQUESTS} requests that met remembered failures"
    )
