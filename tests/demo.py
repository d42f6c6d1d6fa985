"""`make demo`: the gateway in front of the Alpaca emulator, with curl commands that work.

Starts the emulator as its own process with its seeded random walk on (latest quotes and trades
move), stores a realistic market in it (tests/emulator/demo_market.py: AAPL, MSFT and SPY quotes,
trades, daily and minute bars, AAPL and SPY option chains, a position), starts the gateway as
`make run` does (`python -m app.serve`) pointed at the emulator, prints commands to try, and
runs until Ctrl-C or SIGTERM, then stops both processes. Nothing here talks to the real Alpaca.

The gateway uses the key store `python -m app.cli keys ...` uses with the same settings (the
environment, then config/.env): PostgreSQL when DATABASE_URL is set, else the SQLite file at
EMBEDDED_DB_PATH (default data/gateway.sqlite3). So a key made with the CLI works here, and the
demo's own key is made the same way (and revoked when the demo stops).

    python -m tests.demo          # gateway on GATEWAY_PORT (default 8000)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from types import FrameType

from app.settings import load_settings
from tests.emulator.demo_market import SeedData, seed, utc_z
from tests.emulator.gateway_process import (
    ALL_SCOPES,
    GatewayProcess,
    GatewayStartError,
    create_key,
    emulator_env,
    run_cli,
)
from tests.emulator.process import EmulatorProcess

WALK_SEED = 20250624
SCOPES = ALL_SCOPES


def key_store() -> str:
    """Where keys live, as the CLI and the gateway will see it (never the database URL)."""
    settings = load_settings()
    if settings.database_url is not None:
        return "PostgreSQL at DATABASE_URL"
    return f"the SQLite file {settings.embedded_db_path} (EMBEDDED_DB_PATH)"


def revoke_demo_key(env: dict[str, str], key: str) -> None:
    """Keys look like gw_<id>_<secret>; the demo's own key does not outlive the demo."""
    try:
        run_cli(env, None, "keys", "revoke", key.split("_", 2)[1])
    except GatewayStartError as exc:
        print(f"demo: could not revoke the demo key: {exc}", file=sys.stderr)


def instructions(base_url: str, emulator_url: str, key: str, seeded: SeedData) -> str:
    """What to try, with commands that work against this run."""
    get = 'curl -s -H "Authorization: Bearer $KEY"'
    start = seeded.first_bar_day.isoformat()
    minutes_ago = utc_z(datetime.now(UTC) - timedelta(minutes=5))
    order = '{"symbol":"AAPL","qty":1,"side":"buy","type":"market","time_in_force":"day"}'
    fault = '{"path":"/v2/stocks/*","kind":"status_500","count":null}'
    return f"""
Gateway on {base_url}, in front of the Alpaca emulator at {emulator_url}.
Every provenance.source says `emulator`. Quotes and trades move: the emulator runs a seeded
random walk (seed {WALK_SEED}, one step a second).

Keys live in {key_store()}: the store `python -m app.cli keys ...` uses with the same settings,
so a key you create there works here at once:
  python -m app.cli keys create --name my-bot --scopes {SCOPES}
Demo key (scopes {SCOPES}; revoked when the demo stops):
  export KEY={key}
Without a key, every data and trading route answers 401 UNAUTHENTICATED. Send the key as
`Authorization: Bearer <key>` or `X-API-Key: <key>`; if both are sent, Authorization wins.

Try:
  {get} '{base_url}/v1/stocks/AAPL/quote'          # twice, a second apart: it moves
  {get} '{base_url}/v1/stocks/quotes?symbols=AAPL,MSFT,SPY'
  {get} '{base_url}/v1/stocks/AAPL/snapshot'
  {get} '{base_url}/v1/stocks/AAPL/bars?timeframe=1Day&start={start}'
  {get} '{base_url}/v1/stocks/SPY/bars?timeframe=1Min&start={minutes_ago}'
  {get} '{base_url}/v1/options/chain/AAPL'          # greeks on the nearer expiry only
  {get} '{base_url}/v1/options/contracts?underlying=SPY'
  {get} '{base_url}/v1/options/{seeded.option_contract}/quote'
  {get} '{base_url}/v1/positions'
  {get} -H 'Idempotency-Key: demo-order-1' -H 'Content-Type: application/json' \\
    -d '{order}' '{base_url}/v1/orders'

Make Alpaca fail (the emulator's control API, no key needed): stock data answers 500 until cleared.
  curl -s -X POST '{emulator_url}/_emulator/faults' -d '{fault}'
  for i in $(seq 15); do {get} '{base_url}/v1/stocks/MSFT/quote'; echo; sleep 1; done
The gateway answers 503 UPSTREAM_UNAVAILABLE while it still calls Alpaca (it remembers a failure
for CACHE_NEGATIVE_TTL_S, 1 s, hence the sleep). When at least half of its last 20 calls failed
(counted from the 10th call on), the data breaker opens: 503 CIRCUIT_OPEN with Retry-After, and
no call reaches Alpaca (see {emulator_url}/_emulator/calls). Heal it; after
BREAKER_OPEN_DURATION_S (30 s) trial calls close the breaker again:
  curl -s -X DELETE '{emulator_url}/_emulator/faults'

API docs: {base_url}/docs. Ctrl-C stops the gateway and the emulator."""


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_demo(host: str, port: int) -> int:
    with EmulatorProcess(random_walk_seed=WALK_SEED) as emulator:
        seeded = asyncio.run(seed(emulator.base_url))
        # The store settings are left alone on purpose: the CLI, run by hand with the same
        # settings, must reach the same key store.
        env = emulator_env(os.environ, emulator)
        try:
            key = create_key(env, None, "demo", SCOPES)
        except GatewayStartError as exc:
            raise SystemExit(f"demo: {exc}") from exc
        try:
            gateway = GatewayProcess(env, host=host, port=port)
            try:
                gateway.start()
                print(instructions(gateway.base_url, emulator.base_url, key, seeded), flush=True)
                while gateway.returncode is None:
                    time.sleep(0.5)
                print(f"demo: the gateway exited with status {gateway.returncode}", file=sys.stderr)
                return 1
            except GatewayStartError as exc:
                raise SystemExit(f"demo: {exc}") from exc
            finally:
                gateway.stop()
        finally:
            revoke_demo_key(env, key)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    port = int(os.environ.get("GATEWAY_PORT", "8000"))
    try:
        return run_demo("127.0.0.1", port)
    except KeyboardInterrupt:
        print("\ndemo: stopped", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
