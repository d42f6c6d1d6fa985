"""The live proof: a real Prometheus scrapes a real gateway under mixed load, and every query of
every dashboard panel must return data; every alert rule must evaluate healthily.

    emulator (process)  <-  gateway (uvicorn process, real Redis)  <-  prometheus (1 s scrapes)

The load covers what the panels read: cache miss / hit / shared / stale / negative, batch
quotes, trades, snapshots, bars, the clock, an unknown symbol, a symbol with no data, a bad
symbol, an unknown route, upstream 500s and timeouts, enough failures to open the data
breaker (which then half-opens and closes again), and a bot on the iex stream receiving
quotes. Counters for outcomes that never happened do not exist, so a panel with no series here
would show "No data" in production too.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.observability.support import (
    ALERT_RULES,
    APP_METRICS_NEEDED,
    PROMETHEUS_CONFIG,
    alert_rules,
    expand_grafana_variables,
    fail_without,
    metric_names,
    needed_note,
    panel_targets,
)
from tests.served import ServedGateway, emulator_env
from tests.support.streams import quote, raw

pytestmark = pytest.mark.integration

WATCHLIST = ("AAPL", "SPY")
SYMBOLS = ("AAPL", "SPY", "MSFT")
START_TIMEOUT_S = 20.0
QUOTES_LATEST = "/v2/stocks/quotes/latest"
TRADES_LATEST = "/v2/stocks/trades/latest"
DATA_PATHS = "/v2/stocks/*"


# --- processes ----------------------------------------------------------------------------------
def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"{what} did not start:\n{log.read_text()[-3000:]}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture
def served_gateway(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path
) -> Iterator[ServedGateway]:
    """`uvicorn app.main:app` in its own process, breaker and timeouts tuned to trip fast."""
    env = emulator_env(
        emulator_process,
        REDIS_URL=redis_url,
        CACHE_NAMESPACE=f"test-{uuid.uuid4().hex}",
        LOG_JSON="true",
        LOG_LEVEL="WARNING",
        DATA_TIMEOUT_S="0.3",
        BREAKER_MINIMUM_CALLS="4",
        BREAKER_WINDOW_SIZE="4",
        BREAKER_OPEN_DURATION_S="2",
        CACHE_NEGATIVE_TTL_S="0.05",
        METRICS_WATCHLIST=",".join(WATCHLIST),
        # Data routes without a key (auth has its own tests), and the embedded key/audit store
        # in tmp_path: the panels read nothing from PostgreSQL.
        GATEWAY_ANONYMOUS_DATA="true",
        EMBEDDED_DB_PATH=str(tmp_path / "gateway.sqlite3"),
    )
    env.pop("DATABASE_URL", None)
    with ServedGateway(env, tmp_path / "gateway.log") as served:
        yield served


def prometheus_config(gateway_port: int) -> dict[str, Any]:
    """config/prometheus.yml with 1 s intervals, our gateway's address, an absolute rule path."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERT_RULES)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    job["scrape_interval"] = "1s"
    job["scrape_timeout"] = "1s"
    job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway_port}"]}]
    config["scrape_configs"] = [job]
    return config


