"""``python -m tests.emulator --port N [--random-walk SEED] [--scenario FILE]``: serve until
SIGTERM or SIGINT.

``--random-walk SEED`` starts (and resets to) a configuration whose latest quotes and trades
move: ``{"random_walk": {"seed": SEED, "step_ms": 1000}}`` (see ``random_walk.py``).
``--scenario FILE`` (YAML or JSON, see ``scenario.py``) is loaded at start and at every
``POST /_emulator/reset``; a scenario it cannot load stops it before it listens, with exit
status 2 and the place and reason on stderr. ``--check`` only checks the scenario and exits.

Prints exactly one line to stdout, ``emulator listening on http://HOST:PORT``, once the
socket accepts connections (with ``--port 0`` the port is the one the OS picked); logs go to
stderr so a parent process that only reads that line can never block on a full pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from .app import create_app
from .config import Config, RandomWalk
from .scenario import REFUSED_SCENARIO_PREFIX, ScenarioError, ScenarioSource
from .state import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, Credentials

_SHUTDOWN_TIMEOUT_S = 2.0
EXIT_BAD_SCENARIO = 2


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key-id", default=DEFAULT_KEY_ID)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument(
        "--random-walk",
        type=int,
        metavar="SEED",
        help="latest quotes and trades of symbols with stored ones move (a seeded walk)",
    )
    parser.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="a YAML (.yaml/.yml) or JSON scenario, loaded at start and at every reset",
    )
    parser.add_argument(
        "--check", action="store_true", help="check the --scenario file and exit (0: it loads)"
    )
    args = parser.parse_args(argv)
    if args.check and args.scenario is None:
        parser.error("--check needs --scenario FILE")
    if not args.check and args.port is None:
        parser.error("the following arguments are required: --port")
    return args


async def serve(args: argparse.Namespace, scenario: ScenarioSource | None) -> None:
    """Serve until a termination signal arrives, then shut down promptly."""
    walk = None if args.random_walk is None else RandomWalk(seed=args.random_walk)
    app = create_app(Credentials(args.key_id, args.secret_key), Config(random_walk=walk), scenario)
    # handler_cancellation: a client that gives up on a hung request ends its handler.
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT_S, access_log=None
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown_host = f"[{host}]" if ":" in host else host
        sys.stdout.write(f"emulator listening on http://{shown_host}:{port}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await runner.cleanup()


def _read_scenario(path: Path | None) -> ScenarioSource | None:
    if path is None:
        return None
    try:
        return ScenarioSource.from_file(path)
    except ScenarioError as exc:
        sys.stderr.write(f"{REFUSED_SCENARIO_PREFIX}{exc}\n")
        raise SystemExit(EXIT_BAD_SCENARIO) from None


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``python -m tests.emulator``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    scenario = _read_scenario(args.scenario)
    if args.check:
        sys.stdout.write(f"{args.scenario}: the scenario loads\n")
        return
    asyncio.run(serve(args, scenario))


if __name__ == "__main__":
    main()
