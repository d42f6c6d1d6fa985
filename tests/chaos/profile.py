"""How long and how hard each scenario runs: `full` for `make chaos`, `short` for `make test`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    before_s: float  # steady load before the fault (the first second of it warms the cache)
    fault_s: float  # how long the fault lasts
    after_s: float  # load after it is healed
    workers: int  # concurrent clients
    max_requests: int  # per load run, whatever the time
    order_workers: int  # concurrent clients submitting orders
    breaker_open_s: float  # BREAKER_OPEN_DURATION_S of the upstream-fault gateway
    quiet_s: float  # recovered: this long with only 2xx answers and the breaker closed


FULL = Profile(
    "full",
    before_s=3,
    fault_s=6,
    after_s=6,
    workers=32,
    max_requests=400_000,
    order_workers=16,
    breaker_open_s=3,
    quiet_s=1.0,
)
# make test's run: every scenario and goal in under a minute of a 2-core machine; the breaker
# (open 1 s) opens within 0.1-0.6 s of a fault, so it is still seen open inside each one.
SHORT = Profile(
    "short",
    before_s=1.0,
    fault_s=1.0,
    after_s=1.5,
    workers=16,
    max_requests=100_000,
    order_workers=8,
    breaker_open_s=1.0,
    quiet_s=0.5,
)
PROFILES = {p.name: p for p in (FULL, SHORT)}
