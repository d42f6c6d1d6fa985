"""The gateway under test: one pinned uvicorn worker, a child process, in front of the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from app.settings import Settings
from tests.emulator.process import EmulatorProcess
from tests.performance.runners import REPO_ROOT, Cores

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def gateway_env(emulator: EmulatorProcess, extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any gateway setting, then the emulator's and ``extra``.

    Settings inherited from a developer's shell (REDIS_URL, a real ALPACA_DATA_URL ...) would
    change what is measured, so every name `Settings` reads is dropped first.
    """
    settings_names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    env.update(
        LOG_LEVEL="WARNING",
        ALPACA_DATA_URL=emulator.base_url,
        ALPACA_TRADING_URL=emulator.base_url,
        ALPACA_API_KEY_ID=emulator.key_id,
        ALPACA_API_SECRET_KEY=emulator.secret_key,
        UPSTREAM_SOURCE_NAME="emulator",
        # Measures the data path itself; a keyed request adds one cached key check on top.
        GATEWAY_ANONYMOUS_DATA="true",
        EMBEDDED_DB_PATH=str(Path(tempfile.mkdtemp(prefix="bench-store-")) / "gateway.sqlite3"),
        CLOCK_POLL_INTERVAL_S="0",
    )
    env.update(extra)
    return env


class GatewayProcess:
    """``async with GatewayProcess(...) as gw``: started and answering /health, then stopped."""

    def __init__(
        self,
        emulator: EmulatorProcess,
        cores: Cores,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self._env = gateway_env(emulator, extra_env or {})
        self._cores = cores
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[str] | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    async def __aenter__(self) -> Self:
        # Open for the life of the child (it writes there), closed in stop().
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        argv = [*self._cores.prefix(self._cores.gateway), sys.executable, "-m", "uvicorn"]
        argv += ["app.main:app", "--host", HOST, "--port", str(self.port)]
        argv += ["--no-access-log", "--log-level", "warning"]
        self._process = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO_ROOT, env=self._env, stdout=self._log, stderr=self._log
        )
        try:
            await self._wait_healthy()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.returncode is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.url("/health"))).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the gateway did not answer /health in time; its log:\n{self.log()}")

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-4000:] or "(empty)"

    async def stop(self) -> None:
        """Terminate (kill after STOP_TIMEOUT_S); safe to call twice, also while cancelled."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), STOP_TIMEOUT_S)
            except (TimeoutError, asyncio.CancelledError):
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(self.url(path))
        return response.status_code, response.json()
