"""`python -m tests.chaos [--short] [--json] [SCENARIO ...]`: faults under load, one line each.

Prints one line of figures per scenario as it finishes (see tests/chaos/figures.py) and exits 1
when any goal was missed. Scenarios: the names in `SCENARIOS` (default: all of them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.chaos.figures import Result
from tests.chaos.profile import FULL, SHORT
from tests.chaos.scenarios import SCENARIOS, run_scenario
from tests.emulator.process import EmulatorProcess


async def _run(names: Sequence[str], short: bool, as_json: bool, keep: Path | None) -> int:
    profile = SHORT if short else FULL
    workdir = keep or Path(tempfile.mkdtemp(prefix="gw-chaos-"))
    failed = 0
    with EmulatorProcess() as emulator:
        for name in names:
            started = time.monotonic()
            results: list[Result] = await run_scenario(name, emulator, workdir / name, profile)
            sys.stderr.write(f"chaos: {name} took {time.monotonic() - started:.0f} s\n")
            for result in results:
                text = json.dumps(result.as_json()) if as_json else result.line()
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
                failed += not result.passed
    if failed:
        sys.stderr.write(f"chaos: {failed} scenario(s) missed a goal; logs in {workdir}\n")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--short", action="store_true", help="the bounded form make test runs")
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    parser.add_argument("--workdir", type=Path, help="keep gateway logs here")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    if unknown := [n for n in names if n not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return asyncio.run(_run(names, args.short, args.json, args.workdir))


if __name__ == "__main__":
    raise SystemExit(main())
