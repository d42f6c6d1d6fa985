"""Alpaca's 429 and what follows it: a hold until its reset, then one probe before the rest.

Alpaca answers 429 (or any answer with `X-RateLimit-Remaining: 0`) with `X-RateLimit-Reset`
(unix seconds). Until then no call is sent. When the reset passes, every call that was refused
meanwhile (clients retry on `Retry-After`) would leave in the same instant; if Alpaca's window
has not in fact reset (its clock and ours differ, the header has whole seconds), each of them
meets another 429. So the hold ends with a probe:

- **held** (`now < until`): every call is refused; the wait is the time left.
- **probing** (the reset has passed, no call answered since): the first call admitted is the
  probe. While it is out, other calls are refused with a wait of one second. Any answer other
  than a 429 ends the probing and calls flow freely; a 429 starts a new hold. A probe that never
  answers (timeout, dropped connection, its caller gone) frees its slot after `probe_lease_s`,
  and the next call is the probe.
- **clear**: calls go.

No I/O and an injected clock: this is one process's hold, used by the in-process budget
(`app.alpaca.budget.LocalBudget`). Across instances the same states live in Redis, in the shared
budget's Lua script (`app.alpaca.shared_budget`), so one 429 holds every instance and the fleet
sends one probe, not one per instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# What a call refused while the probe is out is told to wait: the probe answers well within it.
PROBE_WAIT_S = 1.0


class RateLimitHold:
    """One upstream's 429 hold and probe (see the module docstring)."""

    def __init__(self, *, probe_lease_s: float, clock: Callable[[], float] = time.time) -> None:
        """`probe_lease_s` should cover one call's whole timeout, so a slow probe is not
        joined by a second one."""
        self._probe_lease_s = probe_lease_s
        self._clock = clock
        self._until = 0.0
        self._probing = False
        self._probe_until = 0.0  # 0.0: no probe out

    def hold(self, until: float) -> None:
        """Alpaca answered 429: no call before `until` (on `clock`), then a probe."""
        self._until = until
        self._probing = True
        self._probe_until = 0.0

    def wait_s(self) -> float:
        """0.0 when a call may go now, else how long its caller should wait. Only looks."""
        now = self._clock()
        if now < self._until:
            return self._until - now
        if self._probing and now < self._probe_until:
            return PROBE_WAIT_S
        return 0.0

    def admit(self) -> bool:
        """A call `wait_s` let through is being sent; True when it is the probe (its answer
        must then be reported through `answered`)."""
        if self._probing and self._clock() >= self._probe_until:
            self._probe_until = self._clock() + self._probe_lease_s
            return True
        return False

    def answered(self) -> None:
        """Alpaca answered a call with anything but a 429: once a probe is out, that is the
        news it was sent for (the budget is back)."""
        if self._probing and self._probe_until:
            self._probing = False
            self._probe_until = 0.0
