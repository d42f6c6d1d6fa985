"""The gateway as its own process in front of the emulator, for the CI kit and ``make demo``.

It is started as ``make run`` starts it (``python -m app.serve``, settings from the
environment) and its keys are made as an operator makes them (``python -m app.cli keys
create``), so what a user's CI or the demo exercises is the gateway they would deploy. Nothing
here needs a development requirement (health is probed with urllib, not httpx): the kit also
runs in a container built from requirements.txt.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from .process import EmulatorProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 60.0
ALL_SCOPES = "data:read,trading:read,trading:write"


class GatewayStartError(RuntimeError):
    """The gateway, or the CLI making its key, did not come up; the message says why."""


def emulator_env(base: Mapping[str, str], emulator: EmulatorProcess) -> dict[str, str]:
    """``base`` pointed at the emulator: its URL and key pair, and ``provenance.source`` saying
    ``emulator`` (never ``alpaca``)."""
    env = dict(base)
    env.update(
        ALPACA_DATA_URL=emulator.base_url,
        ALPACA_TRADING_URL=emulator.base_url,
        ALPACA_API_KEY_ID=emulator.key_id,
        ALPACA_API_SECRET_KEY=emulator.secret_key,
        UPSTREAM_SOURCE_NAME="emulator",
    )
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS calls free now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def run_cli(env: Mapping[str, str], cwd: Path | None, *args: str) -> str:
    """``python -m app.cli ARGS`` as an operator runs it; its stdout. GatewayStartError if it
    fails (its stderr is the message)."""
    argv = [sys.executable, "-m", "app.cli", *args]
    try:
        done = subprocess.run(
            argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise GatewayStartError(f"`python -m app.cli {' '.join(args)}` timed out") from exc
    if done.returncode != 0:
        raise GatewayStartError(f"`python -m app.cli {' '.join(args)}` failed:\n{done.stderr}")
    return done.stdout


def create_key(env: Mapping[str, str], cwd: Path | None, name: str, scopes: str) -> str:
    """A new key made with the CLI, which prints it as its last line."""
    return run_cli(env, cwd, "keys", "create", "--name", name, "--scopes", scopes).split()[-1]


class GatewayProcess:
    """``python -m app.serve`` with ``env`` (GATEWAY_HOST/GATEWAY_PORT set here), from ``cwd``."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        host: str,
        port: int,
        cwd: Path | None = None,
        output: IO[str] | IO[bytes] | None = None,
    ) -> None:
        self.env = {**env, "GATEWAY_HOST": host, "GATEWAY_PORT": str(port)}
        self.base_url = f"http://{reachable_host(host)}:{port}"
        self._cwd = cwd
        self._output = output
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def returncode(self) -> int | None:
        """None while it runs."""
        return None if self._process is None else self._process.poll()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start it and wait until ``/health`` answers 200; GatewayStartError otherwise."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            env=self.env,
            cwd=self._cwd,
            stdout=self._output,
            stderr=subprocess.STDOUT if self._output is not None else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise GatewayStartError(f"the gateway exited with status {self.returncode}")
            if _healthy(f"{self.base_url}/health"):
                return
            time.sleep(0.2)
        self.stop()
        raise GatewayStartError(f"the gateway did not answer {self.base_url}/health in time")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; safe to call twice."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reachable_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host`` (a wildcard address
    answers on the loopback one)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - http://host:port
            status: int = response.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False  # not listening yet


def repo_pythonpath(base: Mapping[str, str]) -> str:
    """PYTHONPATH with the repository first, so ``-m app.serve`` works from any directory."""
    rest = base.get("PYTHONPATH")
    return os.pathsep.join([str(REPO_ROOT), rest]) if rest else str(REPO_ROOT)
