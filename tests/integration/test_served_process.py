"""The gateway as users run it: `uvicorn app.main:app` in its own process, configured by the
environment, logging JSON lines. Proves request ids on every line and no secret in any line."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE
from tests.served import REPO_ROOT, ServedGateway, emulator_env

pytestmark = pytest.mark.integration


@dataclass
class KeyedGateway:
    served: ServedGateway
    api_key: str


@pytest.fixture(params=["granian", "uvicorn"])
def served_gateway(
    request: pytest.FixtureRequest,
    emulator_process: EmulatorProcess,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[KeyedGateway]:
    """The gateway on each server it can run on (granian is `make run`'s default)."""
    env = emulator_env(
        emulator_process,
        REDIS_URL=redis_url,
        CACHE_NAMESPACE=f"test-{uuid.uuid4().hex}",
        LOG_JSON="true",
        LOG_LEVEL="INFO",
        EMBEDDED_DB_PATH=str(tmp_path / "gateway.sqlite3"),
    )
    # A real key, made the way an operator makes one: the CLI prints it as its last line.
    create = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "served-test"]
    create += ["--scopes", "data:read"]
    created = subprocess.run(
        create, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    with ServedGateway(env, tmp_path / "gateway.log", server=request.param) as served:
        yield KeyedGateway(served, created.stdout.strip().splitlines()[-1])


async def test_json_logs_carry_request_id_and_never_a_secret(
    served_gateway: KeyedGateway, emulator: EmulatorControl, emulator_process: EmulatorProcess
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    await emulator.add_fault("/v2/stocks/trades/latest", "status_500", count=1)
    auth = {"Authorization": f"Bearer {served_gateway.api_key}"}
    async with httpx.AsyncClient(
        base_url=served_gateway.served.base_url, timeout=5, headers=auth
    ) as client:
        ok = await client.get("/v1/stocks/AAPL/quote", headers={"X-Request-ID": "bot-7.req-1"})
        failed = await client.get("/v1/stocks/AAPL/trade")
        bad = await client.get(
            "/v1/stocks/quotes",
            params={"symbols": "AAPL", "token": emulator_process.secret_key},
        )
        metrics = await client.get("/metrics")

    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == "bot-7.req-1"
    assert ok.json()["ask_price"] == QUOTE["ap"]
    assert failed.status_code == 503
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    assert failed.json()["request_id"] == failed.headers["x-request-id"]
    assert bad.status_code == 200
    assert 'route="/v1/stocks/{symbol}/quote"' in metrics.text
    assert "AAPL" not in metrics.text  # no raw symbol labels anywhere

    served_gateway.served.stop()
    lines = served_gateway.served.log_lines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    # The server's own log records (start-up, shutdown) are routed into the same JSON lines.
    server = (
        "uvicorn" if served_gateway.served.env.get("GATEWAY_SERVER") == "uvicorn" else "_granian"
    )
    assert any(r.get("logger", "").startswith(server) for r in records), f"{server} not routed"

    of_request = [r for r in records if r.get("request_id") == "bot-7.req-1"]
    assert of_request, "the client's X-Request-ID is on the request's log lines"
    access = [r for r in records if "route" in r]
    assert {r["route"] for r in access} >= {
        "/v1/stocks/{symbol}/quote",
        "/v1/stocks/{symbol}/trade",
    }
    assert all(r["request_id"] not in ("", "-") for r in access)
    for record in access:  # one line per request: what, how it ended, how long it took
        assert {"ts", "level", "msg", "route", "method", "status", "duration_ms"} <= set(record)
    (failed_line,) = [r for r in access if r["route"] == "/v1/stocks/{symbol}/trade"]
    assert failed_line["status"] == 503
    assert failed_line["code"] == "UPSTREAM_UNAVAILABLE"
    assert failed_line["upstream"] == "data"

    everything = "\n".join(lines)
    for secret in (emulator_process.secret_key, emulator_process.key_id, served_gateway.api_key):
        assert secret not in everything


async def test_docs_and_openapi_are_served(served_gateway: KeyedGateway) -> None:
    async with httpx.AsyncClient(base_url=served_gateway.served.base_url, timeout=5) as client:
        docs = await client.get("/docs")
        spec = await client.get("/openapi.json")
    assert docs.status_code == 200
    assert "/v1/stocks/{symbol}/quote" in spec.json()["paths"]
