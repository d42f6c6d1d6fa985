"""One upstream's breaker as the whole fleet of gateway instances shares it, through Redis.

The verdict lives in Redis (`app/alpaca/breaker_sync.py` carries it both ways): one sliding
window fed by every instance's outcomes, one OPEN with one `open_until`, and half-open trial
permits counted across instances. A `SharedBreaker` holds this instance's adopted copy of that
state, so admission (`acquire`, `retry_after_s`) stays synchronous and never waits on Redis;
outcomes and the wish for a trial permit are queued for the sync task. In HALF_OPEN a call goes
only with a permit Redis granted to this instance; without one it is refused like an open
breaker's.

The source is "local" until Redis has answered, and again whenever it stops answering: then the
process's own `CircuitBreaker` decides alone, exactly as a single gateway does, starting from the
fleet's last verdict (an OPEN stays open until the same moment). Nothing here awaits.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from app.alpaca.breaker import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerSource,
    BreakerState,
    CallNotPermitted,
    CircuitBreaker,
    Outcome,
    Permit,
)

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
# A refusal never says "retry now" (see breaker.py); without a permit, soon is all we know.
_MIN_RETRY_AFTER_S: Final = 0.001
_NO_PERMIT_RETRY_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class SharedView:
    """The fleet's state of one breaker as Redis last told it; times are Redis's own (ms)."""

    state: BreakerState
    generation: int  # bumped by every move; an older word never overrides a newer one
    open_until_ms: int
    now_ms: int  # Redis's clock when it answered: deadlines are relative to it, not ours
    opened_by: str  # the instance whose outcomes last opened it ("" if never)
    changed_by: str  # the instance whose call made the latest move
    calls: int  # the deciding window: sliding (closed), tripping (open), trials (half-open)
    failures: int
    slow_calls: int
    trials_in_flight: int


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """A change of this instance's effective state or of its source, for logs and metrics."""

    upstream: str
    before: BreakerState
    after: BreakerState
    source: BreakerSource
    by: str | None  # the instance whose verdict it is (for OPEN: whose calls tripped it)


@dataclass(frozen=True, slots=True)
class Report:
    """One outcome for the fleet's window, or for a trial when `permit_id` is set.

    `code` is "0" fast success, "1" failure, "2" slow success, "3" slow failure, "i" ignored
    (sent for trials only: it frees the slot)."""

    generation: int
    code: str
    permit_id: str | None


@dataclass(frozen=True, slots=True)
class _Trial:
    permit_id: str
    generation: int
    expires_at: float  # our clock; Redis frees the slot at the same moment


