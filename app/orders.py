"""Order submission that never sends an order twice and never loses one.

The Idempotency-Key becomes Alpaca's client_order_id, so Alpaca itself refuses a second order
with it. The request is recorded in the order audit before it is sent (no record, no order);
a timeout, reset or 5xx is resolved by asking Alpaca for the order by client_order_id, never by
sending it again. Concurrent submits with one key in this process share one attempt. A row
whose outcome was never learned (the process stopped, the store failed) is settled later by
the order sweep (app/order_sweep.py), which looks the order up the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from loguru import logger

from app.alpaca.trading import (
    DUPLICATE_CLIENT_ORDER_ID,
    ORDER_NOT_FOUND_CODE,
    Refusal,
    TradingAccountClient,
)
from app.errors import ANSWERED_WITHOUT_ALPACA, REFUSED_BY_ALPACA, ErrorCode, GatewayError
from app.models.trading import OrderRequest
from app.storage.records import AuditStatus, OrderAuditRequest, OrderAuditRow
from app.storage.store import Store, StoreUnavailable

Order = dict[str, Any]
# Failures that prove the order was not placed: never sent, or refused by Alpaca as a request.
_NOT_PLACED = ANSWERED_WITHOUT_ALPACA | REFUSED_BY_ALPACA


# Hashes of the order's meaning carry this prefix; rows written before it hold a hash of the
# body as sent (`_legacy_body_hash`), still honoured so an upgrade breaks no retry.
_MEANING = "m1:"


def body_hash(order: OrderRequest) -> str:
    """The Idempotency-Key's fingerprint of an order: its meaning, not its spelling."""
    canonical = json.dumps(order.meaning(), sort_keys=True, separators=(",", ":"))
    return _MEANING + hashlib.sha256(canonical.encode()).hexdigest()