@pytest.fixture
def prometheus(served_gateway: ServedGateway, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus on a free loopback port, data in tmp_path; yields its base URL."""
    binary = fail_without("prometheus")
    port = free_port()
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(prometheus_config(served_gateway.port)))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base + "/-/ready", process, log, "prometheus")
        yield base
    finally:
        stop(process)


# --- Prometheus HTTP API --------------------------------------------------------------------------
async def query(client: httpx.AsyncClient, expr: str) -> dict[str, Any]:
    response = await client.get("/api/v1/query", params={"query": expr})
    body: dict[str, Any] = response.json()
    return body


async def wait_for_scrapes_after(client: httpx.AsyncClient, moment: float, scrapes: int) -> None:
    """Until the gateway target's newest sample is `scrapes` intervals (1 s) past `moment`."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        result = (await query(client, 'timestamp(up{job="gateway"} == 1)'))["data"]["result"]
        if result and float(result[0]["value"][1]) >= moment + scrapes:
            return
        await asyncio.sleep(0.25)
    pytest.fail(f"Prometheus did not scrape the gateway {scrapes} times after the load")


# --- load -----------------------------------------------------------------------------------------
def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def seed(now: datetime) -> dict[str, Any]:
    recent = rfc3339(now - timedelta(seconds=2))
    quote = {
        "t": recent,
        "bp": 101.25,
        "bs": 3,
        "bx": "V",
        "ap": 101.2575,
        "as": 2,
        "ax": "V",
        "c": ["R"],
        "z": "C",
    }
    trade = {
        "t": recent,
        "x": "V",
        "p": 101.26,
        "s": 100,
        "i": 52983525029461,
        "c": ["@"],
        "z": "C",
    }
    minute = (now - timedelta(minutes=1)).replace(second=0, microsecond=0)
    bar = {
        "t": minute.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "o": 101.0,
        "h": 101.5,
        "l": 100.9,
        "c": 101.2,
        "v": 1200,
        "n": 31,
        "vw": 101.21,
    }
    return {"quote": quote, "trade": trade, "bar": bar}


async def stream_quotes(gateway: httpx.AsyncClient, emulator: EmulatorControl) -> None:
    """A bot on the iex stream (anonymous, as the data routes here) receives three quotes: the
    stream panels' clients, messages, delivery lag, connection state and leader have series."""
    url = str(gateway.base_url).rstrip("/").replace("http://", "ws://") + "/alpaca/v2/iex"
    async with raw(url, use_msgpack=True) as bot:
        assert await bot.auth_reply("", "") == [{"T": "success", "msg": "authenticated"}]
        await bot.send({"action": "subscribe", "quotes": ["AAPL"]})
        await bot.recv()
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        ticks = [quote("AAPL", bid, n) for n, bid in enumerate(("101.25", "101.26", "101.27"))]
        await emulator.streams.push("iex", ticks, per_frame=1)
        received: list[Any] = []
        while len(received) < len(ticks):
            received += await bot.recv()


async def drive_load(gateway: httpx.AsyncClient, emulator: EmulatorControl) -> None:
    values = seed(datetime.now(UTC))
    await emulator.set_state(
        quotes=dict.fromkeys(SYMBOLS, values["quote"]),
        trades=dict.fromkeys(SYMBOLS, values["trade"]),
        snapshots={
            "AAPL": {
                "latestTrade": values["trade"],
                "latestQuote": values["quote"],
                "minuteBar": values["bar"],
                "dailyBar": values["bar"],
                "prevDailyBar": values["bar"],
            }
        },
        bars={"AAPL": [values["bar"]]},
        assets=[*SYMBOLS, "NODATA"],
    )
    await emulator.set_clock(
        {
            "timestamp": datetime.now(UTC).isoformat(),
            "is_open": True,
            "next_open": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "next_close": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
        }
    )

    async def healthy_round() -> None:
        await gateway.get("/v1/stocks/AAPL/quote")  # miss, then hits within the 1 s TTL
        await gateway.get("/v1/stocks/AAPL/quote")
        await asyncio.gather(*(gateway.get("/v1/stocks/SPY/quote") for _ in range(8)))  # shared
        await gateway.get("/v1/stocks/quotes", params={"symbols": "AAPL,SPY,MSFT,bad..sym"})
        await gateway.get("/v1/stocks/AAPL/trade")
        await gateway.get("/v1/stocks/AAPL/snapshot")
        await gateway.get("/v1/stocks/AAPL/bars", params={"timeframe": "1Min"})
        await gateway.get("/v1/clock")
        await gateway.get("/v1/stocks/ZZZZ/quote")  # SYMBOL_NOT_FOUND, then negative hits
        await gateway.get("/v1/stocks/ZZZZ/quote")
        await gateway.get("/v1/stocks/NODATA/quote")  # NO_DATA
        await gateway.get("/v1/stocks/a..b/quote")  # VALIDATION_ERROR
        await gateway.get("/v1/nowhere")  # ROUTE_NOT_FOUND

    # 1. healthy traffic, a streaming bot among it
    await stream_quotes(gateway, emulator)
    for _ in range(6):
        await healthy_round()
        await asyncio.sleep(0.4)

    # 2. single faults: a 500 and a timeout (latency past DATA_TIMEOUT_S)
    await emulator.add_fault(TRADES_LATEST, "status_500", count=1)
    await gateway.get("/v1/stocks/MSFT/trade")
    await asyncio.sleep(1.1)  # the quote cache entry expires
    await emulator.add_fault(QUOTES_LATEST, "latency", count=1, delay_ms=800)
    await gateway.get("/v1/stocks/MSFT/quote")
    for _ in range(3):
        await healthy_round()
        await asyncio.sleep(0.3)

    # 3. Alpaca's data API fails: stale values where allowed, then the breaker opens
    await asyncio.sleep(1.1)  # cached quotes expire; stale copies remain
    await emulator.add_fault(DATA_PATHS, "status_500")
    for symbol in ("AAPL", "SPY", "MSFT", "AAPL", "SPY", "MSFT"):
        await gateway.get(f"/v1/stocks/{symbol}/quote", params={"stale_if_error_ms": 60_000})
        await gateway.get(f"/v1/stocks/{symbol}/trade")
        await asyncio.sleep(0.06)  # past CACHE_NEGATIVE_TTL_S: each failure is a new call
    for _ in range(5):  # breaker open: refused at once, stale where allowed
        await gateway.get("/v1/stocks/AAPL/quote", params={"stale_if_error_ms": 60_000})
        await gateway.get("/v1/stocks/SPY/snapshot")
        await gateway.get("/v1/clock")
        await asyncio.sleep(0.3)

    # 4. Alpaca recovers: half-open after BREAKER_OPEN_DURATION_S, trial calls close it
    await emulator.clear_faults()
    await asyncio.sleep(2.2)
    for _ in range(5):
        await healthy_round()
        await asyncio.sleep(0.4)


# --- the proof ------------------------------------------------------------------------------------
async def test_every_panel_query_returns_data_from_a_real_prometheus(
    served_gateway: ServedGateway, prometheus: str, emulator: EmulatorControl
) -> None:
    async with (
        httpx.AsyncClient(base_url=served_gateway.base_url, timeout=5) as gateway,
        httpx.AsyncClient(base_url=prometheus, timeout=5) as prom,
    ):
        await wait_for_scrapes_after(prom, time.time(), 1)  # a baseline before any traffic
        await asyncio.wait_for(drive_load(gateway, emulator), timeout=45)
        await wait_for_scrapes_after(prom, time.time(), 2)

        breaker = await query(prom, 'gateway_circuit_breaker_transitions_total{to_state="open"}')
        if not breaker["data"]["result"]:
            exposition = (await gateway.get("/metrics")).text
            pytest.fail(
                "the load did not open the data breaker:\n"
                + "\n".join(
                    line
                    for line in exposition.splitlines()
                    if line.startswith(
                        (
                            "gateway_upstream_requests_total",
                            "gateway_circuit",
                            "gateway_http_errors_total",
                        )
                    )
                    and not line.endswith(" 0.0")
                )
                + served_gateway.log_path.read_text()[-2000:]
            )

        empty: list[str] = []
        nan_only: list[str] = []
        for target in panel_targets():
            body = await query(prom, expand_grafana_variables(target.expr))
            if body.get("status") != "success":
                empty.append(f"{target.where()}  -> {body.get('errorType')}: {body.get('error')}")
                continue
            values = [float(r["value"][1]) for r in body["data"]["result"]]
            if not values:
                empty.append(target.where())
            elif all(math.isnan(v) for v in values):
                nan_only.append(target.where())

        rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]

    problems = []
    if empty:
        pending = set().union(*(metric_names(line) for line in empty)) & APP_METRICS_NEEDED.keys()
        problems.append(
            "panel queries with no series (dashboard / panel / refId: expr):\n  "
            + "\n  ".join(empty)
            + needed_note(pending)
        )
    if nan_only:
        problems.append("panel queries returning only NaN:\n  " + "\n  ".join(nan_only))
    evaluated = {r["name"]: r for group in rules for r in group["rules"]}
    expected = {r.get("alert") or r.get("record") for r in alert_rules()}
    if set(evaluated) != expected:
        problems.append(f"rules loaded {sorted(evaluated)} != config/alerts.yml {expected}")
    unhealthy = [
        f"{name}: health={r.get('health')} lastError={r.get('lastError')!r}"
        for name, r in evaluated.items()
        if r.get("health") != "ok" or r.get("lastError")
    ]
    if unhealthy:
        problems.append("rules not healthy:\n  " + "\n  ".join(unhealthy))
    assert not problems, "\n".join(problems)
