"""The chaos scenarios, short (`make chaos` runs them long): each must meet every goal.

A miss prints the scenario's line of figures and what each missed goal means; the gateways'
logs stay in the test's tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.profile import SHORT
from tests.chaos.scenarios import SCENARIOS, run_scenario
from tests.emulator.process import EmulatorProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_the_scenario_meets_its_goals(
    name: str, emulator_process: EmulatorProcess, tmp_path: Path
) -> None:
    results = await run_scenario(name, emulator_process, tmp_path, SHORT)

    missed = [r for r in results if not r.passed]
    assert not missed, "\n".join(
        f"{r.line()}\n  missed: {r.missed()}\n  logs: {tmp_path}" for r in missed
    )
