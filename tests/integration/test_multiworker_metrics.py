"""Several uvicorn workers: /metrics must count every request whichever worker answers the
scrape (prometheus-client multiprocess mode, PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.served import ServedGateway, emulator_env

pytestmark = pytest.mark.integration
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
        env = emulator_env(
            emulator_process,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            GATEWAY_ANONYMOUS_DATA="true",
            CLOCK_POLL_INTERVAL_S="0",
            EMBEDDED_DB_PATH=str(Path(tmp) / "gateway.sqlite3"),
            LOG_LEVEL="WARNING",
        )
        for shared in ("REDIS_URL", "DATABASE_URL"):  # workers share only the metrics dir
            env.pop(shared, None)
        # The server is driven with blocking calls, so off the event loop.
        scrapes = await asyncio.to_thread(_serve_and_scrape, env, Path(tmp) / "gateway.log")

        assert [_clock_requests(s) for s in scrapes] == [30.0] * 8
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2  # two workers wrote
        for scrape in scrapes:  # merged gauges: one series per upstream, no pid label
            states = re.findall(r"^gateway_circuit_breaker_state\{(.*)\} ", scrape, re.M)
            assert sorted(states) == sorted(
                f'upstream="{u}"' for u in ("data", "options", "trading", "reference")
            )


def _serve_and_scrape(env: dict[str, str], log_path: Path) -> list[str]:
    with ServedGateway(env, log_path, workers=2) as served:
        for _ in range(30):  # a new connection each time, so both workers take some
            assert httpx.get(served.base_url + "/v1/clock", timeout=5).status_code == 200
        return [httpx.get(served.base_url + "/metrics", timeout=5).text for _ in range(8)]
