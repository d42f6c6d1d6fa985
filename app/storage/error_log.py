"""`ErrorLogWriter`: error-log rows written in the background, never on the request path.

`submit()` only appends to a bounded in-memory queue; a background task inserts batches. When
the queue is full, or the database cannot take a batch, the entries are dropped and counted
through `on_drop` (one call per entry): keeping an error log must never slow or fail a request.
A database outage is logged once when it starts and once when it ends, not per batch.

The same task keeps the table bounded (`ErrorLogRetention`): a client sending garbage as fast as
it can must not be able to fill the disk through the error log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from loguru import logger

from app.storage.records import ErrorLogEntry, utc_now
from app.storage.store import Store, StoreUnavailable


@dataclass(frozen=True, slots=True)
class ErrorLogRetention:
    """What `error_logs` keeps: the newest `max_rows`, none older than `max_age_s` seconds.

    Checked after every `check_every_rows` rows written and at least every `check_interval_s`,
    so between checks the table can exceed `max_rows` by about `check_every_rows`. A check
    deletes at most `delete_chunk_rows` rows per statement and comes back at once while more
    are due, so catching up on a large backlog never holds the table (or the writer) for long.
    """

    max_rows: int
    max_age_s: float
    check_every_rows: int = 1000
    check_interval_s: float = 60.0
    delete_chunk_rows: int = 1000

    def __post_init__(self) -> None:
        if min(self.max_rows, self.check_every_rows, self.delete_chunk_rows) < 1:
            raise ValueError("max_rows, check_every_rows and delete_chunk_rows must be >= 1")
        if self.max_age_s <= 0 or self.check_interval_s <= 0:
            raise ValueError("max_age_s and check_interval_s must be positive")


class ErrorLogWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_queue: int = 1000,
        batch: int = 100,
        on_drop: Callable[[], None],
        retention: ErrorLogRetention | None = None,
    ) -> None:
        if max_queue < 1 or batch < 1:
            raise ValueError("max_queue and batch must be at least 1")
        if retention is not None and retention.delete_chunk_rows <= batch:
            # Catching up, each check follows one batch: deleting less than a batch per check
            # would never catch up with a client that keeps failing.
            raise ValueError("retention.delete_chunk_rows must be larger than batch")
        self._store = store
        self._max_queue = max_queue
        self._batch = batch
        self._on_drop = on_drop
        self._retention = retention
        # Unbounded on purpose: `submit` enforces max_queue itself, so `aclose` can always
        # enqueue the stop marker (None) even when the queue is full.
        self._queue: asyncio.Queue[ErrorLogEntry | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._in_outage = False
        # The first check runs at start: rows may have piled up under an older configuration.
        self._next_check_at = time.monotonic()
        self._rows_since_check = 0
        self._log = logger.bind(dependency=store.dependency)

    @property
    def pending(self) -> int:
        """Entries accepted and not yet written or dropped."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="error-log-writer")
            self._task.add_done_callback(self._report_crash)

    def submit(self, entry: ErrorLogEntry) -> None:
        """Queue one entry without waiting; drop it (and count it) if the queue is full."""
        if self._closing or self._queue.qsize() >= self._max_queue:
            self._on_drop()
            return
        self._queue.put_nowait(entry)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop accepting entries, write what is queued (within `timeout_s`), stop the task."""
        self._closing = True
        task = self._task
        if task is None:
            self._drop_queued()
            return
        self._queue.put_nowait(None)
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        self._drop_queued()
        self._task = None

    async def _run(self) -> None:
        stop = False
        while not stop:
            entries, stop = await self._next_batch()
            if entries:
                await self._write(entries)
            if self._check_due():
                await self._enforce_retention()

    async def _next_batch(self) -> tuple[list[ErrorLogEntry], bool]:
        """Up to `batch` queued entries, and whether the stop marker came after them. Waits for
        the first entry only until the next retention check is due (then returns none)."""
        if self._queue.empty():
            try:
                first = await asyncio.wait_for(self._queue.get(), self._seconds_to_check())
            except TimeoutError:
                return [], False
        else:
            first = self._queue.get_nowait()
        entries: list[ErrorLogEntry] = []
        item = first
        while item is not None:
            entries.append(item)
            if len(entries) >= self._batch or self._queue.empty():
                return entries, False
            item = self._queue.get_nowait()
        return entries, True

    async def _write(self, entries: list[ErrorLogEntry]) -> None:
        try:
            await self._store.insert_error_logs(entries)
        except StoreUnavailable as exc:
            if not self._in_outage:
                self._in_outage = True
                self._log.warning(
                    "error log not recorded, dropping entries until the store answers: {}", exc
                )
            for _ in entries:
                self._on_drop()
            return
        self._rows_since_check += len(entries)
        if self._in_outage:
            self._in_outage = False
            self._log.info("error log recording again")

    def _seconds_to_check(self) -> float | None:
        if self._retention is None:
            return None
        return max(0.0, self._next_check_at - time.monotonic())

    def _check_due(self) -> bool:
        retention = self._retention
        return retention is not None and (
            self._rows_since_check >= retention.check_every_rows
            or time.monotonic() >= self._next_check_at
        )

    async def _enforce_retention(self) -> None:
        retention = self._retention
        if retention is None:
            return
        self._rows_since_check = 0
        self._next_check_at = time.monotonic() + retention.check_interval_s
        if self._in_outage:
            return  # already reported by _write; the next check tries again
        try:
            deleted = await self._store.prune_error_logs(
                keep_rows=retention.max_rows,
                older_than=utc_now() - timedelta(seconds=retention.max_age_s),
                limit=retention.delete_chunk_rows,
            )
        except StoreUnavailable as exc:
            self._log.warning("error log retention not enforced, trying again later: {}", exc)
            return
        if deleted >= retention.delete_chunk_rows:
            # More may be due: check again right after the next batch (or at once if idle).
            self._next_check_at = time.monotonic()

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        # Only a bug ends the task early (store failures are handled in _write and
        # _enforce_retention); say so loudly instead of "Task exception was never retrieved".
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.opt(exception=exc).error("error log writer stopped: {}", type(exc).__name__)

    def _drop_queued(self) -> None:
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self._on_drop()
