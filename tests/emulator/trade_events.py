"""The ``trade_updates`` events an order's changes produce, as Alpaca's trade stream sends them.

The emulator's orders change in request handlers (a submit, a cancel, a replace, a test's
``PUT /_emulator/orders/{id}/status``). :class:`OrderWatch` compares every order with what it
last saw, after each request that may change one, and names the events: ``new`` for an order
seen for the first time, then one event per change of status, or ``fill`` / ``partial_fill``
when ``filled_qty`` grew. So any way an order moves, now or added later, is reported, at the
moment it happened (before a fault such as ``accept_then_hang`` holds the HTTP answer back).

The event's ``order`` is exactly what ``GET /v2/orders/{id}`` answers at that moment (the
configuration's shapes included). The emulator does not route orders, so an order stays
``accepted`` until a test moves it, and the ``new`` event of a submitted order carries it as
``accepted`` (at Alpaca the order in a ``new`` event says ``new``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .config import Config
from .decimals import decimal_text
from .order_book import OrderBook, StoredOrder
from .sdk_shapes import order_answer
from .wire_json import Json, JsonObject

# Order status -> the event Alpaca sends when an order reaches it. Statuses without an event
# of their own (held, accepted_for_bidding, pending_review) send none.
STATUS_EVENTS = {
    "new": "new", "accepted": "accepted", "pending_new": "pending_new",
    "partially_filled": "partial_fill", "filled": "fill", "done_for_day": "done_for_day",
    "canceled": "canceled", "expired": "expired", "replaced": "replaced",
    "pending_cancel": "pending_cancel", "pending_replace": "pending_replace",
    "rejected": "rejected", "stopped": "stopped", "suspended": "suspended",
    "calculated": "calculated",
}  # fmt: skip
# The order's own time of the status an event reports (else updated_at).
_STATUS_TIMES = {"filled": "filled_at", "canceled": "canceled_at", "expired": "expired_at",
                 "rejected": "failed_at", "replaced": "replaced_at"}  # fmt: skip


@dataclass(frozen=True)
class _Seen:
    status: str
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    updated_at: Json


def _decimal(value: Json) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _seen(order: StoredOrder) -> _Seen:
    wire = order.wire
    return _Seen(
        status=order.status,
        filled_qty=_decimal(wire.get("filled_qty")) or Decimal(0),
        filled_avg_price=_decimal(wire.get("filled_avg_price")),
        updated_at=wire.get("updated_at"),
    )


class OrderWatch:
    """What the watch last saw of every order; :meth:`events` reports what changed since."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def forget(self) -> None:
        """Forget every order (the emulator was reset)."""
        self._seen.clear()

    def events(
        self, book: OrderBook, config: Config, positions: dict[str, JsonObject]
    ) -> list[JsonObject]:
        """The ``data`` of each event since the last call, in order-book order."""
        found: list[JsonObject] = []
        current: dict[str, _Seen] = {}
        for order in book.all():
            now = _seen(order)
            current[order.id] = now
            before = self._seen.get(order.id)
            if before == now:
                continue
            event = _event(before, now, order, config, positions)
            if event is not None:
                found.append(event)
        self._seen = current  # orders gone (a reset) are forgotten
        return found


def _event(
    before: _Seen | None,
    now: _Seen,
    order: StoredOrder,
    config: Config,
    positions: dict[str, JsonObject],
) -> JsonObject | None:
    fill: JsonObject = {}
    if before is None:
        name: str | None = "new"
    elif now.filled_qty > before.filled_qty:
        name = "fill" if now.status == "filled" else "partial_fill"
        fill = _fill_fields(before, now, order, positions)
    elif now.status != before.status:
        name = STATUS_EVENTS.get(now.status)
    else:
        name = None
    if name is None:
        return None
    stamp = order.wire.get(_STATUS_TIMES.get(now.status, "updated_at")) or now.updated_at
    return {
        "event": name,
        "execution_id": str(uuid.uuid4()),
        "order": order_answer(order, config),
        **fill,
        "timestamp": stamp,
    }


def _fill_fields(
    before: _Seen, now: _Seen, order: StoredOrder, positions: dict[str, JsonObject]
) -> JsonObject:
    """This execution's qty and price (from the cumulative qty and average price before and
    after), and the position after it: the stored position's qty ("0" without one), since the
    emulator does not move positions on fills; a test stores the position it wants reported."""
    qty = now.filled_qty - before.filled_qty
    fields: JsonObject = {}
    position = positions.get(str(order.wire.get("symbol")))
    held = _decimal(position.get("qty")) if position is not None else None
    fields["position_qty"] = decimal_text(held if held is not None else Decimal(0))
    if now.filled_avg_price is not None:
        spent_before = before.filled_qty * (before.filled_avg_price or Decimal(0))
        price = (now.filled_qty * now.filled_avg_price - spent_before) / qty
        fields["price"] = decimal_text(price)
    fields["qty"] = decimal_text(qty)
    return fields
