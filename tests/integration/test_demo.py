"""`make demo` and `python -m app.cli keys create` share one key store: a key made with the CLI,
as the README shows, works against the running demo.

The demo runs as its own process (`python -m tests.demo`, which starts the emulator and the
gateway), on a free port, with EMBEDDED_DB_PATH in tmp_path for both it and the CLI, and from
tmp_path so a developer's config/.env cannot point either at a real store.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
SCOPES = "data:read,trading:read,trading:write"
_DEMO_KEY = re.compile(r"export KEY=(gw_\S+)")


@dataclass
class Demo:
    base_url: str
    env: dict[str, str]
    cwd: Path
    process: subprocess.Popen[bytes]
    output: Path

    def printed(self) -> str:
        return self.output.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C or a supervisor would; the demo's exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    port = free_port()
    store = tmp_path / "data" / "gateway.sqlite3"
    removed = ("DATABASE_URL", "REDIS_URL", "EMBEDDED_DB_PATH", "GATEWAY_ANONYMOUS_DATA")
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env.update(PYTHONPATH=str(REPO_ROOT), GATEWAY_PORT=str(port), EMBEDDED_DB_PATH=str(store))
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        # Its own session, so cleanup can end the demo's emulator and gateway with it.
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.demo"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Demo(f"http://127.0.0.1:{port}", env, tmp_path, process, output)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "API docs:" not in running.printed():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not start:\n{running.printed()[-4000:]}", pytrace=False)
            time.sleep(0.2)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # only if the test failed before stopping it
            process.wait(timeout=10)


def test_a_key_created_with_the_cli_works_against_the_demo(demo: Demo) -> None:
    quote_url = f"{demo.base_url}/v1/stocks/AAPL/quote"
    with httpx.Client(timeout=10) as client:
        keyless = client.get(quote_url)

        created = demo.cli("keys", "create", "--name", "my-bot", "--scopes", SCOPES)
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        bearer = client.get(quote_url, headers={"Authorization": f"Bearer {key}"})
        api_key = client.get(quote_url, headers={"X-API-Key": key})
        both = client.get(quote_url, headers={"Authorization": "Bearer nope", "X-API-Key": key})
        time.sleep(2.2)  # two steps of the emulator's random walk
        later = client.get(quote_url, headers={"X-API-Key": key})
        demo_key = _DEMO_KEY.search(demo.printed())
        assert demo_key is not None
        printed_key = client.get(quote_url, headers={"X-API-Key": demo_key.group(1)})

    assert keyless.status_code == 401
    assert keyless.json()["code"] == "UNAUTHENTICATED"
    assert bearer.status_code == 200, bearer.text
    assert bearer.json()["provenance"]["source"] == "emulator"
    assert api_key.status_code == 200
    assert both.status_code == 401  # Authorization wins when both headers are sent
    assert later.json()["timestamp"] != bearer.json()["timestamp"]  # the market moves
    assert printed_key.status_code == 200

    assert demo.stop() == 128 + signal.SIGTERM
    listed = demo.cli("keys", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"demo", "my-bot"}
    assert rows["demo"].split()[5] != "-"  # the demo's own key is revoked when it stops
    assert rows["my-bot"].split()[5] == "-"  # the operator's key stays
