"""The shared breaker's own logic, driven by a fake clock and views a test writes by hand.

What Redis says arrives as `SharedView`s (tests/integration/test_shared_breaker_redis.py runs
the real scripts and sync); here: admission from the adopted state without I/O, trial permits
only when granted, older words ignored, and the fall-back to this process's own breaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from app.alpaca.breaker import BreakerConfig, BreakerState, CallNotPermitted
from app.alpaca.shared_breaker import BreakerChange, Report, SharedBreaker, SharedView
from tests.support.clock import FakeClock

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
CONFIG = BreakerConfig(window_size=4, minimum_calls=4, open_duration_s=30.0, half_open_calls=2)
ME = "gw-0:100"
OTHER = "gw-3:400"
# Redis's clock is not ours: views carry Redis's own "now", far from the fake clock's.
REDIS_NOW_MS = 1_800_000_000_000


def view(state: BreakerState = CLOSED, generation: int = 1, **fields: object) -> SharedView:
    base = SharedView(
        state=state,
        generation=generation,
        open_until_ms=0,
        now_ms=REDIS_NOW_MS,
        opened_by="",
        changed_by=OTHER,
        calls=0,
        failures=0,
        slow_calls=0,
        trials_in_flight=0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def opened(generation: int = 2, left_s: float = 10.0, by: str = OTHER) -> SharedView:
    return view(
        OPEN,
        generation,
        open_until_ms=REDIS_NOW_MS + int(left_s * 1000),
        opened_by=by,
        changed_by=by,
        calls=4,
        failures=4,
    )


@dataclass
class Harness:
    clock: FakeClock = field(default_factory=FakeClock)
    changes: list[BreakerChange] = field(default_factory=list)
    wakes: int = 0
    breaker: SharedBreaker = field(init=False)

    def __post_init__(self) -> None:
        self.breaker = SharedBreaker(
            "data", CONFIG, instance=ME, clock=self.clock, on_change=self.changes.append
        )
        self.breaker.connect(self.wake)

    def wake(self) -> None:
        self.wakes += 1

    def moves(self) -> list[tuple[BreakerState, BreakerState, str, str | None]]:
        return [(c.before, c.after, c.source, c.by) for c in self.changes if c.before != c.after]


def shared(first: SharedView | None = None) -> Harness:
    h = Harness()
    h.breaker.resume(first or view())
    return h


def test_without_redis_it_is_the_local_breaker_and_names_this_instance() -> None:
    h = Harness()
    assert h.breaker.source == "local"
    for _ in range(4):
        h.breaker.acquire().record_failure(0.1)
    assert h.breaker.state is OPEN
    assert h.moves() == [(CLOSED, OPEN, "local", ME)]
    snapshot = h.breaker.snapshot()
    assert (snapshot.source, snapshot.opened_by, snapshot.failure_rate) == ("local", ME, 1.0)
    assert h.wakes == 0  # nothing for a sync to do


def test_resuming_reports_the_source_change_without_a_transition() -> None:
    h = shared()
    assert h.breaker.source == "shared"
    assert h.breaker.state is CLOSED
    assert [(c.before, c.after, c.source) for c in h.changes] == [(CLOSED, CLOSED, "shared")]


def test_closed_admits_and_queues_outcomes_for_the_fleet_window() -> None:
    h = shared(view(generation=7))
    h.breaker.acquire().record_failure(0.1)
    h.breaker.acquire().record_success(5.0)  # slow (the default threshold is 2 s)
    h.breaker.acquire().record_ignored()  # counts neither way: not sent
    reports, ask = h.breaker.take_work()
    assert reports == [Report(7, "1", None), Report(7, "2", None)]
    assert ask is None
    assert h.wakes == 2
    # The local breaker is not fed while the fleet decides: its window stays empty.
    assert h.breaker.local.snapshot().calls_in_window == 0


def test_an_adopted_open_refuses_for_the_time_left_on_redis_clock() -> None:
    h = shared()
    h.breaker.adopt(opened(left_s=10.0))
    h.clock.advance(4.0)
    with pytest.raises(CallNotPermitted) as refused:
        h.breaker.acquire()
    assert refused.value.state is OPEN
    assert refused.value.retry_after_s == pytest.approx(6.0)
    assert h.moves() == [(CLOSED, OPEN, "shared", OTHER)]
    snapshot = h.breaker.snapshot()
    assert (snapshot.state, snapshot.source, snapshot.opened_by) == (OPEN, "shared", OTHER)
    assert snapshot.failure_rate == 1.0


def test_an_older_word_never_overrides_a_newer_one() -> None:
    h = shared(view(generation=5))
    h.breaker.adopt(opened(generation=6))
    h.breaker.adopt(view(CLOSED, generation=5))  # a poll's answer overtaken by the notice
    assert h.breaker.state is OPEN
    h.breaker.adopt(view(CLOSED, generation=9))
    assert h.breaker.state is CLOSED


def test_half_open_admits_only_with_a_permit_the_fleet_granted() -> None:
    h = shared()
    h.breaker.adopt(opened(left_s=1.0))
    h.clock.advance(1.0)
    with pytest.raises(CallNotPermitted) as refused:
        h.breaker.acquire()
    assert refused.value.state is HALF_OPEN
    _, ask = h.breaker.take_work()
    assert ask is not None
    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()  # asked once; not again until answered
    assert h.breaker.take_work()[1] == ask

    half_open = view(HALF_OPEN, generation=3, trials_in_flight=1)
    h.breaker.answer_trial(ask, half_open, granted=True, lease_s=10.0, retry_s=0.0)
    assert h.breaker.take_work()[1] is None
    assert h.breaker.retry_after_s() == 0.0
    h.breaker.acquire().record_success(0.1)
    assert h.breaker.take_work()[0] == [Report(3, "0", ask)]
    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()  # one permit, one call


def test_a_refused_permit_is_not_asked_again_before_a_slot_can_free() -> None:
    h = shared(view(HALF_OPEN, generation=3))
    h.breaker.retry_after_s()
    ask = h.breaker.take_work()[1]
    assert ask is not None
    h.breaker.answer_trial(
        ask, view(HALF_OPEN, generation=3), granted=False, lease_s=10.0, retry_s=4.0
    )
    h.clock.advance(3.9)
    assert h.breaker.retry_after_s() == pytest.approx(0.5)  # never "retry now"
    assert h.breaker.take_work()[1] is None
    h.clock.advance(0.1)
    h.breaker.retry_after_s()
    assert h.breaker.take_work()[1] is not None


def test_a_refusals_wait_ends_when_the_breaker_opens_again() -> None:
    # Refused while other trials held the slots, the wait was for their leases; those trials
    # failed and the breaker reopened, discarding them. Once the new open time is over a permit
    # is asked at once, not when the old leases would have lapsed (recovery took 10 s).
    h = shared(view(HALF_OPEN, generation=3))
    h.breaker.retry_after_s()
    ask = h.breaker.take_work()[1]
    assert ask is not None
    h.breaker.answer_trial(
        ask, view(HALF_OPEN, generation=3), granted=False, lease_s=10.0, retry_s=10.0
    )
    h.breaker.adopt(opened(generation=4, left_s=1.0))
    h.clock.advance(1.0)

    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()
    assert h.breaker.take_work()[1] is not None


def test_a_permit_is_dropped_when_its_lease_lapses_or_the_state_moves_on() -> None:
    h = shared(view(HALF_OPEN, generation=3))
    h.breaker.retry_after_s()
    ask = h.breaker.take_work()[1]
    assert ask is not None
    h.breaker.answer_trial(ask, view(HALF_OPEN, generation=3), granted=True, lease_s=2.0, retry_s=0)
    h.clock.advance(2.0)
    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()

    ask = h.breaker.take_work()[1]
    assert ask is not None
    h.breaker.answer_trial(ask, view(HALF_OPEN, generation=3), granted=True, lease_s=2.0, retry_s=0)
    h.breaker.adopt(opened(generation=4))  # another instance's trials failed: open again
    h.clock.advance(30.0)
    assert h.breaker.state is HALF_OPEN
    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()  # the permit was for generation 3


def test_falling_back_keeps_an_open_verdict_until_the_same_moment() -> None:
    h = shared()
    h.breaker.adopt(opened(left_s=10.0))
    h.clock.advance(3.0)
    h.breaker.fall_back()
    assert h.breaker.source == "local"
    assert h.changes[-1].source == "local"
    with pytest.raises(CallNotPermitted) as refused:
        h.breaker.acquire()
    assert refused.value.retry_after_s == pytest.approx(7.0)
    assert h.breaker.local_open_s() == pytest.approx(7.0)  # what the fleet is offered later
    h.clock.advance(7.0)
    assert h.breaker.state is HALF_OPEN  # then this instance's own trials
    for _ in range(2):
        h.breaker.acquire().record_success(0.1)
    assert h.breaker.state is CLOSED
    assert h.moves()[-2:] == [(OPEN, HALF_OPEN, "local", ME), (HALF_OPEN, CLOSED, "local", ME)]


def test_falling_back_from_closed_decides_alone_from_a_fresh_window() -> None:
    h = shared()
    h.breaker.acquire().record_failure(0.1)
    h.breaker.fall_back()
    assert h.breaker.take_work() == ([], None)  # queued outcomes are not sent later
    permit = h.breaker.acquire()
    for _ in range(3):
        h.breaker.acquire().record_failure(0.1)
    assert h.breaker.state is CLOSED  # three of its own; the queued one does not count here
    permit.record_failure(0.1)
    assert h.breaker.state is OPEN
    assert h.breaker.snapshot().opened_by == ME


def test_outcomes_of_fleet_permits_settled_after_the_fall_back_count_nowhere() -> None:
    h = shared()
    permit = h.breaker.acquire()
    h.breaker.fall_back()
    permit.record_failure(0.1)
    assert h.breaker.take_work() == ([], None)
    assert h.breaker.local.snapshot().calls_in_window == 0


def test_resuming_follows_the_fleet_again() -> None:
    h = shared()
    h.breaker.fall_back()
    h.breaker.resume(opened(generation=8, left_s=5.0))
    assert h.breaker.source == "shared"
    assert h.breaker.retry_after_s() == pytest.approx(5.0)
    assert h.moves()[-1] == (CLOSED, OPEN, "shared", OTHER)
