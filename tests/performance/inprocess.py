"""The gateway's own CPU per answer, without a server or a socket: `python -m
tests.performance.inprocess [--path P] [--breaker-open] [--redis URL] [--profile]`.

Drives the ASGI app built by `create_app` with a fake scope in a loop, after a warm-up, and prints
microseconds of process CPU per request; `--profile` adds cProfile's top functions. It tells what
the gateway's code costs apart from the server (`make bench` measures both together). The value
is one cached quote from the emulator; `--breaker-open` holds the data breaker open so a cold
symbol's path (`--path /v1/stocks/COLD/quote`) is the refusal.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.alpaca.breaker import BreakerState
from app.main import create_app
from app.settings import Settings
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE

WARM_UP = 2000


async def measure(args: argparse.Namespace) -> None:
    with EmulatorProcess() as emulator:
        async with EmulatorControl(emulator.base_url) as control:
            seconds_ago = time.gmtime(time.time() - 5)
            observed = time.strftime("%Y-%m-%dT%H:%M:%S", seconds_ago) + ".123456789Z"
            await control.set_quote("AAPL", {**QUOTE, "t": observed})
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            alpaca_api_key_id=emulator.key_id,
            alpaca_api_secret_key=emulator.secret_key,
            alpaca_data_url=emulator.base_url,
            alpaca_trading_url=emulator.base_url,
            upstream_source_name="emulator",
            gateway_anonymous_data=True,
            log_level="WARNING",
            clock_poll_interval_s=0,
            cache_quote_ttl_s=3600,  # the value stays held for the whole run
            embedded_db_path=tempfile.mkdtemp(prefix="inprocess-") + "/gateway.sqlite3",
            redis_url=args.redis,
            cache_namespace=f"inprocess-{time.time_ns()}",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app) as state:
            if args.breaker_open:
                breaker = state["gateway"].breakers["data"]
                breaker._move_to(BreakerState.OPEN, breaker._clock())
            one = _request(app, dict(state), args.path)
            await one()
            for _ in range(WARM_UP):
                await one()
            started = time.process_time()
            for _ in range(args.requests):
                await one()
            per_request_us = (time.process_time() - started) / args.requests * 1e6
            print(f"{args.path}: {per_request_us:.1f} us of CPU per request (app only)")
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(args.requests):
                    await one()
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(30)


def _request(app: Any, state: dict[str, Any], target: str) -> Callable[[], Awaitable[None]]:
    path, _, query = target.partition("?")
    template: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def one() -> None:
        # What the server does per request: a fresh scope with a copy of the lifespan state.
        await app({**template, "state": dict(state)}, receive, send)

    return one


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.performance.inprocess")
    parser.add_argument("--path", default="/v1/stocks/AAPL/quote")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--breaker-open", action="store_true")
    parser.add_argument("--redis", default=None, help="REDIS_URL for the Redis-backed cache")
    parser.add_argument("--profile", action="store_true")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
