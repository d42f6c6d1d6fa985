"""``python -m tests.emulator --port N [--random-walk SEED]``: serve until SIGTERM or SIGINT.

``--random-walk SEED`` starts (and resets to) a configuration whose latest quotes and trades
move: ``{"random_walk": {"seed": SEED, "step_ms": 1000}}`` (see ``random_walk.py``).

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

from aiohttp import web

from .app import create_app
from .config import Config, RandomWalk
from .state import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, Credentials

_SHUTDOWN_TIMEOUT_S = 2.0


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key-id", default=DEFAULT_KEY_ID)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument(
        "--random-walk",
        type=int,
        metavar="SEED",
        help="latest quotes and trades of symbols with stored ones move (a seeded walk)",
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Serve until a termination signal arrives, then shut down promptly."""
    walk = None if args.random_walk is None else RandomWalk(seed=args.random_walk)
    app = create_app(Credentials(args.key_id, args.secret_key), Config(random_walk=walk))
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


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``python -m tests.emulator``."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(_parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
