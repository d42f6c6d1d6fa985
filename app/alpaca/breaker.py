"""Circuit breaker for one upstream: a resilience4j-style state machine with no I/O.

CLOSED records outcomes in a count-based sliding window and opens when the failure or slow-call
rate reaches its threshold. OPEN rejects until ``open_duration_s`` has passed. HALF_OPEN admits
exactly ``half_open_calls`` leased trial calls, whose results decide between CLOSED and OPEN.
The clock is injected and nothing here awaits, so each method is atomic within one asyncio loop.
Several instances share one verdict through `app/alpaca/shared_breaker.py`, which falls back to
this breaker (`adopt` hands it the fleet's last verdict) whenever Redis is away.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Final, Literal, Protocol


class BreakerState(StrEnum):
    """Breaker states; the values (and ``str(state)``) double as metric label values."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def gauge_value(self) -> int:
        """0 closed, 1 half-open, 2 open: the usual Prometheus encoding."""
        return _GAUGE_VALUES[self.value]


_GAUGE_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}

# A rejection never says "retry now": zero would invite an immediate, futile retry.
_MIN_RETRY_AFTER_S: Final = 0.001

Transition = Callable[[str, BreakerState, BreakerState], None]
"""Called as ``(breaker name, from_state, to_state)`` after each state change."""

BreakerSource = Literal["shared", "local"]
"""Where a breaker's verdict comes from: the fleet's state in Redis, or this process alone."""
BREAKER_SOURCES: Final[tuple[BreakerSource, ...]] = ("shared", "local")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Tuning for one breaker; rates are fractions in (0, 1], durations seconds."""

    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_duration_s: float = 2.0
    slow_call_rate_threshold: float = 1.0
    open_duration_s: float = 30.0
    half_open_calls: int = 3
    half_open_permit_ttl_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_calls <= self.window_size:
            raise ValueError(f"need 1 <= minimum_calls <= window_size: {self}")
        if self.half_open_calls < 1:
            raise ValueError(f"need half_open_calls >= 1: {self}")
        for name, rate in (
            ("failure_rate_threshold", self.failure_rate_threshold),
            ("slow_call_rate_threshold", self.slow_call_rate_threshold),
        ):
            if not 0.0 < rate <= 1.0:  # also rejects NaN
                raise ValueError(f"need 0 < {name} <= 1: {self}")
        for name, seconds in (
            ("slow_call_duration_s", self.slow_call_duration_s),
            ("open_duration_s", self.open_duration_s),
            ("half_open_permit_ttl_s", self.half_open_permit_ttl_s),
        ):
            if not (math.isfinite(seconds) and seconds > 0.0):
                raise ValueError(f"need a finite {name} > 0: {self}")


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A point-in-time view for metrics and health pages.

    The window is the one that decides now: the sliding window in CLOSED, the window that
    tripped the breaker in OPEN, the trial results in HALF_OPEN. Rates are None until it holds
    its minimum number of calls (all ``half_open_calls`` for trials).
    """

    state: BreakerState
    calls_in_window: int
    failure_rate: float | None
    slow_call_rate: float | None
    retry_after_s: float
    half_open_in_flight: int
    source: BreakerSource = "local"
    opened_by: str | None = None  # the instance whose calls last opened it, if known


class CallNotPermitted(Exception):
    """The breaker refused a call; a call may be admitted in ``retry_after_s`` (> 0)."""

    def __init__(self, upstream: str, state: BreakerState, retry_after_s: float) -> None:
        super().__init__(f"{upstream} circuit {state.value}, retry in {retry_after_s}s")
        self.upstream = upstream
        self.state = state
        self.retry_after_s = retry_after_s


# (failed, duration_s), or None for an outcome that counts neither way.
Outcome = tuple[bool, float] | None


class Permit:
    """Admission for one call. Report its outcome once; later reports are no-ops."""

    __slots__ = ("_settle", "_settled")

    def __init__(self, settle: Callable[[Outcome], None]) -> None:
        self._settle = settle
        self._settled = False

    def record_success(self, duration_s: float) -> None:
        self._report((False, duration_s))

    def record_failure(self, duration_s: float) -> None:
        self._report((True, duration_s))

    def record_ignored(self) -> None:
        """Neither success nor failure (client error, 429, auth): frees a trial slot."""
        self._report(None)

    def _report(self, outcome: Outcome) -> None:
        if outcome is not None and not outcome[1] >= 0.0:
            raise ValueError(f"duration_s must be >= 0: {outcome[1]}")
        if not self._settled:
            self._settled = True
            self._settle(outcome)


class Breaker(Protocol):
    """What the transport and /ready use: `CircuitBreaker`, or the fleet's `SharedBreaker`."""

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> BreakerState: ...

    def acquire(self) -> Permit: ...

    def retry_after_s(self) -> float: ...

    def snapshot(self) -> BreakerSnapshot: ...


class _Window:
    """Count-based sliding window over the last ``size`` outcomes, updated in O(1)."""

    __slots__ = ("_head", "_slots", "calls", "failures", "minimum_calls", "slow_calls")

    def __init__(self, size: int, minimum_calls: int) -> None:
        self._slots: list[tuple[bool, bool]] = [(False, False)] * size  # failed, slow
        self._head = 0
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0
        self.minimum_calls = minimum_calls

    def add(self, failed: bool, slow: bool) -> None:
        if self.calls == len(self._slots):  # full: evict the oldest by subtraction
            old_failed, old_slow = self._slots[self._head]
            self.failures -= old_failed
            self.slow_calls -= old_slow
        else:
            self.calls += 1
        self._slots[self._head] = (failed, slow)
        self.failures += failed
        self.slow_calls += slow
        self._head = (self._head + 1) % len(self._slots)

    def rates(self) -> tuple[float, float] | None:
        """(failure rate, slow-call rate), or None below the minimum number of calls."""
        if self.calls < self.minimum_calls:
            return None
        return self.failures / self.calls, self.slow_calls / self.calls


