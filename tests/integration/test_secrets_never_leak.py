"""Every secret the gateway holds, seeded with a unique marker, is absent from every place it
writes: its log (DEBUG, JSON lines, the server's own lines included), `/ready`, `/metrics`,
problem bodies and headers, the stored error log, and a bug's 500 and traceback.

The secrets: Alpaca's key id and secret, a gateway API key's secret (and a forged one a client
sent), the Redis and PostgreSQL passwords inside REDIS_URL and DATABASE_URL (both servers really
require them here), and the operations key. The run goes through failures on purpose: Alpaca
answering 500 and garbage, Redis killed, PostgreSQL stopped and started again, since error paths
are where a secret tends to be quoted.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from app.main import create_app
from tests.conftest import PrivatePostgres, PrivateRedis, gateway_settings
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE
from tests.served import REPO_ROOT, ServedGateway, emulator_env

pytestmark = pytest.mark.integration


def marker(label: str) -> str:
    """A value no code path could produce by accident: the label and 32 random hex digits."""
    return f"{label}{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Secrets:
    alpaca_key_id: str
    alpaca_secret: str
    redis_password: str
    postgres_password: str
    ops_key: str
    # A key a client sent: a known key id with a secret that is not that key's.
    forged_secret: str

    @classmethod
    def seeded(cls) -> Secrets:
        return cls(
            alpaca_key_id=marker("AKID"),
            alpaca_secret=marker("alpacasecret"),
            redis_password=marker("redispw"),
            postgres_password=marker("pgpw"),
            ops_key=marker("opskey"),
            forged_secret=marker("forged") + "x" * 5,  # 43 characters, a secret's shape
        )

    def named(self) -> dict[str, str]:
        return dict(vars(self))


def leaks(sinks: dict[str, str], secrets: dict[str, str]) -> list[str]:
    """'<secret> in <sink>' for every secret found in a sink, whole or by its random part."""
    found = []
    for secret_name, value in secrets.items():
        needles = {value, value[-32:]}
        for sink_name, text in sinks.items():
            if any(needle in text for needle in needles):
                found.append(f"{secret_name} in {sink_name}")
    return found


# --- real servers that require the passwords --------------------------------------------------
def require_redis_password(server: PrivateRedis, password: str) -> str:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.config_set("requirepass", password)
    client.close()
    return f"redis://:{password}@127.0.0.1:{server.port}/0"


async def require_postgres_password(server: PrivatePostgres, password: str) -> str:
    """A login role with `password` owning a database, reachable over TCP only with it (the
    superuser keeps trust, for this test's own queries)."""
    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(f"CREATE ROLE gwapp LOGIN PASSWORD '{password}'")
        await admin.execute("CREATE DATABASE gateway OWNER gwapp")
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()
    url = f"postgresql://gwapp:{password}@127.0.0.1:{server.port}/gateway"
    # The password is really required: a wrong one is refused.
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(url.replace(password, "wrong"))
    return url


@pytest.fixture
def seeded_emulator() -> Iterator[tuple[EmulatorProcess, Secrets]]:
    secrets = Secrets.seeded()
    with EmulatorProcess(key_id=secrets.alpaca_key_id, secret_key=secrets.alpaca_secret) as emu:
        yield emu, secrets


# --- the served gateway, through good days and bad ----------------------------------------------
async def test_no_secret_reaches_any_sink(
    seeded_emulator: tuple[EmulatorProcess, Secrets],
    private_redis: PrivateRedis,
    private_postgres: PrivatePostgres,
    tmp_path: Path,
) -> None:
    emulator_process, secrets = seeded_emulator
    redis_url = require_redis_password(private_redis, secrets.redis_password)
    database_url = await require_postgres_password(private_postgres, secrets.postgres_password)
    env = emulator_env(
        emulator_process,
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        OPS_ACCESS="key",
        OPS_KEY=secrets.ops_key,
        LOG_LEVEL="DEBUG",
        LOG_JSON="true",
        CLOCK_POLL_INTERVAL_S="0",
        ORDER_RECONCILE_FIRST_WAIT_S="0.05",
        TRADING_TIMEOUT_S="1",
        DATA_TIMEOUT_S="1",
        REDIS_TIMEOUT_S="0.2",
    )
    create = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "leak-test"]
    create += ["--scopes", "data:read,trading:read,trading:write"]
    created = await asyncio.to_thread(
        subprocess.run,
        create,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = created.stdout.strip().splitlines()[-1]
    key_id, key_secret = api_key.split("_")[1], api_key.split("_", 2)[2]
    forged = f"gw_{key_id}_{secrets.forged_secret}"
    grepped = {**secrets.named(), "gateway_key_secret": key_secret}

    answers: list[httpx.Response] = []
    control = EmulatorControl(emulator_process.base_url)
    await control.set_quote("AAPL", QUOTE)
    await control.set_quote("MSFT", QUOTE)
    await control.set_asset("AAPL", {})
    with ServedGateway(env, tmp_path / "gateway.log") as served:
        keyed = {"Authorization": f"Bearer {api_key}"}
        ops = {"Authorization": f"Bearer {secrets.ops_key}"}
        async with httpx.AsyncClient(base_url=served.base_url, timeout=15) as client:

            async def call(method: str, path: str, **kwargs: Any) -> None:
                answers.append(await client.request(method, path, **kwargs))

            async def every_kind() -> None:
                order = {"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market"}
                order["time_in_force"] = "day"
                idempotency = {"Idempotency-Key": f"leak-{uuid.uuid4().hex}"}
                await call("GET", "/v1/stocks/AAPL/quote", headers=keyed)
                await call("GET", "/v1/stocks/AAPL/quote", headers={"X-API-Key": forged})
                await call("GET", "/v1/stocks/AAPL/quote", headers={"X-API-Key": "gw_short"})
                await call("GET", "/v1/stocks/AAPL/quote")
                await call("GET", "/v1/stocks/ZZZZZ/quote", headers=keyed)
                await call("GET", "/v1/stocks/MSFT/quote", headers=keyed)
                await call("GET", "/v1/nowhere", headers=keyed)
                await call("POST", "/v1/orders", headers={**keyed, **idempotency}, json=order)
                await call("POST", "/v1/orders", headers={**keyed, **idempotency}, json={})
                await call("GET", "/v1/account", headers=keyed)
                await call("GET", "/ready")
                await call("GET", "/ready", headers=ops)
                await call("GET", "/metrics", headers=ops)
                await call("GET", "/metrics")

            await every_kind()
            # Alpaca unwell: errors, garbage, a refusal.
            for kind in ("status_500", "malformed_json", "reset", "rate_limited"):
                fault = await control.add_fault("/v2/stocks/*", kind)
                await call("GET", "/v1/stocks/MSFT/quote", headers=keyed)
                await call("GET", "/v1/stocks/AAPL/trade", headers=keyed)
                await control.remove_fault(fault)
            # Redis killed: the cache and the quotas fail open, and say so.
            private_redis.stop()
            await every_kind()
            # The store stopped: orders are refused, reads go on; then it comes back.
            private_postgres.stop_immediately()
            await every_kind()
            private_postgres.resume()
            await asyncio.sleep(1.5)
            await every_kind()
            await asyncio.sleep(1.0)  # the error log writer's last batch
        served.stop()
        log = served.log_path.read_text()
    await control.aclose()

    stored = await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{private_postgres.port}/gateway"
    )
    try:
        rows = await stored.fetch("SELECT * FROM error_logs")
    finally:
        await stored.close()
    sinks = {
        "log": log,
        "error_logs": json.dumps([dict(row) for row in rows], default=str),
        **{
            f"{answer.request.method} {answer.request.url.path} #{i} ({answer.status_code})": (
                "".join(f"{k}: {v}\n" for k, v in answer.headers.items()) + answer.text
            )
            for i, answer in enumerate(answers)
        },
    }

    # The run went where secrets get quoted: failures answered, logged and stored.
    statuses = {answer.status_code for answer in answers}
    assert {200, 401, 404, 503} <= statuses, statuses
    assert "Traceback" in log or '"level": "ERROR"' in log or '"level": "WARNING"' in log
    assert rows, "nothing reached the stored error log"
    assert any(
        answer.request.url.path == "/metrics" and answer.status_code == 200 for answer in answers
    )
    assert not leaks(sinks, grepped), leaks(sinks, grepped)


