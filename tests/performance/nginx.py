"""nginx with `proxy_cache` in front of the emulator: what an ops team would put there instead.

One worker, answers cached for 1 s (the gateway's quote TTL), `proxy_cache_lock` so one request
per expiry goes upstream, keep-alive to the upstream. It serves the gateway's path
(/v1/stocks/SYMBOL/quote) by asking the emulator's latest-quotes endpoint with the API key
headers, and returns Alpaca's answer untranslated (no provenance, no typed errors: that is
the gateway's value, and its cost).

Everything lives in a temporary prefix: its own nginx.conf, pid file, logs, temp and cache
directories; it listens on 127.0.0.1 only; the system's /etc/nginx is never read. Pinned like
the gateway (the worker inherits the master's CPU affinity). Stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from tests.emulator.process import EmulatorProcess
from tests.performance.runners import Cores
from tests.performance.servers import HOST, children, cpu_seconds, free_port

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
QUOTES_PATH = "/v2/stocks/quotes/latest"

CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 1024; }}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    keepalive_requests 1000000;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=quotes:10m max_size=64m inactive=60s;

    upstream emulator {{
        server {upstream};
        keepalive 16;
    }}

    server {{
        listen {host}:{port};
        location ~ ^/v1/stocks/([A-Z0-9.]+)/quote$ {{
            proxy_pass http://emulator{quotes_path}?symbols=$1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header APCA-API-KEY-ID "{key_id}";
            proxy_set_header APCA-API-SECRET-KEY "{secret_key}";
            proxy_cache quotes;
            proxy_cache_key $uri;
            proxy_cache_valid 200 1s;
            proxy_cache_lock on;
        }}
        location = /health {{ return 200 "ok"; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    # Debian installs it in /usr/sbin, which a non-root PATH often lacks.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


class NginxCache:
    """``async with NginxCache(emulator, cores) as nginx``: started, answering, then stopped."""

    def __init__(self, emulator: EmulatorProcess, cores: Cores) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed: apt-get install -y nginx")
        self._binary = binary
        self._emulator = emulator
        self._cores = cores
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self._prefix: Path | None = None
        self._process: asyncio.subprocess.Process | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def _write_conf(self, prefix: Path) -> Path:
        user = ""
        if os.geteuid() == 0:
            # A root master hands the worker to an unprivileged user; it must reach the cache.
            nobody = pwd.getpwnam("nobody")
            group = grp.getgrgid(nobody.pw_gid).gr_name
            user = f"user nobody {group};"
            for directory in (prefix, *(prefix / d for d in ("cache", "proxy_temp"))):
                directory.mkdir(exist_ok=True)
                os.chown(directory, nobody.pw_uid, nobody.pw_gid)
            prefix.chmod(0o755)
        conf = prefix / "nginx.conf"
        conf.write_text(
            CONF.format(
                prefix=prefix,
                user=user,
                host=HOST,
                port=self.port,
                upstream=self._emulator.base_url.removeprefix("http://"),
                quotes_path=QUOTES_PATH,
                key_id=self._emulator.key_id,
                secret_key=self._emulator.secret_key,
            )
        )
        return conf

    async def __aenter__(self) -> Self:
        self._prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        conf = self._write_conf(self._prefix)
        argv = [*self._cores.prefix(self._cores.gateway), self._binary]
        argv += ["-p", str(self._prefix), "-c", str(conf), "-e", str(self._prefix / "error.log")]
        self._process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await self._wait_ready()
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

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with httpx.AsyncClient(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.returncode is not None:
                    break
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.url("/health"))).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def worker_cpu_s(self) -> float:
        """CPU time of the one worker (the master supervises; the cache manager and loader
        are children too, told apart by the title nginx gives each process)."""
        if self._process is None:
            raise RuntimeError("nginx is not running")
        for child in children(self._process.pid):
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"nginx: worker process"):
                return cpu_seconds(child)
        raise RuntimeError("no nginx worker process found")

    def log(self) -> str:
        if self._prefix is None or not (self._prefix / "error.log").exists():
            return "(no error.log)"
        return (self._prefix / "error.log").read_text()[-4000:]

    async def stop(self) -> None:
        """SIGTERM to the master (it stops its worker); kill after STOP_TIMEOUT_S; then the
        prefix is deleted. Safe to call twice."""
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
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None
