"""The emulated account's orders, in submission order, findable by id and client_order_id.

Alpaca keeps ``client_order_id`` unique across every order of the account, whatever its status,
so the index is never pruned while the emulator runs (``POST /_emulator/reset`` empties it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .wire_json import JsonObject

CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})
ORDER_STATUSES = frozenset({
    "new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced",
    "pending_cancel", "pending_replace", "pending_review", "accepted", "pending_new",
    "accepted_for_bidding", "stopped", "rejected", "suspended", "calculated", "held",
})  # fmt: skip


@dataclass
class StoredOrder:
    """One order: its wire object (mutated as its status moves) and its submission time.

    ``numbers`` keeps qty, filled_qty, filled_avg_price, limit_price and stop_price as they were
    sent (their own text, ``400.10`` stays ``400.10``) for the ``sdk_shapes`` answers; ``wire``
    holds them normalised, as Alpaca's documented answers do.
    """

    submitted_ns: int
    wire: JsonObject
    numbers: dict[str, Decimal] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The order id."""
        return str(self.wire["id"])

    @property
    def status(self) -> str:
        """The current status."""
        return str(self.wire["status"])

    @property
    def is_open(self) -> bool:
        """Whether the order still works (``status=open`` lists it; it can be canceled)."""
        return self.status not in CLOSED_STATUSES


class OrderBook:
    """Every order the emulated account holds."""

    def __init__(self) -> None:
        self._by_id: dict[str, StoredOrder] = {}
        self._by_client_id: dict[str, StoredOrder] = {}

    def add(self, order: StoredOrder) -> None:
        """Keep a new order; its id and client_order_id must be unused (checked by callers)."""
        self._by_id[order.id.lower()] = order
        self._by_client_id[str(order.wire["client_order_id"])] = order

    def get(self, order_id: str) -> StoredOrder | None:
        """The order with this id (UUIDs compare case-insensitively)."""
        return self._by_id.get(order_id.lower())

    def by_client_order_id(self, client_order_id: str) -> StoredOrder | None:
        """The order submitted with this client_order_id (exact match)."""
        return self._by_client_id.get(client_order_id)

    def all(self) -> list[StoredOrder]:
        """Every order, in submission order."""
        return list(self._by_id.values())
