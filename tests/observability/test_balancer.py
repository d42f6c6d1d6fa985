"""config/nginx.conf as the compose `balancer` runs it, with a real nginx: only the replicas'
addresses (gateway-N:8000) and the listening port are swapped for local ones. Requests reach
every replica; a replica that is down is skipped for a GET; a POST whose replica dropped it is
never sent to another one (an order is never submitted twice).

The replicas are small HTTP servers that answer their own name: what is under test is the
balancer's configuration, not the gateway.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support.fleet import nginx_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 10.0


class Replica(ThreadingHTTPServer):
    """Answers GET with its name; drops every POST unanswered, as a replica crashing would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.posts = 0
        super().__init__(("127.0.0.1", 0), _ReplicaHandler)


class _ReplicaHandler(BaseHTTPRequestHandler):
    server: Replica

    def do_GET(self) -> None:
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.server.posts += 1
        self.close_connection = True  # no answer at all: nginx sees the upstream fail

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads counters, not logs."""


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    servers = [Replica(f"gateway-{n}") for n in (1, 2, 3)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def balancer(replicas: list[Replica]) -> Iterator[str]:
    """config/nginx.conf running on a free port in front of `replicas`; yields its base URL."""
    prefix = Path(tempfile.mkdtemp(prefix="gw-compose-balancer-"))
    port = free_port()
    conf = (REPO_ROOT / "config" / "nginx.conf").read_text()
    for n, replica in enumerate(replicas, start=1):
        conf = conf.replace(f"gateway-{n}:8000", f"127.0.0.1:{replica.server_address[1]}")
    conf, listens = re.subn(r"listen 8000;", f"listen 127.0.0.1:{port};", conf)
    assert listens == 1
    if os.geteuid() == 0:
        prefix.chmod(0o755)  # the workers run as nobody and keep their temp files here
    (prefix / "nginx.conf").write_text(conf)
    argv = [nginx_binary(), "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    argv += ["-e", str(prefix / "error.log")]
    argv += ["-g", f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base_url + "/balancer-health", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=10)
                log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
                pytest.fail(f"nginx did not start with config/nginx.conf:\n{log[-3000:]}")
            time.sleep(0.05)
        yield base_url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def test_requests_reach_every_replica(balancer: str) -> None:
    with httpx.Client(base_url=balancer, timeout=5) as client:
        answered = Counter(client.get("/v1/stocks/AAPL/quote").text for _ in range(30))
    assert set(answered) == {"gateway-1", "gateway-2", "gateway-3"}


def test_a_get_skips_a_replica_that_is_down(balancer: str, replicas: list[Replica]) -> None:
    replicas[1].shutdown()
    replicas[1].server_close()
    with httpx.Client(base_url=balancer, timeout=5) as client:
        answers = [client.get("/v1/stocks/AAPL/quote") for _ in range(12)]
    assert {a.status_code for a in answers} == {200}
    assert {a.text for a in answers} == {"gateway-1", "gateway-3"}


def test_a_post_is_never_sent_to_a_second_replica(balancer: str, replicas: list[Replica]) -> None:
    with httpx.Client(base_url=balancer, timeout=5) as client:
        answer = client.post("/v1/orders", json={"symbol": "AAPL", "qty": "1"})
    assert answer.status_code == 502  # the client learns it failed; the balancer retried nothing
    assert sum(r.posts for r in replicas) == 1