# --- a bug's 500 and its traceback ------------------------------------------------------------
async def test_a_bug_quoting_secrets_shows_none_of_them(
    emulator_process: EmulatorProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = Secrets.seeded()
    redis_url = f"redis://:{secrets.redis_password}@127.0.0.1:9/0"  # nothing listens on 9
    settings = gateway_settings(
        emulator_process,
        alpaca_api_key_id=secrets.alpaca_key_id,
        alpaca_api_secret_key=secrets.alpaca_secret,
        redis_url=redis_url,
        ops_key=secrets.ops_key,
        log_level="DEBUG",
        log_json=True,
    )
    app = create_app(settings)
    database_url = f"postgresql://gw:{secrets.postgres_password}@db/gateway"

    @app.get("/v1/boom")  # a bug that puts every secret into its exception
    async def boom() -> None:
        raise RuntimeError(
            f"could not reach {redis_url} or {database_url}: key"
            f" {secrets.alpaca_key_id}/{secrets.alpaca_secret} ops {secrets.ops_key}"
        )

    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/v1/boom")
            ready = await client.get("/ready")
    logged = capsys.readouterr().out

    assert response.status_code == 500
    assert "Traceback" in logged  # the traceback was written, redacted
    sinks = {"500 body": response.text, "ready": ready.text, "log": logged}
    # The database URL's password is known to the redactor only through DATABASE_URL; here
    # it was not configured, so only the configured secrets are held to it.
    configured = {k: v for k, v in secrets.named().items() if k != "postgres_password"}
    assert not leaks(sinks, configured), leaks(sinks, configured)
    assert secrets.postgres_password not in response.text
