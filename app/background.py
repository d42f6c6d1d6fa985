"""Stopping the gateway's background tasks (listeners, sweeps, sync loops) for good.

A cancellation can be lost: on Python 3.11 `asyncio.wait_for` (used inside redis-py's client
among others) returns the result of a call that completed as the cancel arrived and drops the
cancel, and a retry loop then simply goes on. A single `cancel()` leaves such a task running
and a shutdown that waits for it waits for ever (seen: a gateway on a Redis Cluster never
finished closing), so tasks are cancelled again until they have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

_RECANCEL_AFTER_S = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel `tasks` (None entries are skipped) and return once every one has ended."""
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_AFTER_S)
