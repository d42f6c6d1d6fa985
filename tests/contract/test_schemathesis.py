"""schemathesis against the served gateway: the OpenAPI document is exactly what the server does.

The gateway runs as users run it (uvicorn, its own process) in front of the Alpaca emulator
(its own process, holding the demo market: AAPL, MSFT, SPY, option chains, a position), with a
real key made by the CLI that holds every scope. Orders go to the emulator, never to Alpaca.
schemathesis (pinned in requirements-dev.txt) runs every phase (examples, coverage, fuzzing,
stateful) with `--checks all` and a fixed seed, bounded by `--max-examples` per operation; it
takes about a minute here.

Checks configured narrowly, and why (tests/contract/schemathesis.toml and schemathesis_hooks.py):
- `not_a_server_error` -> `gateway_not_a_server_error`: 503 DATA_STALE is allowed for a request
  that set `max_age_ms` (0 ms is a valid bound no real value meets); every other 5xx fails.
- `positive_data_acceptance` -> `gateway_positive_data_acceptance`: a schema-valid request may be
  refused with 422 only for what no schema can carry: Alpaca's own verdict on a well-formed order
  (ORDER_REJECTED) or on an opaque page token, a rule joining two inputs (start after end, strike
  range, client_order_id vs Idempotency-Key), or a JSON number written with more than 9 decimals.
- `use_after_free` -> `gateway_use_after_free`: DELETE /v1/orders/{id} cancels; the order stays
  readable with status canceled (or pending_cancel), as Alpaca keeps it. Any other read of a
  deleted resource fails.

Settings of this run, and why: KEY_QUOTA_PER_MINUTE / KEY_QUOTA_BURST high, so the fuzz key's
own quota does not turn the run into a wall of 429s (the quota is still checked on every request;
tests/integration/test_auth.py proves 429); ASSET_LOOKUPS_PER_MINUTE high, so thousands of
made-up symbols are classified by the emulator instead of answered 503 UPSTREAM_RATE_LIMITED
(a budget that protects Alpaca's rate limit, not this contract). In-process cache and an
embedded store of its own: the run shares nothing with other tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.demo_market import seed
from tests.emulator.process import EmulatorProcess
from tests.served import REPO_ROOT, ServedGateway, emulator_env

pytestmark = [pytest.mark.contract, pytest.mark.integration]

CONFIG = Path(__file__).with_name("schemathesis.toml")
COMMITTED = REPO_ROOT / "openapi.json"
SEED = 20261201
MAX_EXAMPLES = 20
RUN_TIMEOUT_S = 300
SCOPES = "data:read,trading:read,trading:write"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServedGateway, str]]:
    with EmulatorProcess(random_walk_seed=SEED) as emulator:
        asyncio.run(seed(emulator.base_url))
        env = emulator_env(
            emulator,
            EMBEDDED_DB_PATH=str(tmp_path / "gateway.sqlite3"),
            KEY_QUOTA_PER_MINUTE="6000000",
            KEY_QUOTA_BURST="100000",
            ASSET_LOOKUPS_PER_MINUTE="6000000",
            CLOCK_POLL_INTERVAL_S="0",
            LOG_LEVEL="WARNING",
        )
        for shared in ("REDIS_URL", "DATABASE_URL", "GATEWAY_ANONYMOUS_DATA"):
            env.pop(shared, None)
        create = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "schemathesis"]
        created = subprocess.run(
            [*create, "--scopes", SCOPES],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        key = created.stdout.strip().splitlines()[-1]
        with ServedGateway(env, tmp_path / "gateway.log") as gateway:
            yield gateway, key


def run_schemathesis(base_url: str, key: str, report: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run"]
    argv += [f"{base_url}/openapi.json", "--checks", "all"]
    argv += ["--exclude-checks", "not_a_server_error,positive_data_acceptance,use_after_free"]
    argv += ["--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1"]
    argv += ["--generation-database", "none", "--no-color"]
    argv += ["--report", "json", "--report-json-path", str(report)]
    env = {**os.environ, "GATEWAY_FUZZ_KEY": key}
    return subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def test_the_served_gateway_does_what_its_openapi_document_says(
    served: tuple[ServedGateway, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    gateway, key = served
    # The contract fuzzed is the committed one (test_openapi_document.py says where they differ).
    served_document = httpx.get(f"{gateway.base_url}/openapi.json", timeout=10).json()
    assert served_document == json.loads(COMMITTED.read_text()), "regenerate openapi.json"
    report_path = tmp_path / "schemathesis.json"
    started = time.monotonic()

    run = run_schemathesis(gateway.base_url, key, report_path)

    elapsed_s = time.monotonic() - started
    output = run.stdout + run.stderr
    assert report_path.exists(), output[-5000:]
    report: dict[str, Any] = json.loads(report_path.read_text())
    operations, cases = report["operations"], report["test_cases"]
    figures = (
        f"schemathesis {report['schemathesis_version']}, seed {report['seed']}: "
        f"{operations['tested']}/{operations['total']} operations, "
        f"{cases['generated']} test cases, {cases['unique_failures']} failures, "
        f"{len(report['errors'])} errors, {elapsed_s:.0f} s"
    )
    # Shown in `make test`'s output whether the test passes or fails (past pytest's capture).
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{figures}")
    assert run.returncode == 0, f"{figures}\n{output[-20000:]}"
    assert report["complete"], figures
    assert report["failures"] == [], figures
    assert report["errors"] == [], figures
    assert cases["unique_failures"] == 0, figures
    assert operations["tested"] == operations["total"] >= 18, figures
    # Every schema was usable: no reference left dangling, no pattern the generator refused.
    assert report["warnings"]["unresolvable_reference"] == [], report["warnings"]
    assert report["warnings"]["unsupported_regex"] == [], report["warnings"]
