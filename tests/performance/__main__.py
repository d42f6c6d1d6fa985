"""`python -m tests.performance [--server uvicorn|granian|both] [--load wrk|aio] [--rounds N]`.

`make bench SERVER=... LOAD=... ROUNDS=...` passes these through.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from tests.emulator.process import EmulatorProcess
from tests.performance.bench import run_bench, say
from tests.performance.nginx import nginx_binary
from tests.performance.runners import INSTALL_HINT, LOADS, Cores, Tools
from tests.performance.servers import SERVERS

DEFAULT_ROUNDS = {1: 5, 2: 3}  # by the number of servers: about 5 minutes either way


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.performance")
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="granian")
    parser.add_argument("--load", choices=LOADS, default="wrk")
    parser.add_argument("--rounds", type=int, help="default: 5 (one server) or 3 (both)")
    return parser.parse_args(argv)


async def _run(cores: Cores, tools: Tools, servers: list[str], rounds: int) -> str:
    task = asyncio.current_task()
    if task is not None:  # SIGTERM stops the run like Ctrl-C: children are stopped on the way out
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with EmulatorProcess() as emulator:
        return await run_bench(emulator, cores, tools, servers, rounds)


def main(argv: list[str]) -> int:
    args = parse(argv)
    started = time.monotonic()
    servers = list(SERVERS) if args.server == "both" else [args.server]
    rounds = args.rounds or DEFAULT_ROUNDS[len(servers)]
    if rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if nginx_binary() is None:
        raise SystemExit(f"nginx is not installed (the nginx proxy_cache rows): {INSTALL_HINT}")
    cores = Cores.detect()
    tools = Tools(cores, args.load)
    if cores.load is not None:
        # This process and the emulator it starts stay off the servers' core.
        os.sched_setaffinity(0, {cores.load})
    try:
        printed = asyncio.run(_run(cores, tools, servers, rounds))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: child processes stopped", file=sys.stderr)
        return 130
    say("")
    say(printed)
    say(f"bench took {time.monotonic() - started:.0f} s")
    return 0


raise SystemExit(main(sys.argv[1:]))
