"""Single-flight: identical concurrent misses share one upstream call.

One upstream call may answer many keys (a multi-symbol chunk), so a flight is registered under
every key it will resolve; a request for any of them joins it instead of calling Alpaca again.
The flight runs as its own task so a leader that disconnects does not cancel it for the joiners.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Generic, TypeVar

R = TypeVar("R")


class SingleFlight(Generic[R]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[Mapping[str, R]]] = {}

    def in_flight(self, key: str) -> asyncio.Task[Mapping[str, R]] | None:
        return self._flights.get(key)

    def start(
        self, keys: Sequence[str], work: Awaitable[Mapping[str, R]]
    ) -> asyncio.Task[Mapping[str, R]]:
        """Run `work` once for `keys`; its mapping must hold a result for every key."""
        task: asyncio.Task[Mapping[str, R]] = asyncio.ensure_future(work)
        for key in keys:
            self._flights[key] = task

        def landed(done: asyncio.Task[Mapping[str, R]]) -> None:
            for key in keys:
                if self._flights.get(key) is done:
                    del self._flights[key]
            if not done.cancelled():
                done.exception()  # retrieved here: joiners may all have gone away

        task.add_done_callback(landed)
        return task

    def __len__(self) -> int:
        return len(self._flights)


async def await_flight(task: asyncio.Task[Mapping[str, R]]) -> Mapping[str, R]:
    """Wait for a flight without letting our own cancellation cancel it for everyone else."""
    return await asyncio.shield(task)