class SharedBreaker:
    """One upstream's breaker, shared by the fleet when a sync is attached and Redis answers."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        instance: str,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerChange], None] | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self._instance = instance
        self._clock = clock
        self._on_change = on_change
        self._local = CircuitBreaker(name, config, clock=clock, on_transition=self._local_moved)
        self._effective = CLOSED
        self._opened_by: str | None = None
        # The fleet's state as last heard; None while the source is local.
        self._view: SharedView | None = None
        self._deadline = 0.0  # our clock time the adopted OPEN ends
        self._trial: _Trial | None = None
        self._asking: str | None = None  # a permit id asked of Redis, not yet answered
        self._ask_not_before = 0.0
        # Only the newest outcomes matter to a count window; trials are at most a few.
        self._reports: deque[Report] = deque(maxlen=config.window_size + config.half_open_calls)
        self._permit_ids = itertools.count()
        self._wake: Callable[[], None] = lambda: None

    # --- what the transport and /ready use (the `Breaker` protocol) ----------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def source(self) -> BreakerSource:
        return "local" if self._view is None else "shared"

    @property
    def local(self) -> CircuitBreaker:
        """This process's own breaker: it decides while the source is "local"."""
        return self._local

    @property
    def state(self) -> BreakerState:
        if self._view is None:
            return self._local.state
        self._advance(self._clock())
        return self._effective

    def acquire(self) -> Permit:
        """Admit one call or raise CallNotPermitted; never touches Redis."""
        view = self._view
        if view is None:
            return self._local.acquire()
        now = self._clock()
        self._advance(now)
        if self._effective is CLOSED:
            return Permit(partial(self._report, view.generation, None))
        if self._effective is OPEN:
            raise CallNotPermitted(self._name, OPEN, self._deadline - now)
        trial = self._trial
        if trial is None or trial.expires_at <= now or trial.generation != view.generation:
            self._trial = None
            self._ask(now)
            raise CallNotPermitted(self._name, HALF_OPEN, self._no_permit_wait(now))
        self._trial = None  # one permit, one call
        return Permit(partial(self._report, trial.generation, trial.permit_id))

    def retry_after_s(self) -> float:
        """Seconds until this instance would admit a call; 0 when it would now. In HALF_OPEN
        without a permit, asking is what makes the sync fetch one."""
        view = self._view
        if view is None:
            return self._local.retry_after_s()
        now = self._clock()
        self._advance(now)
        return self._retry_after(now, view, ask=True)

    def snapshot(self) -> BreakerSnapshot:
        view = self._view
        if view is None:
            local = self._local.snapshot()
            return BreakerSnapshot(
                state=local.state,
                calls_in_window=local.calls_in_window,
                failure_rate=local.failure_rate,
                slow_call_rate=local.slow_call_rate,
                retry_after_s=local.retry_after_s,
                half_open_in_flight=local.half_open_in_flight,
                source="local",
                opened_by=self._opened_by,
            )
        now = self._clock()
        self._advance(now)
        judged = view.state is not HALF_OPEN
        minimum = self._config.minimum_calls if judged else self._config.half_open_calls
        rated = view.calls >= minimum
        return BreakerSnapshot(
            state=self._effective,
            calls_in_window=view.calls,
            failure_rate=view.failures / view.calls if rated else None,
            slow_call_rate=view.slow_calls / view.calls if rated else None,
            retry_after_s=self._retry_after(now, view, ask=False),
            half_open_in_flight=view.trials_in_flight,
            source="shared",
            opened_by=self._opened_by,
        )

    # --- what the sync (app/alpaca/breaker_sync.py) uses ---------------------------------------
    def connect(self, wake: Callable[[], None]) -> None:
        """`wake` tells the sync there is work (outcomes to send, a permit to ask for)."""
        self._wake = wake

    def take_work(self) -> tuple[list[Report], str | None]:
        """The outcomes to send, oldest first, and the id of a trial permit to ask for."""
        reports = list(self._reports)
        self._reports.clear()
        return reports, self._asking

    def local_open_s(self) -> float:
        """While local: how long this process's own breaker still holds OPEN (0 if not open).
        The sync hands that verdict to the fleet when Redis answers again."""
        if self._view is not None:
            return 0.0
        local = self._local.snapshot()
        return local.retry_after_s if local.state is OPEN else 0.0

    def adopt(self, view: SharedView) -> None:
        """The fleet's word (a notice, a poll, a script's reply). Ignored while local: only
        `resume` switches back, after this instance's own verdict was offered to the fleet."""
        if self._view is not None:
            self._take(view)

    def resume(self, view: SharedView) -> None:
        """Redis answers (again): follow the fleet from `view` on."""
        if self._view is None:
            self._effective = self._local.state  # performs a due move first, as local
            self._take(view, was_local=True)
        else:
            self._take(view)

    def answer_trial(
        self, permit_id: str, view: SharedView, *, granted: bool, lease_s: float, retry_s: float
    ) -> None:
        """Redis's answer to the permit asked for as `permit_id`."""
        if self._asking == permit_id:
            self._asking = None
        self.adopt(view)
        current = self._view
        if current is None:
            return
        now = self._clock()
        if granted and current.generation == view.generation:
            self._trial = _Trial(permit_id, view.generation, now + lease_s)
        elif not granted:
            self._ask_not_before = now + retry_s

    def fall_back(self) -> None:
        """Redis failed: decide alone from now on, from the fleet's last verdict."""
        if self._view is None:
            return
        now = self._clock()
        self._advance(now)
        state = self._effective
        # While the source is shared the local breaker's own moves are not reported.
        self._local.adopt(state, self._deadline)
        self._view = None
        self._trial = None
        self._asking = None
        self._reports.clear()
        self._emit(state, self._local.state, self._opened_by)

    # --- internals -----------------------------------------------------------------------------
    def _take(self, view: SharedView, *, was_local: bool = False) -> None:
        now = self._clock()
        if not was_local:
            self._advance(now)  # a wait that ended under the old word ends first
        current = self._view
        if current is not None and view.generation < current.generation:
            return  # an older word than the one held (a reply overtaken by a notice)
        before = self._effective
        self._view = view
        if current is None or view.generation != current.generation:
            # Redis's clock is the fleet's: time left there is time left here.
            self._deadline = now + (view.open_until_ms - view.now_ms) / 1000
            # A refusal's wait was for leases the move discarded: ask afresh in this round.
            self._ask_not_before = 0.0
            if view.opened_by:
                self._opened_by = view.opened_by
        after = self._shared_state(now, view)
        if before is not after or was_local:
            self._effective = after
            self._emit(before, after, view.opened_by if after is OPEN else view.changed_by)

    def _shared_state(self, now: float, view: SharedView) -> BreakerState:
        if view.state is OPEN and now >= self._deadline:
            return HALF_OPEN  # the wait is over: the first permit asked moves Redis too
        return view.state

    def _advance(self, now: float) -> None:
        if self._effective is OPEN and now >= self._deadline:
            self._effective = HALF_OPEN
            self._emit(OPEN, HALF_OPEN, None)

    def _retry_after(self, now: float, view: SharedView, *, ask: bool) -> float:
        if self._effective is CLOSED:
            return 0.0
        if self._effective is OPEN:
            return self._deadline - now
        trial = self._trial
        if trial is not None and trial.expires_at > now and trial.generation == view.generation:
            return 0.0
        if ask:
            self._ask(now)
        return self._no_permit_wait(now)

    def _no_permit_wait(self, now: float) -> float:
        return max(self._ask_not_before - now, _NO_PERMIT_RETRY_S, _MIN_RETRY_AFTER_S)

    def _ask(self, now: float) -> None:
        # One question at a time, and none before Redis said a slot could be free.
        if self._asking is None and now >= self._ask_not_before:
            self._asking = f"{self._instance}#{next(self._permit_ids)}"
            self._wake()

    def _report(self, generation: int, permit_id: str | None, outcome: Outcome) -> None:
        if self._view is None:
            return  # granted by the fleet, settled after Redis left: ours alone never saw it
        if outcome is None:
            if permit_id is None:
                return
            code = "i"
        else:
            failed, duration_s = outcome
            slow = duration_s >= self._config.slow_call_duration_s
            code = str(int(failed) + 2 * int(slow))
        self._reports.append(Report(generation, code, permit_id))
        self._wake()

    def _local_moved(self, name: str, before: BreakerState, after: BreakerState) -> None:
        if self._view is not None:
            return  # the local breaker is being handed a verdict; not a change of ours
        if after is OPEN:
            self._opened_by = self._instance
        self._emit(before, after, self._instance)

    def _emit(self, before: BreakerState, after: BreakerState, by: str | None) -> None:
        if self._view is None:
            self._effective = after
        if self._on_change is not None:
            self._on_change(BreakerChange(self._name, before, after, self.source, by))
