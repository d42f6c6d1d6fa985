"""`python -m tests.soak [--duration S] [--warmup S] [--every S] [--set NAME=VALUE ...]`

Mixed traffic against one gateway worker for minutes (5 by default), sampling its memory,
descriptors, metrics, in-process structures and store; prints each curve's start, peak and end
with a verdict per measure, and exits 1 when any measure grows or leaves its bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.emulator.process import EmulatorProcess
from tests.soak.run import SETTINGS, SoakOptions, soak


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isupper():
        raise argparse.ArgumentTypeError("expected NAME=VALUE, e.g. CACHE_MAX_ENTRIES=50000")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    defaults = SoakOptions()
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds")
    parser.add_argument(
        "--warmup", type=float, help="seconds before the curves must be flat (default: 1/5)"
    )
    parser.add_argument("--every", type=float, default=defaults.every_s, help="sample period")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="clients")
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a gateway setting for this soak (repeatable); defaults: "
        + " ".join(f"{k}={v}" for k, v in SETTINGS.items()),
    )
    parser.add_argument("--workdir", type=Path, help="keep the gateway's log and store here")
    args = parser.parse_args(argv)
    options = SoakOptions(
        duration_s=args.duration,
        warmup_s=args.warmup if args.warmup is not None else args.duration / 5,
        every_s=args.every,
        workers=args.workers,
        trip_every_s=max(10.0, args.duration / 10),
        settings={**SETTINGS, **dict(args.set)},
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gw-soak-"))
    with EmulatorProcess() as emulator:
        report = asyncio.run(soak(emulator, workdir, options))
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
