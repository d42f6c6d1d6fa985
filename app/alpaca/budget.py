"""The account's Alpaca rate budget: what may be sent to Alpaca, before it is sent.

Alpaca limits calls per account and per API host, not per gateway instance: the data host
(stocks and options data) and the trading host (trading and reference data) each allow
`per_minute` calls. Every upstream call first takes a cell from its host's *lane*:

- **GCRA.** A lane is a generic-cell-rate limiter: one theoretical arrival time (TAT) per lane,
  one cell every `interval` = 60 s / (per_minute - burst), and up to `burst` cells at once. So
  no 60-second window, wherever it starts, holds more than `per_minute` calls (burst + the
  cells one minute regenerates), whatever window Alpaca counts in. A refused call learns the
  exact time until it would conform (`retry_after`), which becomes its `Retry-After`.
- **Orders first.** On the trading lane `reserve` cells of the burst are for *priority* calls
  (order submit, replace, cancel and the by-client-order-id lookups that reconcile them); reads
  (account, positions, assets, clock...) may only take the cells above it. A flood of reads
  therefore always leaves `reserve` cells to orders, and when an order takes them the reads
  wait for them to come back. A priority call may also wait up to `priority_wait_s` for its
  cell (it is booked, then sent when due); a read is refused at once.
- **Alpaca's word wins.** A 429, or an answer saying `X-RateLimit-Remaining: 0`, blocks the lane
  until Alpaca's reset (someone else spent the account's budget), then one probe goes before the
  rest (`RateLimitHold`).

`LocalBudget` is the in-process lane (no Redis, or Redis down); `app.alpaca.shared_budget` is the
same algorithm in one Lua script on Redis, shared by every instance.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from app.alpaca.rate_hold import RateLimitHold
from app.errors import Upstream

Lane = Literal["data", "trading"]
LANES: tuple[Lane, ...] = ("data", "trading")
# The host whose limit each upstream spends: options data lives on the data host, reference
# data (assets, contracts, clock) on the trading host.
LANE_OF: dict[Upstream, Lane] = {
    "data": "data",
    "options": "data",
    "trading": "trading",
    "reference": "trading",
}
# What an order needs from Alpaca: placing, changing and cancelling it, and the lookups that
# settle a submit whose answer was lost (OrderDesk, the order sweep, a bot's own reconcile).
PRIORITY_ENDPOINTS = frozenset(
    {"submit_order", "replace_order", "cancel_order", "cancel_orders", "order_by_client_id"}
)
ThrottleReason = Literal["budget", "alpaca_block"]
THROTTLE_REASONS: tuple[ThrottleReason, ...] = ("budget", "alpaca_block")


def account_tag(key_id: str) -> str:
    """What names the account in Redis keys: a hash of the key id, never the key itself."""
    return hashlib.sha256(key_id.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class LaneConfig:
    per_minute: int
    burst: int
    reserve: int = 0  # cells of the burst only priority calls may take
    priority_wait_s: float = 0.0  # longest a priority call waits for its cell

    def __post_init__(self) -> None:
        if not 0 < self.burst < self.per_minute:
            raise ValueError("a lane's burst must be at least 1 and below its per-minute budget")
        if not 0 <= self.reserve < self.burst:
            raise ValueError("the order reserve must be below the lane's burst")

    @property
    def interval_s(self) -> float:
        """Time between cells once the burst is spent."""
        return 60.0 / (self.per_minute - self.burst)

    def allowance(self, priority: bool) -> int:
        """Cells a call of this kind may find ahead of it."""
        return self.burst if priority else self.burst - self.reserve

    def share(self, parts: int) -> LaneConfig:
        """This lane divided among `parts` processes (each one's fallback when Redis is away)."""
        if parts <= 1:
            return self
        per_minute = max(2, self.per_minute // parts)
        burst = min(max(1, self.burst // parts), per_minute - 1)
        reserve = min(math.ceil(self.reserve / parts), burst - 1)
        return LaneConfig(per_minute, burst, reserve, self.priority_wait_s)


@dataclass(frozen=True, slots=True)
class Grant:
    """A cell was taken: send after `delay_s`. `probe`: this call ends a hold (see
    `RateLimitHold`); its answer must be reported."""

    delay_s: float = 0.0
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Throttle:
    """Refused: nothing may be sent for this call for `wait_s`."""

    reason: ThrottleReason
    wait_s: float


class Budget(Protocol):
    """One lane, as the transports of its host use it."""

    lane: Lane

    def wait_s(self) -> float:
        """What this process knows, without I/O, of a hold Alpaca imposed: 0.0 or the wait."""
        ...

    async def take(self, priority: bool) -> Grant | Throttle: ...

    async def block(self, wait_s: float) -> None:
        """Alpaca said the account's budget is spent for `wait_s`: hold, then one probe."""
        ...

    async def probe_answered(self) -> None:
        """The probe a `Grant` named came back with anything but a 429."""
        ...

    def remaining(self) -> float:
        """Cells a priority call would find now, as last seen (a gauge)."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """One GCRA step: the new TAT when granted, else how long until the call would conform."""

    granted: bool
    tat: float
    wait_s: float


def gcra(tat: float, now: float, interval: float, allowance: int, max_wait: float) -> Decision:
    """Take one cell (the same arithmetic as the Lua script in `shared_budget`)."""
    new_tat = max(tat, now) + interval
    over = new_tat - now - allowance * interval  # > 0: the cell is not due yet
    if over > max_wait:
        return Decision(False, tat, over)
    return Decision(True, new_tat, max(over, 0.0))


class LocalBudget:
    """A lane in this process only: the whole budget (one instance, no Redis) or this
    instance's share of it (Redis away). Alpaca's holds are this process's `RateLimitHold`."""

    def __init__(
        self,
        lane: Lane,
        config: LaneConfig,
        *,
        probe_lease_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lane: Lane = lane
        self.config = config
        self._clock = clock
        self._tat = 0.0
        self._hold = RateLimitHold(probe_lease_s=probe_lease_s, clock=clock)

    def wait_s(self) -> float:
        return self._hold.wait_s()

    async def take(self, priority: bool) -> Grant | Throttle:
        return self.take_now(priority)

    def take_now(self, priority: bool) -> Grant | Throttle:
        held_s = self._hold.wait_s()
        if held_s > 0:
            return Throttle("alpaca_block", held_s)
        config = self.config
        decision = gcra(
            self._tat,
            self._clock(),
            config.interval_s,
            config.allowance(priority),
            config.priority_wait_s if priority else 0.0,
        )
        if not decision.granted:
            return Throttle("budget", decision.wait_s)
        self._tat = decision.tat
        return Grant(decision.wait_s, probe=self._hold.admit())

    async def block(self, wait_s: float) -> None:
        self._hold.hold(self._clock() + wait_s)

    async def probe_answered(self) -> None:
        self._hold.answered()

    def remaining(self) -> float:
        ahead = max(self._tat - self._clock(), 0.0)
        return max(math.floor(self.config.burst - ahead / self.config.interval_s), 0)
