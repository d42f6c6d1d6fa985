"""Background tasks are stopped for good, even one that loses a cancellation."""

from __future__ import annotations

import asyncio

from app.background import cancel_and_wait


async def test_a_task_that_swallows_a_cancel_is_cancelled_until_it_ends() -> None:
    swallowed = 0

    async def retry_loop() -> None:
        # As a loop does when a lost cancel surfaces as a timeout it retries on.
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(retry_loop())
    await asyncio.sleep(0)

    await asyncio.wait_for(cancel_and_wait([task, None]), timeout=5)

    assert task.cancelled()
    assert swallowed == 1


async def test_tasks_already_done_are_left_as_they_are() -> None:
    async def finished() -> int:
        return 7

    task = asyncio.create_task(finished())
    await task
    await cancel_and_wait([task])
    assert task.result() == 7
