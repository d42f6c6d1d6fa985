"""Several uvicorn workers: /metrics must count every request whichever worker answers the
scrape (prometheus-client multiprocess mode, PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
CLOCK = {
    "timestamp": "2026-11-20T10:15:22-05:00",
    "is_open": True,
    "next_open": "2026-11-23T09:30:00-05:00",
    "next_close": "2026-11-20T16:00:00-05:00",
}


def _clock_requests(exposition: str) -> float:
    pattern = r'^gateway_http_requests_total\{[^}]*route="/v1/clock"[^}]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, exposition, re.MULTILINE))


async def test_two_workers_report_every_request_in_every_scrape(
    emulator: EmulatorControl, emulator_process: EmulatorProcess
) -> None:
    await emulator.set_clock(CLOCK)
    with tempfile.TemporaryDirectory() as tmp:
        metrics_dir = Path(tmp) / "metrics"
        metrics_dir.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "ALPACA_API_KEY_ID": emulator_process.key_id,
            "ALPACA_API_SECRET_KEY": emulator_process.secret_key,
            "ALPACA_DATA_URL": emulator_process.base_url,
            "ALPACA_TRADING_URL": emulator_process.base_url,
            "UPSTREAM_SOURCE_NAME": "emulator",
            "GATEWAY_ANONYMOUS_DATA": "true",
            "CLOCK_POLL_INTERVAL_S": "0",
            "EMBEDDED_DB_PATH": str(Path(tmp) / "gateway.sqlite3"),
            "LOG_LEVEL": "WARNING",
        }
        # The server is driven with blocking calls, so off the event loop.
        scrapes = await asyncio.to_thread(_serve_and_scrape, env, free_port())

        assert [_clock_requests(s) for s in scrapes] == [30.0] * 8
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2  # two workers wrote
        for scrape in scrapes:  # merged gauges: one series per upstream, no pid label
            states = re.findall(r"^gateway_circuit_breaker_state\{(.*)\} ", scrape, re.M)
            assert sorted(states) == sorted(
                f'upstream="{u}"' for u in ("data", "options", "trading")
            )


def _serve_and_scrape(env: dict[str, str], port: int) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "2", "--no-access-log"]
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "gateway exited"
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        for _ in range(30):  # a new connection each time, so both workers take some
            assert httpx.get(base + "/v1/clock", timeout=5).status_code == 200
        return [httpx.get(base + "/metrics", timeout=5).text for _ in range(8)]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
