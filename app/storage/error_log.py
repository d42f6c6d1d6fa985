"""`ErrorLogWriter`: error-log rows written in the background, never on the request path.

`submit()` only appends to a bounded in-memory queue; a background task inserts batches. When
the queue is full, or the database cannot take a batch, the entries are dropped and counted
through `on_drop` (one call per entry): keeping an error log must never slow or fail a request.
A database outage is logged once when it starts and once when it ends, not per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from app.storage.records import ErrorLogEntry
from app.storage.store import Store, StoreUnavailable


class ErrorLogWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_queue: int = 1000,
        batch: int = 100,
        on_drop: Callable[[], None],
    ) -> None:
        if max_queue < 1 or batch < 1:
            raise ValueError("max_queue and batch must be at least 1")
        self._store = store
        self._max_queue = max_queue
        self._batch = batch
        self._on_drop = on_drop
        # Unbounded on purpose: `submit` enforces max_queue itself, so `aclose` can always
        # enqueue the stop marker (None) even when the queue is full.
        self._queue: asyncio.Queue[ErrorLogEntry | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._in_outage = False
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
        while True:
            first = await self._queue.get()
            entries: list[ErrorLogEntry] = []
            stop = first is None
            if first is not None:
                entries.append(first)
            while not stop and len(entries) < self._batch and not self._queue.empty():
                entry = self._queue.get_nowait()
                if entry is None:
                    stop = True
                else:
                    entries.append(entry)
            if entries:
                await self._write(entries)
            if stop:
                return

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
        if self._in_outage:
            self._in_outage = False
            self._log.info("error log recording again")

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        # Only a bug ends the task early (store failures are handled in _write); say so loudly
        # instead of leaving it to "Task exception was never retrieved".
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.opt(exception=exc).error("error log writer stopped: {}", type(exc).__name__)

    def _drop_queued(self) -> None:
        while not self._queue.empty():
            if self._queue.get_nowait() is not None:
                self._on_drop()
