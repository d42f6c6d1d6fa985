"""The real processes a chaos scenario runs, and the few ways it reads them.

`rig(emulator, workdir)` starts a throwaway redis-server and PostgreSQL cluster on free ports
(tests/conftest.py's PrivateRedis / PrivatePostgres: the shared servers on 6379 and 5432 are
never touched), resets the emulator, and hands out a `Rig` that starts gateways on them with
`python -m app.serve` (tests/served.py), creates API keys with `python -m app.cli keys create`,
kills and restarts each of them, and reads the gateway's metrics and the order audit.

Everything that blocks (pg_ctl, starting a server and waiting for it) runs in a thread, so the
load running in the same event loop keeps sending while a dependency dies or comes back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PrivatePostgres, PrivateRedis, free_port, postgres_bin_dir
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.served import REPO_ROOT, ServedGateway, emulator_env

# Settings every chaos gateway runs with: JSON logs to read after a failure, no background
# calls that would blur the emulator's call counts, per-key quotas out of the way (one key
# carries the whole load; quotas are not what these scenarios measure), and Alpaca's budget
# as the emulated account has it (10,000 calls a minute, the emulator's default).
BASE_SETTINGS = {
    "LOG_JSON": "true",
    "LOG_LEVEL": "WARNING",
    "CLOCK_POLL_INTERVAL_S": "0",
    "KEY_QUOTA_PER_MINUTE": "10000000",
    "KEY_QUOTA_BURST": "1000000",
    "ALPACA_DATA_BUDGET_PER_MINUTE": "10000",
    "ALPACA_DATA_BUDGET_BURST": "1000",
    "ALPACA_TRADING_BUDGET_PER_MINUTE": "10000",
    "ALPACA_TRADING_BUDGET_BURST": "1000",
}
ALL_SCOPES = "data:read,trading:read,trading:write"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Rig:
    emulator: EmulatorProcess
    control: EmulatorControl
    redis: PrivateRedis
    postgres: PrivatePostgres
    workdir: Path

    def gateway_env(self, **settings: str) -> dict[str, str]:
        """The environment of a gateway on this rig's emulator, Redis and PostgreSQL."""
        chosen = {
            **BASE_SETTINGS,
            "REDIS_URL": self.redis.url,
            "DATABASE_URL": self.postgres.url,
            **settings,
        }
        return emulator_env(self.emulator, **chosen)

    async def start_gateway(self, env: Mapping[str, str], name: str) -> ServedGateway:
        """`python -m app.serve` (granian, one worker, as `make run`), answering /health."""
        gateway = ServedGateway(dict(env), self.workdir / f"{name}.log")
        return await asyncio.to_thread(gateway.__enter__)

    async def create_key(self, env: Mapping[str, str], scopes: str = ALL_SCOPES) -> str:
        return await create_key(env, scopes)

    async def start_keyed_gateway(
        self, env: Mapping[str, str], name: str, scopes: str = ALL_SCOPES
    ) -> tuple[ServedGateway, str]:
        """A key made and a gateway started side by side (each a second of Python start-up;
        both migrate the empty store, which PostgreSQL's advisory lock serialises)."""
        started, made = await asyncio.gather(
            self.start_gateway(env, name), self.create_key(env, scopes), return_exceptions=True
        )
        if isinstance(made, BaseException):
            if isinstance(started, ServedGateway):
                await asyncio.to_thread(started.stop)
            raise made
        if isinstance(started, BaseException):
            raise started
        return started, made

    async def kill_redis(self) -> None:
        await asyncio.to_thread(self.redis.stop)  # SIGKILL: no save, no goodbye

    async def restart_redis(self) -> None:
        """A new, empty redis-server on the same port (as after a crash with no persistence)."""
        await asyncio.to_thread(self.redis.start)

    async def stop_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.stop_immediately)

    async def restart_postgres(self) -> None:
        await asyncio.to_thread(self.postgres.resume)

    async def audit_statuses(self) -> dict[str, list[str]]:
        """client_order_id -> the status of each of its order_audit rows, oldest first."""
        connection = await asyncpg.connect(self.postgres.url, timeout=10)
        try:
            rows = await connection.fetch(
                "SELECT client_order_id, status FROM order_audit ORDER BY id"
            )
        finally:
            await connection.close()
        statuses: dict[str, list[str]] = {}
        for row in rows:
            statuses.setdefault(row["client_order_id"], []).append(row["status"])
        return statuses

    async def data_calls(self) -> int:
        """Requests the emulator received on the market-data paths (the `data` breaker's)."""
        calls = await self.control.calls()
        return sum(n for path, n in calls.items() if path.startswith("/v2/stocks/"))


async def create_key(env: Mapping[str, str], scopes: str = ALL_SCOPES) -> str:
    """A key made as an operator makes one: `python -m app.cli keys create` (its last line),
    in the store `env` names."""
    argv = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "chaos"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*argv, "--scopes", scopes],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"keys create exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


async def scrape(client: httpx.AsyncClient, base_url: str) -> Samples:
    """Every sample of the gateway's /metrics, keyed by (name, labels)."""
    response = await client.get(base_url + "/metrics")
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class CopiedPostgres(PrivatePostgres):
    """A PrivatePostgres whose cluster is a copy of one made once per process by initdb (the
    slowest part of a rig's start): `cp -a` keeps the owner and the 0700 mode PostgreSQL
    requires, and a never-started cluster holds nothing run-specific."""

    def start(self) -> None:
        template = _template_cluster(self.bin_dir)
        subprocess.run(["cp", "-a", f"{template}/.", str(self.data_dir)], check=True)
        if os.getuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
        self.resume()


@cache
def _template_cluster(bin_dir: Path) -> Path:
    """initdb, as PrivatePostgres.start runs it, once per process; removed at exit."""
    where = Path(tempfile.mkdtemp(prefix="gw-chaos-pg-template-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if as_postgres:
        shutil.chown(where, "postgres", "postgres")
    initdb = [str(bin_dir / "initdb"), "-D", str(where), "-U", "postgres", "--auth=trust"]
    subprocess.run(
        [*as_postgres, *initdb, "-E", "UTF8", "--no-instructions"],
        check=True,
        capture_output=True,
    )
    return where


@contextlib.asynccontextmanager
async def rig(emulator: EmulatorProcess, workdir: Path) -> AsyncIterator[Rig]:
    """A private Redis and PostgreSQL, a freshly reset emulator; all stopped and removed after."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    redis = PrivateRedis(free_port())
    pg_dir = Path(tempfile.mkdtemp(prefix="gw-chaos-pg-"))
    postgres = CopiedPostgres(free_port(), pg_dir, postgres_bin_dir())
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, pg_dir, ignore_errors=True)
        await asyncio.to_thread(redis.start)
        stack.callback(redis.stop)
        await asyncio.to_thread(postgres.start)
        stack.callback(_stop_quietly, postgres)
        control = EmulatorControl(emulator.base_url)
        stack.push_async_callback(control.aclose)
        # Reset last (faults cleared, hung requests released, no walk, default budget): the
        # emulator may be the test session's, shared with tests that expect a quiet one.
        stack.push_async_callback(control.reset)
        await control.reset()
        yield Rig(emulator, control, redis, postgres, workdir)


def _stop_quietly(postgres: PrivatePostgres) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        postgres.stop_immediately()
