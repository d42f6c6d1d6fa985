"""The order sweep: audit rows whose outcome the gateway never learned are settled from Alpaca.

A gateway that stops (or loses its store) between sending an order and recording Alpaca's
answer leaves the row `pending`; a submit whose lookups all failed leaves it `unknown`. Every
`interval_s` (the first pass at start-up) the sweep looks such rows up at Alpaca by
client_order_id, through `OrderDesk.lookup`, and completes them: `reconciled` with the order
Alpaca holds, or `failed` (never placed) on Alpaca's own "not found" once no submit can still be
sending it. Any other lookup failure leaves the row for the next pass. It never sends an order.

Each row is completed with one conditional update (only while still unsettled), so gateways
sweeping one table, and the submit that owns a row, never overwrite each other's outcome.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

from loguru import logger
from pydantic import ValidationError

from app.background import cancel_and_wait
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics, SweepResult
from app.models.trading import OrderRequest
from app.orders import Order, OrderDesk, error_detail, same_order
from app.storage.records import OrderAuditRow, utc_now
from app.storage.store import Store, StoreUnavailable


class OrderSweep:
    def __init__(
        self,
        desk: OrderDesk,
        store: Store,
        metrics: Metrics,
        *,
        interval_s: float,
        min_age_s: float,
        never_placed_after_s: float,
        batch_size: int,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """`min_age_s`: rows younger than this are left to the submit that wrote them.
        `never_placed_after_s`: Alpaca's "not found" settles a row as never placed only once
        it is this old (longer than any submit can take: Settings checks it)."""
        self._desk = desk
        self._store = store
        self._metrics = metrics
        self._interval_s = interval_s
        self._min_age = timedelta(seconds=min_age_s)
        self._never_placed_after = timedelta(seconds=never_placed_after_s)
        self._batch_size = batch_size
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep now and then every `interval_s`, in the background: start-up does not wait."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="order-sweep")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except StoreUnavailable as exc:
                logger.bind(dependency=self._store.dependency).warning(
                    "order sweep skipped: the store is unavailable ({})", exc
                )
            except Exception:  # a bug must not silently stop the sweep: log it, keep sweeping
                logger.exception("order sweep failed")
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> Counter[SweepResult]:
        """One pass over at most `batch_size` unsettled rows, oldest first; returns what it
        made of them and sets the unsettled-rows gauge. StoreUnavailable if the store fails."""
        now = self._clock()
        cutoff = now - self._min_age
        rows = await self._store.unsettled_order_audits(
            created_before=cutoff, limit=self._batch_size
        )
        results: Counter[SweepResult] = Counter()
        causes: Counter[str] = Counter()
        for row in rows:
            if self._desk.in_flight(row.client_order_id):
                continue  # the submit under way settles its own row
            result, cause = await self._settle(row, now)
            if result is not None:
                results[result] += 1
                self._metrics.order_swept(result)
            if cause is not None:
                causes[cause] += 1
        if causes:
            logger.bind(still_unknown=dict(causes)).warning(
                "order sweep: {} audit rows still unknown ({})",
                sum(causes.values()),
                ", ".join(f"{cause}: {count}" for cause, count in sorted(causes.items())),
            )
        left = await self._store.count_unsettled_order_audits(created_before=cutoff)
        self._metrics.order_audit_unsettled(left)
        return results

    async def _settle(
        self, row: OrderAuditRow, now: datetime
    ) -> tuple[SweepResult | None, str | None]:
        """(result, why still unknown); result None: another process settled the row first."""
        found = await self._desk.lookup(row.client_order_id)
        if isinstance(found, GatewayError):
            return "still_unknown", found.code.name  # could not ask: never "not there"
        if isinstance(found, dict):
            return await self._reconciled(row, found), None
        # Alpaca's own "not found": proof of absence only once no submit can still be sending.
        if now - row.created_at < self._never_placed_after:
            return "still_unknown", "not found yet"
        return await self._never_placed(row, now), None

    async def _reconciled(self, row: OrderAuditRow, found: Order) -> SweepResult | None:
        conflict = None
        if not _recorded_terms_match(row, found):
            # Still what Alpaca holds under the key, so the row keeps it; a retry of the
            # recorded request is refused as a conflict (orders._settled).
            conflict = GatewayError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "Alpaca holds an order under this client_order_id whose terms differ from the"
                " recorded request",
                extensions={"client_order_id": row.client_order_id},
            )
        settled = await self._store.settle_order_audit(
            row.id,
            status="reconciled",
            alpaca_order=found,
            error_code=None if conflict is None else conflict.code.name,
            error_detail=None if conflict is None else error_detail(conflict),
        )
        if not settled:
            return None
        log = logger.bind(
            audit_id=row.id,
            client_order_id=row.client_order_id,
            order_id=found.get("id"),
            result="reconciled",
        )
        if conflict is None:
            log.info("order audit {} settled by the sweep: Alpaca holds it", row.id)
        else:
            log.warning(
                "order audit {} settled by the sweep: Alpaca holds an order whose terms differ"
                " from the recorded request",
                row.id,
            )
        return "reconciled"

    async def _never_placed(self, row: OrderAuditRow, now: datetime) -> SweepResult | None:
        age_s = (now - row.created_at).total_seconds()
        never_placed = GatewayError(
            ErrorCode.ORDER_NOT_FOUND,
            f"Never placed: Alpaca holds no order under this client_order_id {age_s:.0f} s"
            " after it was recorded (settled by the order sweep)",
            extensions={"client_order_id": row.client_order_id},
        )
        settled = await self._store.settle_order_audit(
            row.id,
            status="failed",
            alpaca_order=None,
            error_code=never_placed.code.name,
            error_detail=error_detail(never_placed),
        )
        if not settled:
            return None
        logger.bind(
            audit_id=row.id, client_order_id=row.client_order_id, result="never_placed"
        ).warning(
            "order audit {} settled by the sweep: never placed (Alpaca has no such order {:.0f} s"
            " after it was recorded)",
            row.id,
            age_s,
        )
        return "never_placed"


def _recorded_terms_match(row: OrderAuditRow, found: Order) -> bool:
    try:
        recorded = OrderRequest.model_validate(row.request_body)
    except ValidationError:
        return False  # a request this version cannot read cannot be shown to match
    return same_order(recorded, found)