def _legacy_body_hash(order: OrderRequest) -> str:
    canonical = json.dumps(
        order.model_dump(exclude_none=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def same_body(recorded_hash: str, order: OrderRequest) -> bool:
    if recorded_hash.startswith(_MEANING):
        return recorded_hash == body_hash(order)
    return recorded_hash == _legacy_body_hash(order)


@dataclass(frozen=True, slots=True)
class Placed:
    """The order Alpaca holds under the key; `replayed` when an earlier request placed it."""

    order: Order
    replayed: bool


class _NotFound:
    """Alpaca answered that it holds no order under the key."""


NOT_FOUND = _NotFound()


class OrderDesk:
    def __init__(
        self,
        trading: TradingAccountClient,
        store: Store,
        *,
        reconcile_attempts: int = 4,
        reconcile_first_wait_s: float = 0.25,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
    ) -> None:
        self._trading = trading
        self._store = store
        self._attempts = reconcile_attempts
        self._first_wait_s = reconcile_first_wait_s
        self._sleep = sleep
        self._in_flight: dict[str, tuple[str, asyncio.Task[Placed]]] = {}

    async def submit(
        self, key: str, order: OrderRequest, *, request_id: str, api_key_id: str | None
    ) -> Placed:
        digest = body_hash(order)
        joined = self._in_flight.get(key)
        if joined is not None:
            if joined[0] != digest:
                raise _conflict(key)
            # A concurrent repeat shares the attempt under way: for it, the answer is a replay.
            return Placed((await asyncio.shield(joined[1])).order, replayed=True)
        task = asyncio.ensure_future(self._submit_once(key, order, digest, request_id, api_key_id))
        self._in_flight[key] = (digest, task)
        task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # Shielded: a client that disconnects must not abandon an order half-way.
        return await asyncio.shield(task)

    async def _submit_once(
        self, key: str, order: OrderRequest, digest: str, request_id: str, api_key_id: str | None
    ) -> Placed:
        previous = await self._audits(key)
        if previous:
            if not same_body(previous[0].body_hash, order):
                raise _conflict(key)
            settled = _settled(previous, key)
            if settled is not None:
                return Placed(settled, replayed=True)
        audit_id = await self._record(key, order, digest, request_id, api_key_id)
        if previous:
            # An earlier attempt's fate is unknown: ask Alpaca before anything else, and send
            # nothing unless Alpaca itself says it holds no order under the key.
            found = await self.lookup(key)
            if isinstance(found, GatewayError):
                raise await self._unknown(audit_id, key, found)
            if not isinstance(found, _NotFound):
                return Placed(await self._reconciled(audit_id, key, order, found), replayed=True)
        try:
            answer = await self._trading.submit(order.wire(key))
        except GatewayError as exc:
            if exc.code in _NOT_PLACED:
                await self._complete(audit_id, "failed", error=exc)
                raise
            return await self._resolve_unknown(audit_id, key, order, exc)
        if isinstance(answer, Refusal):
            if _is_duplicate(answer):
                # Alpaca already holds an order with this key (another instance, an earlier
                # attempt): that order is the answer.
                duplicate = GatewayError(ErrorCode.ORDER_STATE_UNKNOWN, answer.message)
                return await self._resolve_unknown(audit_id, key, order, duplicate, replayed=True)
            rejected = _rejected(answer)
            await self._complete(audit_id, "rejected", error=rejected)
            raise rejected
        await self._complete(audit_id, "submitted", order=answer)
        return Placed(answer, replayed=False)

    async def _resolve_unknown(
        self,
        audit_id: int,
        key: str,
        order: OrderRequest,
        cause: GatewayError,
        *,
        replayed: bool = False,
    ) -> Placed:
        wait_s = self._first_wait_s
        last: GatewayError = cause
        for attempt in range(self._attempts):
            found = await self.lookup(key)
            if isinstance(found, GatewayError):
                last = found  # could not ask: still unknown, never "not there"
            elif not isinstance(found, _NotFound):
                return Placed(await self._reconciled(audit_id, key, order, found), replayed)
            if attempt + 1 < self._attempts:
                await self._sleep(wait_s)
                wait_s *= 2
        raise await self._unknown(audit_id, key, last)

    async def _unknown(self, audit_id: int, key: str, cause: GatewayError) -> GatewayError:
        """ORDER_STATE_UNKNOWN, recorded: the client must look the order up, not resend it."""
        unknown = GatewayError(
            ErrorCode.ORDER_STATE_UNKNOWN,
            f"Alpaca did not confirm the order ({cause.code.name}) and it could not be found by "
            "its client_order_id yet; look it up before sending it again",
            upstream="trading",
            retry_after_s=1,
            extensions={"client_order_id": key},
        )
        unknown.__cause__ = cause
        await self._complete(audit_id, "unknown", error=unknown)
        return unknown

    async def _reconciled(
        self, audit_id: int, key: str, order: OrderRequest, found: Order
    ) -> Order:
        """The order Alpaca holds under this key is the answer, if it is this order."""
        if not same_order(order, found):
            # Another body used this key earlier (elsewhere: another instance, Alpaca directly).
            conflict = _conflict(key)
            await self._complete(audit_id, "rejected", error=conflict)
            raise conflict
        await self._complete(audit_id, "reconciled", order=found)
        return found

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Let submits already under way finish (their clients may be gone) before the
        sessions and the store they need are closed."""
        pending = [task for _, task in self._in_flight.values()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    def in_flight(self, key: str) -> bool:
        """A submit with this key is under way in this process (it will settle its own row)."""
        return key in self._in_flight

    async def lookup(self, key: str) -> Order | _NotFound | GatewayError:
        """The order Alpaca holds under the key; NOT_FOUND only on Alpaca's own "not found".

        Any other failure (timeout, 5xx, an answer we cannot read, a bare 404) means we could
        not ask, which is not the same as "there is no order": reading it as absence would
        invite a second order.
        """
        try:
            found = await self._trading.order_by_client_id(key)
        except GatewayError as exc:
            return exc
        if not isinstance(found, Refusal):
            return found
        if found.status == 404 and found.code == ORDER_NOT_FOUND_CODE:
            return NOT_FOUND
        return GatewayError(
            ErrorCode.UPSTREAM_BAD_RESPONSE,
            f"order lookup: HTTP {found.status} without Alpaca's not-found body",
            upstream="trading",
        )

    async def _audits(self, key: str) -> list[OrderAuditRow]:
        try:
            return await self._store.order_audits(key)
        except StoreUnavailable as exc:
            raise _audit_unavailable() from exc

    async def _record(
        self, key: str, order: OrderRequest, digest: str, request_id: str, api_key_id: str | None
    ) -> int:
        request = OrderAuditRequest(
            client_order_id=key,
            request_body=order.model_dump(exclude_none=True),
            body_hash=digest,
            request_id=request_id,
            api_key_id=api_key_id,
        )
        try:
            return await self._store.insert_order_audit(request)
        except StoreUnavailable as exc:
            raise _audit_unavailable() from exc

    async def _complete(
        self,
        audit_id: int,
        status: AuditStatus,
        *,
        order: Order | None = None,
        error: GatewayError | None = None,
    ) -> None:
        try:
            await self._store.complete_order_audit(
                audit_id,
                status=status,
                alpaca_order=order,
                error_code=None if error is None else error.code.name,
                error_detail=None if error is None else error_detail(error),
            )
        except Exception:
            # Alpaca has answered: whatever the store raised (unavailable, or a failure of a
            # kind we did not foresee), the client gets Alpaca's answer. A 500 here would tell
            # a bot "failed" about an order that exists, and invite a second one. The row
            # stays `pending` and the log says so, with the traceback.
            logger.bind(dependency="store", audit_id=audit_id).opt(exception=True).error(
                "order audit {} could not record its outcome ({})", audit_id, status
            )


def error_detail(error: GatewayError) -> str:
    """What an audit row keeps of an error: its detail and extensions, as JSON text."""
    return json.dumps({"detail": error.detail, **error.extensions}, default=str)


def _settled(previous: list[OrderAuditRow], key: str) -> Order | None:
    """The answer an earlier attempt already got, if it got one; raises a kept rejection."""
    for row in reversed(previous):
        if row.status in ("submitted", "reconciled") and row.alpaca_order is not None:
            if row.error_code is None:
                return row.alpaca_order
            # Reconciled by the order sweep with an order whose terms differ from the request:
            # what Alpaca holds, but not this order.
            raise _kept_error(row, key)
        if row.status == "rejected":
            raise _kept_error(row, key)
    return None


def _kept_error(row: OrderAuditRow, key: str) -> GatewayError:
    kept = json.loads(row.error_detail or "{}")
    # Rejected by Alpaca, or refused here because the key belongs to another order.
    code = ErrorCode.__members__.get(row.error_code or "", ErrorCode.ORDER_REJECTED)
    return GatewayError(
        code,
        str(kept.pop("detail", "Alpaca rejected the order")),
        upstream="trading" if code is ErrorCode.ORDER_REJECTED else None,
        extensions={**kept, "client_order_id": key},
    )


def same_order(order: OrderRequest, found: Order) -> bool:
    """Alpaca's order matches the request on what defines it (decimals compared by value): the
    instrument, side, type, time in force, size, extended hours and every price the request set.
    Prices it did not set are not compared: Alpaca fills in some itself (a trailing stop's
    stop_price and hwm)."""

    def same_decimal(ours: str | None, theirs: Any) -> bool:
        if ours is None or theirs is None:
            return ours is None and theirs is None
        try:
            return Decimal(ours) == Decimal(str(theirs))
        except ArithmeticError:
            return False

    prices = {
        "limit_price": order.limit_price,
        "stop_price": order.stop_price,
        "trail_price": order.trail_price,
        "trail_percent": order.trail_percent,
    }
    return (
        found.get("symbol") == order.symbol
        and found.get("side") == order.side
        and found.get("type", found.get("order_type")) == order.type
        and found.get("time_in_force") == order.time_in_force
        and bool(found.get("extended_hours")) == bool(order.extended_hours)
        and same_decimal(order.qty, found.get("qty"))
        and same_decimal(order.notional, found.get("notional"))
        and all(
            ours is None or same_decimal(ours, found.get(name)) for name, ours in prices.items()
        )
    )


def _is_duplicate(answer: Refusal) -> bool:
    # Alpaca reuses 40010001 for other validation errors ("asset X not found", ...): only its
    # uniqueness message means the order already exists.
    return (
        answer.status == 422
        and answer.code == DUPLICATE_CLIENT_ORDER_ID
        and "client_order_id must be unique" in answer.message
    )


def _rejected(answer: Refusal) -> GatewayError:
    return GatewayError(
        ErrorCode.ORDER_REJECTED,
        answer.message,
        upstream="trading",
        extensions={"alpaca_code": answer.code, "upstream_status": answer.status},
    )


def _conflict(key: str) -> GatewayError:
    return GatewayError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        "This Idempotency-Key was already used with a different order body",
        extensions={"client_order_id": key},
    )


def _audit_unavailable() -> GatewayError:
    return GatewayError(
        ErrorCode.AUDIT_UNAVAILABLE,
        "The order was not sent: it could not be recorded in the audit first",
        retry_after_s=1,
    )
