"""The gateway as users run it, `python -m app.serve` in its own process, for the tests that
need a real server: JSON log lines, several workers, a real Prometheus scraping it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx
import pytest

from tests.conftest import RELAXED_LIMITS, free_port
from tests.emulator.process import EmulatorProcess
from tests.support.processes import StopsOnExit

REPO_ROOT = Path(__file__).resolve().parents[1]


def emulator_env(emulator: EmulatorProcess, **settings: str) -> dict[str, str]:
    """This process's environment, pointed at the emulator, plus `settings` (env names)."""
    env = {
        **os.environ,
        "ALPACA_API_KEY_ID": emulator.key_id,
        "ALPACA_API_SECRET_KEY": emulator.secret_key,
        "ALPACA_DATA_URL": emulator.base_url,
        "ALPACA_TRADING_URL": emulator.base_url,
        "UPSTREAM_SOURCE_NAME": "emulator",
        # The emulator limits nothing unless told to; budget tests set their own.
        **{name.upper(): str(value) for name, value in RELAXED_LIMITS.items()},
    }
    env.update(settings)
    return env


class ServedGateway(StopsOnExit):
    """Started and answering /health on `__enter__`, stopped (SIGTERM, then kill) on exit."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        workers: int = 1,
        server: str | None = None,
        start_timeout_s: float = 20,
    ) -> None:
        """`server`: granian or uvicorn; None takes the default, as `make run` does."""
        self.env = dict(env)
        if server is not None:
            self.env["GATEWAY_SERVER"] = server
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._workers = workers
        self._start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        env = {
            **self.env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_WORKERS": str(self._workers),
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.serve"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: stopping or killing it reaches the server's workers too,
                # which a signal to the supervisor alone would leave running as orphans.
                start_new_session=True,
            )
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            try:
                if httpx.get(self.base_url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    "the gateway did not start:\n" + self.log_path.read_text()[-3000:],
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL after 15 s; whatever of the group is left
        (a worker whose supervisor did not wait for it) is killed too."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        self._signal_group(signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a machine or container dies: no
        shutdown, no goodbye to Redis or the store."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()