class CircuitBreaker:
    """One upstream's breaker. Not thread-safe: it lives inside one event loop."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: Transition | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        # Bumped on every state change and reset; a permit counts only in its own.
        self._generation = 0
        self._window = _Window(config.window_size, config.minimum_calls)
        self._open_until = 0.0
        self._leases: dict[int, float] = {}  # half-open permit serial -> lease expiry
        self._serials = itertools.count()

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> BreakerState:
        """Current state; reading it performs a due OPEN -> HALF_OPEN move."""
        self._advance(self._clock())
        return self._state

    def acquire(self) -> Permit:
        """Admit one call or raise CallNotPermitted."""
        now = self._clock()
        self._advance(now)
        retry_after_s = self._retry_after(now)
        if retry_after_s > 0.0:  # zero exactly when a call is admissible now
            raise CallNotPermitted(self._name, self._state, retry_after_s)
        serial = next(self._serials)
        if self._state is BreakerState.HALF_OPEN:
            self._leases[serial] = now + self._config.half_open_permit_ttl_s
        return Permit(partial(self._settle, self._generation, serial))

    def retry_after_s(self) -> float:
        """Seconds until a call may be admitted; 0 when one would be admitted now."""
        now = self._clock()
        self._advance(now)
        return self._retry_after(now)

    def snapshot(self) -> BreakerSnapshot:
        """State, rates and admission at this instant (performs a due OPEN -> HALF_OPEN move)."""
        now = self._clock()
        self._advance(now)
        rates = self._window.rates()
        return BreakerSnapshot(
            state=self._state,
            calls_in_window=self._window.calls,
            failure_rate=None if rates is None else rates[0],
            slow_call_rate=None if rates is None else rates[1],
            retry_after_s=self._retry_after(now),
            half_open_in_flight=len(self._leases),
        )

    def reset(self) -> None:
        """Back to CLOSED with an empty window; outstanding permits stop counting."""
        self._move_to(BreakerState.CLOSED, self._clock())

    def adopt(self, state: BreakerState, open_until: float = 0.0) -> None:
        """Take a verdict reached elsewhere (the fleet's, when this breaker takes over from
        it): CLOSED with an empty window, OPEN until clock time `open_until` (at once
        HALF_OPEN if that has passed), or HALF_OPEN with all its trials to run. Outstanding
        permits stop counting, as on any move."""
        now = self._clock()
        self._move_to(state, now)
        if state is BreakerState.OPEN:
            self._window = _Window(self._config.window_size, self._config.minimum_calls)
            self._open_until = open_until
            self._advance(now)

    def _advance(self, now: float) -> None:
        # No timer: as in resilience4j's default, the first observer after the wait performs
        # the move, so on_transition fires exactly once and in-line.
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._move_to(BreakerState.HALF_OPEN, now)
        elif self._state is BreakerState.HALF_OPEN:
            # A trial that never reports must not wedge HALF_OPEN (Hystrix #1863).
            self._leases = {s: exp for s, exp in self._leases.items() if exp > now}

    def _retry_after(self, now: float) -> float:
        if self._state is BreakerState.OPEN:
            return self._open_until - now  # > 0, or _advance would have left OPEN
        trials = len(self._leases) + self._window.calls
        if self._state is BreakerState.CLOSED or trials < self._config.half_open_calls:
            return 0.0
        # HALF_OPEN and full: unless a trial reports, a slot frees as its lease lapses.
        oldest_expiry = min(self._leases.values(), default=now)
        return max(oldest_expiry - now, _MIN_RETRY_AFTER_S)

    def _settle(self, generation: int, serial: int, outcome: Outcome) -> None:
        if generation != self._generation:
            # Granted under an earlier state, it describes the upstream before the breaker
            # last acted: counted now, a pre-outage failure could re-trip a freshly closed
            # breaker, or a CLOSED-era call could vote in the half-open verdict, which the
            # trials alone must decide.
            return
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            expiry = self._leases.pop(serial, None)
            if expiry is None or expiry <= now:
                return  # lease lapsed: its slot may already belong to another trial
        if outcome is None:
            return
        failed, duration_s = outcome
        self._window.add(failed, duration_s >= self._config.slow_call_duration_s)
        self._evaluate(now)

    def _evaluate(self, now: float) -> None:
        # In HALF_OPEN the window's minimum is half_open_calls, so nothing is decided until
        # every trial has reported. We do not reopen on the first failed trial: the thresholds
        # are rates, and one probe behind a load balancer can mislead (resilience4j #343).
        rates = self._window.rates()
        if rates is None:
            return
        failure_rate, slow_call_rate = rates
        if (
            failure_rate >= self._config.failure_rate_threshold
            or slow_call_rate >= self._config.slow_call_rate_threshold
        ):
            self._move_to(BreakerState.OPEN, now)
        elif self._state is BreakerState.HALF_OPEN:
            self._move_to(BreakerState.CLOSED, now)

    def _move_to(self, new: BreakerState, now: float) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._leases = {}
        if new is BreakerState.OPEN:
            # The tripping window is kept so snapshots show why the breaker opened.
            self._open_until = now + self._config.open_duration_s
        elif new is BreakerState.HALF_OPEN:
            trials = self._config.half_open_calls
            self._window = _Window(trials, trials)
        else:
            self._window = _Window(self._config.window_size, self._config.minimum_calls)
        if old is not new and self._on_transition is not None:
            self._on_transition(self._name, old, new)  # errors propagate on purpose
