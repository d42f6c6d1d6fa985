"""A real Redis Cluster of three masters, started for one test and torn down after it.

`RedisClusterServers()` starts three `redis-server --cluster-enabled yes` on free ports, each in
its own temporary directory (its nodes.conf, no persistence), joins them with `redis-cli
--cluster create ... --cluster-replicas 0` and waits until every node reports cluster_state:ok.
It never touches the shared Redis. `url` names one node; a cluster client discovers the rest.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest
import redis

from tests.conftest import free_port
from tests.support.processes import StopsOnExit

START_TIMEOUT_S = 20.0


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is required for this test: apt-get install -y redis-server")
    return found


def _pings(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisClusterServers(StopsOnExit):
    """Three cluster-enabled masters covering all 16384 slots; started on enter."""

    def __init__(self, masters: int = 3) -> None:
        self.ports = [free_port() for _ in range(masters)]
        # The cluster bus gets its own free port: the default (port + 10000) may be taken, or
        # past 65535 for a high ephemeral port.
        self._bus_ports = [free_port() for _ in range(masters)]
        self._dir = Path(tempfile.mkdtemp(prefix="gw-redis-cluster-"))
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """One node's address; a cluster client learns the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        server = _binary("redis-server")
        for port, bus_port in zip(self.ports, self._bus_ports, strict=True):
            node_dir = self._dir / str(port)
            node_dir.mkdir()
            argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(node_dir)]
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            argv += ["--cluster-port", str(bus_port)]
            argv += ["--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no"]
            argv += ["--logfile", str(node_dir / "redis.log")]
            self._processes.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        self._wait_until("every node answers PING", _pings)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        create = ["--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(
            [_binary("redis-cli"), *create],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
        if created.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
        self._wait_until("cluster_state:ok on every node", _cluster_ok)

    def _wait_until(self, what: str, ready: Callable[[int], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(ready(port) for port in self.ports):
            if time.monotonic() > deadline:
                logs = "".join(
                    (self._dir / str(p) / "redis.log").read_text()[-1500:]
                    for p in self.ports
                    if (self._dir / str(p) / "redis.log").exists()
                )
                pytest.fail(f"Redis Cluster not ready ({what}) in {START_TIMEOUT_S}s:\n{logs}")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        """SIGKILL one master, as a crash would: with no replica, its slots go unserved."""
        process = self._processes[index]
        process.kill()
        process.wait(timeout=10)

    def stop(self) -> None:
        processes, self._processes = self._processes, []
        for process in processes:
            if process.poll() is None:
                process.kill()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)


def _cluster_ok(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        info = client.cluster("INFO")
    except redis.RedisError:
        return False
    finally:
        client.close()
    # redis-py parses the reply into a dict of text values.
    return isinstance(info, dict) and info.get("cluster_state") == "ok"


@pytest.fixture
def redis_cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as cluster:
        yield cluster
