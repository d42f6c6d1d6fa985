"""Order traffic and the checks both order scenarios make against Alpaca's book and the audit.

Each request is a new order under a new Idempotency-Key (`<run>-<n>`), as a bot places them.
After the fault, the emulator's order book (what Alpaca holds) is compared with the gateway's
`order_audit` table (read with SQL, not through the gateway) and with what clients were told.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tests.chaos.load import Answer, Request
from tests.chaos.rig import Rig
from tests.samples import QUOTE

ORDER = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
UNSETTLED = frozenset({"pending", "unknown"})
# A submit lasts at most TRADING_TIMEOUT_S x (attempts + 2) = 3 s here (no wait for budget:
# the account's budget is raised to match the emulator's below), so Alpaca's "not found" proves
# "never placed" from 3.5 s on; rows are looked up from 0.5 s of age, twice a second.
ORDER_SETTINGS = {
    "ALPACA_TRADING_BUDGET_PER_MINUTE": "100000000",
    "ALPACA_TRADING_BUDGET_BURST": "1000000",
    "ALPACA_ORDER_BUDGET_WAIT_S": "0",
    "TRADING_TIMEOUT_S": "1",
    "ORDER_RECONCILE_ATTEMPTS": "1",
    "ORDER_SWEEP_INTERVAL_S": "0.5",
    "ORDER_SWEEP_MIN_AGE_S": "0.5",
    "ORDER_SWEEP_NEVER_PLACED_AFTER_S": "3.5",
}
SETTLE_TIMEOUT_S = 30.0
RequestMaker = Callable[[int], Request]


async def prepare(rig: Rig) -> None:
    """AAPL tradable, and Alpaca's budget out of the way: a 429 on a submit is not the fault
    these scenarios inject, and would leave a POST without an order."""
    await rig.control.set_asset("AAPL", {})
    await rig.control.set_quote("AAPL", QUOTE)
    await rig.control.configure(rate_limit_per_minute=100_000_000)


def order_requests(run: str, key: str) -> RequestMaker:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def make(n: int) -> Request:
        idempotency = f"{run}-{n}"
        return Request(
            "POST", "/v1/orders", {**headers, "Idempotency-Key": idempotency}, ORDER, idempotency
        )

    return make


@dataclass(frozen=True)
class Book:
    """What Alpaca holds and what the gateway recorded, at one moment."""

    held: Counter[str]  # client_order_id -> orders Alpaca holds under it
    posts: int  # POST /v2/orders requests Alpaca received
    audit: dict[str, list[str]]  # client_order_id -> status of each audit row

    @property
    def sent_without_audit(self) -> int:
        return sum(1 for coid in self.held if coid not in self.audit)

    @property
    def unsettled_held(self) -> int:
        """Orders Alpaca holds with an audit row still pending or unknown."""
        return sum(1 for coid in self.held if UNSETTLED & set(self.audit.get(coid, ())))

    @property
    def unsettled_rows(self) -> int:
        return sum(1 for rows in self.audit.values() for s in rows if s in UNSETTLED)

    @property
    def max_per_client_order_id(self) -> int:
        return max(self.held.values(), default=0)

    def sent_twice(self, swallowed: int = 0) -> int:
        """POSTs that placed nothing, less the `swallowed` ones a `hang` fault held unprocessed
        (the emulator logs a request on arrival): what is left was refused by Alpaca as a
        second use of a client_order_id, i.e. an order sent twice."""
        return self.posts - swallowed - sum(self.held.values())

    def statuses(self) -> str:
        counts = Counter(s for rows in self.audit.values() for s in rows)
        return ",".join(f"{s}:{n}" for s, n in counts.most_common()) or "none"


async def book(rig: Rig) -> Book:
    orders = await rig.control.orders()
    requests = await rig.control.requests()
    return Book(
        held=Counter(str(o["client_order_id"]) for o in orders),
        posts=sum(1 for r in requests if r["method"] == "POST" and r["path"] == "/v2/orders"),
        audit=await rig.audit_statuses(),
    )


async def settled(rig: Rig, *, every_row: bool) -> tuple[Book, float | None]:
    """Wait for the sweep: until no held order's row (or no row at all) is unsettled. Returns
    the last book and the seconds it took, None if it never happened within the timeout."""
    started = time.monotonic()
    while True:
        now = await book(rig)
        left = now.unsettled_rows if every_row else now.unsettled_held
        if left == 0:
            return now, round(time.monotonic() - started, 2)
        if time.monotonic() - started > SETTLE_TIMEOUT_S:
            return now, None
        await asyncio.sleep(0.2)


def told_wrong(answers: Iterable[Answer], held: Counter[str]) -> int:
    """Answers that contradict Alpaca: a 2xx for an order it does not hold, or "not sent"
    (AUDIT_UNAVAILABLE says the order was not sent) for one it does."""
    return sum(1 for answer in answers if _contradicts(answer, held))


def _contradicts(answer: Answer, held: Counter[str]) -> bool:
    if answer.key is None:
        return False
    if answer.ok:
        return answer.key not in held
    return answer.code == "AUDIT_UNAVAILABLE" and answer.key in held
