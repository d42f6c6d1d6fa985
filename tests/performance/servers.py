"""ASGI apps under test as child processes: one worker, pinned, served by uvicorn or granian.

The gateway and the bare reference app get exactly the same command line apart from the
import target, so the ratio between them measures the application, not the server set-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from tests.performance.runners import REPO_ROOT, Cores

SERVERS = ("uvicorn", "granian")
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def server_argv(server: str, target: str, port: int) -> list[str]:
    """One worker, no access log (the gateway writes its own), warnings only.

    uvicorn[standard] picks uvloop and httptools by itself; granian (Rust HTTP, Python worker
    in a child process) is asked for its ASGI interface, HTTP/1 only and no websockets, since
    the gateway serves neither HTTP/2 nor websockets.
    """
    bin_dir = Path(sys.executable).parent
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port),
            "--workers", "1", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    if server == "granian":
        return [
            str(bin_dir / "granian"), "--interface", "asgi", "--host", HOST, "--port", str(port),
            "--workers", "1", "--http", "1", "--no-ws", "--no-access-log",
            "--log-level", "warning", target,
        ]  # fmt: skip
    raise ValueError(f"unknown server {server!r}; one of {', '.join(SERVERS)}")


class ServedApp:
    """``async with ServedApp(...) as app``: started, answering ``health_path``, then stopped."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cores: Cores,
        port: int,
        health_path: str = "/health",
        scratch: Path | None = None,
    ) -> None:
        self.name = name
        self._argv = [*cores.prefix(cores.gateway), *argv]
        self._env = dict(env)
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        self._health_path = health_path
        self._scratch = scratch  # a temporary directory of the app's, deleted after it stops
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[str] | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    async def __aenter__(self) -> Self:
        # Open for the life of the child (it writes there), closed in stop().
        self._log = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self._process = await asyncio.create_subprocess_exec(
            *self._argv, cwd=REPO_ROOT, env=self._env, stdout=self._log, stderr=self._log
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
                    if (await client.get(self.url(self._health_path))).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {self._health_path} in time:\n{self.log()}")

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-4000:] or "(empty log)"

    def worker_pid(self) -> int:
        """The process that runs the app: the server itself (uvicorn, one worker, no
        supervisor) or its only child (granian's worker)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return only_child_or_self(self._process.pid)  # taskset execs the server: same pid

    def worker_rss_mib(self) -> float:
        return rss_mib(self.worker_pid())

    def worker_cpu_s(self) -> float:
        return cpu_seconds(self.worker_pid())

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
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=5.0) as client:
            return await client.get(self.url(path))


def children(pid: int) -> list[int]:
    """Child processes of PID, from every one of its threads."""
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def only_child_or_self(pid: int) -> int:
    found = children(pid)
    if len(found) > 1:
        raise RuntimeError(f"process {pid} has {len(found)} children, not one worker")
    return found[0] if found else pid


def rss_mib(pid: int) -> float:
    """VmRSS from /proc/PID/status, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of PID so far (/proc/PID/stat, clock ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
