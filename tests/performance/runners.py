"""Load generators behind one interface: wrk / hey when installed, else ``aioload``.

``closed_loop`` measures throughput (wrk, or the asyncio generator). ``fixed_rate`` measures
latency below saturation (hey with ``-q``, or the asyncio generator on a fixed schedule).
Every run is a child process with a hard timeout, pinned to the load core when possible, and
aimed at 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import math
import os
import shutil
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.performance.aioload import percentile

PCT_LUA = Path(__file__).with_name("pct.lua")
REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "apt-get install -y wrk hey"
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

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors


@dataclass(frozen=True)
class Cores:
    """Where the gateway and the load run; empty prefixes when pinning is not possible."""

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
        return f"gateway on core {self.gateway}, load generator on core {self.load}"


class Tools:
    """Which generators are installed; decided once per run."""

    def __init__(self, cores: Cores) -> None:
        self.cores = cores
        self.wrk = shutil.which("wrk")
        self.hey = shutil.which("hey")

    def missing_notice(self) -> str | None:
        missing = [name for name in ("wrk", "hey") if getattr(self, name) is None]
        if not missing:
            return None
        return (
            f"{' and '.join(missing)} not installed: install with `{INSTALL_HINT}`;"
            " falling back to the asyncio/aiohttp generator (tests.performance.aioload),"
            " which is slower than the gateway and may understate its throughput"
        )

    def describe(self) -> str:
        closed = "wrk" if self.wrk else "aioload (asyncio)"
        rate = "hey -q" if self.hey else "aioload fixed schedule"
        return f"closed loop: {closed}; fixed rate: {rate}"

    async def closed_loop(self, url: str, duration_s: int, connections: int = 16) -> LoadResult:
        _loopback_only(url)
        pin = self.cores.prefix(self.cores.load)
        if self.wrk is not None:
            argv = [*pin, self.wrk, "-t1", f"-c{connections}", f"-d{duration_s}s"]
            argv += ["--timeout", "5s", "-s", str(PCT_LUA), url]
            out = await run_command(argv, duration_s + RUN_GRACE_S)
            return _from_json("wrk", _last_json_line(out))
        argv = [*pin, *_aioload(url), "--duration", str(duration_s)]
        argv += ["--connections", str(connections)]
        out = await run_command(argv, duration_s + RUN_GRACE_S)
        return _from_json("aioload", _last_json_line(out))

    async def fixed_rate(
        self,
        url: str,
        rate: float,
        *,
        duration_s: int | None = None,
        requests: int | None = None,
        workers: int = 4,
    ) -> LoadResult:
        """``rate`` requests/s in total, for ``duration_s`` or until ``requests`` are sent."""
        _loopback_only(url)
        if (duration_s is None) == (requests is None):
            raise ValueError("give exactly one of duration_s and requests")
        planned_s = duration_s if duration_s is not None else (requests or 0) / rate
        pin = self.cores.prefix(self.cores.load)
        if self.hey is not None:
            argv = [*pin, self.hey, "-c", str(workers), "-q", f"{rate / workers:.2f}"]
            argv += ["-z", f"{duration_s}s"] if duration_s is not None else ["-n", str(requests)]
            argv += ["-t", "5", "-o", "csv", "-cpus", "1", url]
            out = await run_command(argv, planned_s + RUN_GRACE_S)
            return _from_hey_csv(out, expected=requests)
        argv = [*pin, *_aioload(url), "--rate", f"{rate:.2f}"]
        argv += ["--duration", str(duration_s)] if duration_s is not None else []
        argv += ["--requests", str(requests)] if requests is not None else []
        out = await run_command(argv, planned_s + RUN_GRACE_S)
        return _from_json("aioload", _last_json_line(out))


def _aioload(url: str) -> list[str]:
    return [sys.executable, "-m", "tests.performance.aioload", "--url", url]


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
    )


def _from_hey_csv(output: str, *, expected: int | None) -> LoadResult:
    """hey ``-o csv``: one row per answered request (failed ones are left out)."""
    rows = list(csv.DictReader(io.StringIO(output)))
    latencies = sorted(float(row["response-time"]) for row in rows)
    statuses = Counter(row["status-code"] for row in rows)
    ends = [float(row["offset"]) + float(row["response-time"]) for row in rows]
    duration = max(ends, default=0.0)
    status_errors = sum(n for code, n in statuses.items() if not 200 <= int(code) < 400)
    missing = max(0, expected - len(rows)) if expected is not None else 0
    return LoadResult(
        tool="hey",
        requests=len(rows),
        rps=len(rows) / duration if duration > 0 else 0.0,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else math.nan) * 1000,
        duration_s=duration,
        status_errors=status_errors,
        socket_errors=missing,
        statuses=dict(sorted(statuses.items())),
    )
