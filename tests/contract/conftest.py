"""What the emulator's contract tests share: one emulator per module, a control client that
leaves it as it found it, and an HTTP client that calls it as a bot calls Alpaca.

A module that needs another emulator (one started with a scenario) or another starting state
defines its own `emulator` or `control`; pytest takes the module's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.emulator.control import EmulatorControl, shared_ssl_context
from tests.emulator.process import EmulatorProcess


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess() as process:
        yield process


@pytest.fixture
async def control(emulator: EmulatorProcess) -> AsyncIterator[EmulatorControl]:
    async with EmulatorControl(emulator.base_url) as client:
        await client.reset()
        yield client
        # Ends what a test left behind: fault timelines, hung requests, streams and their slots.
        await client.reset()


@pytest.fixture
async def alpaca(emulator: EmulatorProcess) -> AsyncIterator[httpx.AsyncClient]:
    """Alpaca's REST API as the emulator serves it, with the account's key headers."""
    async with httpx.AsyncClient(
        base_url=emulator.base_url, headers=emulator.auth_headers, verify=shared_ssl_context()
    ) as client:
        yield client
