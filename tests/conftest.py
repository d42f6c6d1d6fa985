"""Shared fixtures, split by concern: the emulator process, real Redis, a gateway under test.

Redis is real. A test that needs it FAILS with a clear message when it is missing, never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.keys import generate_key, key_prefix
from app.main import create_app
from app.settings import Settings
from app.state import GatewayState
from app.storage.records import ApiKeyRow, utc_now
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


# --- the Alpaca emulator ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    with EmulatorProcess() as process:
        yield process


@pytest.fixture
async def emulator(emulator_process: EmulatorProcess) -> AsyncIterator[EmulatorControl]:
    """The emulator's control API, reset before each test (data, faults, counters, config)."""
    control = EmulatorControl(emulator_process.base_url)
    await control.reset()
    yield control
    await control.clear_faults()  # releases hung requests before the next test
    await control.aclose()


# --- real Redis -------------------------------------------------------------------------------
def _ping_redis(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    problem = _ping_redis(url)
    if problem is not None:
        pytest.fail(
            f"Redis is required and not reachable at {url} ({problem}). "
            "Run the suite with `make test` (it starts one), or set REDIS_URL.",
            pytrace=False,
        )
    return url


@dataclass
class PrivateRedis:
    """A throwaway redis-server this test owns: it may stop it without touching the shared one."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is required for this test: apt-get install -y redis-server",
                pytrace=False,
            )
        argv = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _ping_redis(self.url) is not None:
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"private redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port())
    server.start()
    yield server
    server.stop()


# --- a private PostgreSQL ---------------------------------------------------------------------
@dataclass
class PrivatePostgres:
    """A throwaway cluster this test owns (ops-notes §4.1), so it may kill it."""

    port: int
    data_dir: Path
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

    def start(self) -> None:
        if os.getuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
        subprocess.run(
            [
                *self._as_postgres(),
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} "
            # synchronous_commit stays on: the audit is durable at commit, even across a crash.
            "-c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl(
            "-l", str(self.data_dir / "server.log"), "-w", "-t", "60", "-o", options, "start"
        )

    def stop_immediately(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def resume(self) -> None:
        """Start the stopped cluster again, same data, same port."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data_dir} "
            # synchronous_commit stays on: the audit is durable at commit, even across a crash.
            "-c fsync=off -c full_page_writes=off"
        )
        self._pg_ctl(
            "-l", str(self.data_dir / "server.log"), "-w", "-t", "60", "-o", options, "start"
        )

    def _pg_ctl(self, *args: str) -> None:
        argv = [*self._as_postgres(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        subprocess.run(argv, check=True, capture_output=True)


def postgres_bin_dir() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
    )
    found = [c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()]
    if not found:
        pytest.fail(
            "initdb/pg_ctl are required for this test: apt-get install -y postgresql",
            pytrace=False,
        )
    return found[-1]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    data_dir = Path(tempfile.mkdtemp(prefix="gw-pg-"))
    server = PrivatePostgres(free_port(), data_dir, postgres_bin_dir())
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop_immediately()
        shutil.rmtree(data_dir, ignore_errors=True)


# --- the gateway under test -------------------------------------------------------------------
class GatewayClient(httpx.AsyncClient):
    """An HTTP client for one in-process gateway, with that gateway's state for set-up
    (issuing API keys, reading the audit) that a test would otherwise do through the CLI."""

    state: GatewayState

    async def issue_key(self, *scopes: str) -> str:
        full, key_id, hashed = generate_key()
        row = ApiKeyRow(
            id=key_id,
            name=f"test-{key_id}",
            key_prefix=key_prefix(key_id),
            key_hash=hashed,
            scopes=tuple(scopes),
            created_at=utc_now(),
        )
        await self.state.store.insert_api_key(row)
        return full


GatewayFactory = Callable[..., Awaitable[GatewayClient]]


# Limits that tests not about them should never meet by accident: Alpaca's rate budget (an order
# never waits for a cell, so ORDER_SWEEP_NEVER_PLACED_AFTER_S may stay short in tests), the
# anonymous callers' shared quota, the key store's wait.
RELAXED_LIMITS: dict[str, float] = {
    "alpaca_data_budget_per_minute": 100_000_000,
    "alpaca_data_budget_burst": 1_000_000,
    "alpaca_trading_budget_per_minute": 100_000_000,
    "alpaca_trading_budget_burst": 1_000_000,
    "alpaca_order_budget_wait_s": 0,
    # Anonymous callers share one bucket; tests of quotas set their own.
    "anonymous_quota_per_minute": 0,
    # A key's first lookup on a loaded test machine may take longer than the production budget
    # for a hung store (0.2 s); the tests of that budget set it themselves.
    "key_store_timeout_s": 2.0,
}


def gateway_settings(emulator_process: EmulatorProcess, **overrides: Any) -> Settings:
    """Settings pointing at the emulator; nothing read from config/.env or REDIS_URL."""
    values: dict[str, Any] = {
        "alpaca_api_key_id": emulator_process.key_id,
        "alpaca_api_secret_key": emulator_process.secret_key,
        "alpaca_data_url": emulator_process.base_url,
        "alpaca_trading_url": emulator_process.base_url,
        "upstream_source_name": "emulator",
        "redis_url": None,
        "database_url": None,
        "log_level": "WARNING",
        "data_timeout_s": 1.0,
        "trading_timeout_s": 1.0,
        # Data routes open without a key unless a test says otherwise (tests/integration/
        # test_auth.py covers keys); each app gets its own embedded store file.
        "gateway_anonymous_data": True,
        "clock_poll_interval_s": 0,  # no background calls: tests count upstream calls
        # The emulator limits nothing unless told to; tests of the account's budget (test_rate_
        # budget.py, test_shared_budget.py) set their own. Here it never stands in the way.
        **RELAXED_LIMITS,
        "embedded_db_path": str(Path(tempfile.mkdtemp(prefix="gw-store-")) / "gateway.sqlite3"),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def make_gateway(emulator_process: EmulatorProcess) -> AsyncIterator[GatewayFactory]:
    """Build a gateway app (lifespan entered) and an HTTP client for it, in this event loop."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> GatewayClient:
            app = create_app(gateway_settings(emulator_process, **overrides))
            state = await stack.enter_async_context(app.router.lifespan_context(app))

            async def with_state(scope: Any, receive: Any, send: Any) -> None:
                # What an ASGI server does with lifespan state: a copy per request.
                scope["state"] = dict(state or {})
                await app(scope, receive, send)

            transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
            client = GatewayClient(transport=transport, base_url="http://gateway.test")
            client.state = state["gateway"]
            stack.push_async_callback(client.aclose)
            return client

        yield make


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> GatewayClient:
    """A gateway with the default in-process cache."""
    return await make_gateway()
