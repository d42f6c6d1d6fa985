"""Load generators behind one interface, chosen explicitly (LOAD=wrk or LOAD=aio), never by
whatever happens to be installed.

``closed_loop`` measures throughput: wrk (Debian's package), or with ``LOAD=aio`` the asyncio
generator in ``aioload`` (about 2.5k req/s at most, so it caps every row it measures).
``fixed_rate`` measures latency below saturation with ``paced``, our open-loop generator.
Every run is a child process with a hard timeout, pinned to the load core, aimed at 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PCT_LUA = Path(__file__).with_name("pct.lua")
REPO_ROOT = Path(__file__).resolve().parents[2]
LOADS = ("wrk", "aio")
INSTALL_HINT = "apt-get install -y wrk nginx"
RUN_GRACE_S = 20.0  # a load run is killed this long after its planned end


@dataclass(frozen=True)
class LoadResult:
    tool: str
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    duration_s: float
    status_errors: int  # answers outside 2xx/3xx
    socket_errors: int  # connect/read/write errors and timeouts
    statuses: Mapping[str, int] = field(default_factory=dict)  # when the tool reports them
    send_lag_p99_ms: float | None = None  # paced only: how late the generator itself sent

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors


@dataclass(frozen=True)
class Cores:
    """Where the servers under test and the load run; empty prefixes when pinning is impossible."""

    gateway: int | None
    load: int | None

    @classmethod
    def detect(cls) -> Cores:
        try:
            available = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return cls(None, None)
        if len(available) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(available[0], available[1])

    def prefix(self, core: int | None) -> list[str]:
        return [] if core is None else ["taskset", "-c", str(core)]

    def describe(self) -> str:
        if self.gateway is None:
            return "not pinned (needs taskset and 2 cores)"
        return (
            f"servers under test (gateway, bare app, nginx) on core {self.gateway};"
            f" load generator, emulator and this script on core {self.load}"
        )


class Tools:
    def __init__(self, cores: Cores, load: str) -> None:
        if load not in LOADS:
            raise ValueError(f"LOAD={load!r}: one of {', '.join(LOADS)}")
        self.cores = cores
        self.load = load
        self.wrk = shutil.which("wrk")
        if load == "wrk" and self.wrk is None:
            raise SystemExit(
                f"wrk is not installed. Install it (and nginx) with: {INSTALL_HINT}\n"
                "or measure with the slower asyncio generator, named: make bench LOAD=aio"
            )

    def describe(self) -> str:
        closed = "wrk -t1" if self.load == "wrk" else "aioload (asyncio; LOAD=aio, ~2.5k req/s cap)"
        return f"closed loop: {closed}; fixed rate: paced (open loop, latency from due time)"

    async def closed_loop(self, url: str, duration_s: float, connections: int) -> LoadResult:
        _loopback_only(url)
        pin = self.cores.prefix(self.cores.load)
        if self.wrk is not None and self.load == "wrk":
            argv = [*pin, self.wrk, "-t1", f"-c{connections}", f"-d{duration_s:g}s"]
            argv += ["--timeout", "5s", "-s", str(PCT_LUA), url]
            out = await run_command(argv, duration_s + RUN_GRACE_S)
            return _from_json("wrk", _last_json_line(out))
        argv = [*pin, *_module("aioload"), "--url", url, "--duration", f"{duration_s:g}"]
        argv += ["--connections", str(connections)]
        out = await run_command(argv, duration_s + RUN_GRACE_S)
        return _from_json("aioload", _last_json_line(out))

    async def fixed_rate(
        self,
        url: str,
        rate: float,
        *,
        duration_s: float | None = None,
        requests: int | None = None,
    ) -> LoadResult:
        """``rate`` requests/s, for ``duration_s`` or until ``requests`` are sent."""
        _loopback_only(url)
        if (duration_s is None) == (requests is None):
            raise ValueError("give exactly one of duration_s and requests")
        planned_s = duration_s if duration_s is not None else (requests or 0) / rate
        argv = [*self.cores.prefix(self.cores.load), *_module("paced"), "--url", url]
        argv += ["--rate", f"{rate:.2f}"]
        argv += ["--duration", f"{duration_s:g}"] if duration_s is not None else []
        argv += ["--requests", str(requests)] if requests is not None else []
        out = await run_command(argv, planned_s + RUN_GRACE_S)
        return _from_json("paced", _last_json_line(out))


def _module(name: str) -> list[str]:
    return [sys.executable, "-m", f"tests.performance.{name}"]


def _loopback_only(url: str) -> None:
    if urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"benchmarks target 127.0.0.1 only, not {url!r}")


async def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run a child to completion within ``timeout_s``; killed on timeout or cancellation."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        program = argv[3] if argv[0] == "taskset" else argv[0]
        detail = stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{program} exited {process.returncode}: {detail}")
    return stdout.decode(errors="replace")


def _last_json_line(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            doc: dict[str, Any] = json.loads(line)
            return doc
    raise RuntimeError(f"no JSON summary in the generator's output:\n{output[-2000:]}")


def _from_json(tool: str, doc: Mapping[str, Any]) -> LoadResult:
    lag = doc.get("send_lag_p99_ms")
    return LoadResult(
        tool=tool,
        requests=int(doc["requests"]),
        rps=float(doc["rps"]),
        p50_ms=float(doc["p50_ms"]),
        p90_ms=float(doc["p90_ms"]),
        p99_ms=float(doc["p99_ms"]),
        max_ms=float(doc["max_ms"]),
        duration_s=float(doc["duration_s"]),
        status_errors=int(doc["status_errors"]),
        socket_errors=int(doc["socket_errors"]),
        statuses=dict(doc.get("statuses", {})),
        send_lag_p99_ms=None if lag is None else float(lag),
    )
