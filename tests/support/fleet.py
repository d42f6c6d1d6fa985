"""Several gateway processes behind a real load balancer, as a team runs replicas.

`GatewayFleet(env, tmp_path, instances=4)` starts `instances` gateways (`python -m app.serve`,
the environment `env` plus each one's own port, log, embedded store file and `GATEWAY_INSTANCE`
name) and nginx in front of them, round-robin, on a free port. Clients talk to `base_url`; a test
that needs one replica (its metrics, its log, to SIGKILL it) reaches it through `instances`.

nginx runs from a temporary prefix with its own nginx.conf, pid file and logs; the system's
/etc/nginx is never read. Like a production balancer it retries an idempotent request on another
replica when one refuses the connection, and never retries a POST.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import free_port
from tests.emulator.process import EmulatorProcess
from tests.served import ServedGateway, emulator_env
from tests.support.processes import StopsOnExit

START_TIMEOUT_S = 10.0
DEADLINE_S = 30.0  # what a fleet test waits for something to happen, at most

_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 4096; }}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;

    upstream gateways {{
{servers}
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        location = /balancer-health {{ return 200 "ok"; }}
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_headers on;
            proxy_next_upstream error timeout;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH often lacks.
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.fail("nginx is not installed (apt-get install -y nginx)", pytrace=False)
    return binary


def counted_fleet_env(
    emulator: EmulatorProcess, redis_url: str, namespace: str, **settings: str
) -> dict[str, str]:
    """A fleet's environment for a test that counts upstream calls: one Redis namespace, no
    PostgreSQL (each instance its own embedded store), no background calls, few logs."""
    env = emulator_env(
        emulator,
        REDIS_URL=redis_url,
        CACHE_NAMESPACE=namespace,
        GATEWAY_ANONYMOUS_DATA="true",
        CLOCK_POLL_INTERVAL_S="0",  # no background calls: the test counts upstream calls
        ORDER_SWEEP_INTERVAL_S="0",
        LOG_LEVEL="WARNING",
        **settings,
    )
    env.pop("DATABASE_URL", None)  # each instance its own embedded store
    return env


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Until `check` holds; a test failure after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S:g} s: {what}")
        await asyncio.sleep(0.02)


async def forget_namespace(redis_url: str, namespace: str) -> None:
    """Delete what a fleet left under `namespace` in Redis."""
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class Balancer(StopsOnExit):
    """nginx round-robin over `ports` on 127.0.0.1; started on enter, stopped on exit."""

    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._prefix = Path(tempfile.mkdtemp(prefix="gw-balancer-"))
        self._process: subprocess.Popen[bytes] | None = None

    def _conf(self) -> Path:
        user = ""
        if os.geteuid() == 0:
            # A root master hands its worker to an unprivileged user, which must reach the prefix.
            nobody = pwd.getpwnam("nobody")
            user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
            self._prefix.chmod(0o755)
        # max_fails=0: a replica that fails is tried again at once, so a test sees every replica.
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in self._ports)
        conf = self._prefix / "nginx.conf"
        conf.write_text(
            _CONF.format(prefix=self._prefix, user=user, servers=servers, port=self.port)
        )
        return conf

    def __enter__(self) -> Self:
        conf = self._conf()
        argv = [nginx_binary(), "-p", str(self._prefix), "-c", str(conf)]
        argv += ["-e", str(self._prefix / "error.log")]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self._process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base_url + "/balancer-health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        log = (
            (self._prefix / "error.log").read_text()
            if (self._prefix / "error.log").exists()
            else ""
        )
        self.stop()
        pytest.fail(f"nginx did not start:\n{log[-3000:]}", pytrace=False)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self._prefix, ignore_errors=True)


class GatewayFleet:
    """`instances` gateways sharing `env` (one Redis, one emulator) behind one `Balancer`."""

    def __init__(
        self,
        env: dict[str, str],
        tmp_path: Path,
        *,
        instances: int = 4,
        server: str | None = None,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.instances = [
            ServedGateway(
                {
                    "EMBEDDED_DB_PATH": str(tmp_path / f"gateway-{i}.sqlite3"),
                    **env,
                    "GATEWAY_INSTANCE": f"gw-{i}",
                },
                tmp_path / f"gateway-{i}.log",
                server=server,
            )
            for i in range(instances)
        ]
        self.balancer: Balancer | None = None
        self._stack = contextlib.ExitStack()

    @property
    def base_url(self) -> str:
        if self.balancer is None:
            raise RuntimeError("the fleet is not running")
        return self.balancer.base_url

    def __enter__(self) -> Self:
        with self._stack as stack:
            for gateway in self.instances:
                stack.enter_context(gateway)
            self.balancer = stack.enter_context(Balancer([g.port for g in self.instances]))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def kill(self, index: int) -> None:
        """SIGKILL one replica, as a crash would: no shutdown, no goodbye to Redis."""
        self.instances[index].kill()

    def restart(self, index: int) -> None:
        """Start a killed replica again, on its port, behind the same balancer."""
        gateway = self.instances[index]
        if gateway.process is None or gateway.process.poll() is not None:
            gateway.__enter__()  # its exit is already on the fleet's stack
