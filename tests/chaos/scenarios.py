"""The scenarios by name, each run on a rig of its own (fresh Redis, PostgreSQL, emulator state)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.chaos import (
    gateway_crash,
    postgres_outage,
    redis_outage,
    store_freeze,
    upstream_faults,
)
from tests.chaos.figures import Result
from tests.chaos.profile import Profile
from tests.chaos.rig import Rig, rig
from tests.emulator.process import EmulatorProcess

Scenario = Callable[[Rig, Profile], Awaitable[list[Result]]]


async def _one(result: Awaitable[Result]) -> list[Result]:
    return [await result]


SCENARIOS: dict[str, Scenario] = {
    "redis_restart": lambda r, p: _one(redis_outage.run(r, p)),
    "postgres_restart": lambda r, p: _one(postgres_outage.run(r, p)),
    "stores_frozen": lambda r, p: _one(store_freeze.run(r, p)),
    "gateway_sigkill": lambda r, p: _one(gateway_crash.run(r, p)),
    "upstream_faults": upstream_faults.run,
}


async def run_scenario(
    name: str, emulator: EmulatorProcess, workdir: Path, profile: Profile
) -> list[Result]:
    async with rig(emulator, workdir) as each:
        return await SCENARIOS[name](each, profile)
