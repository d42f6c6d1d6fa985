"""The breaker's contract, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from app.alpaca.breaker import (
    BreakerConfig,
    BreakerState,
    CallNotPermitted,
    CircuitBreaker,
    Permit,
)
from tests.support.clock import FakeClock

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
FAST_S = 0.1
SLOW_S = 2.0  # exactly the default slow_call_duration_s: the boundary counts as slow


@dataclass
class Harness:
    clock: FakeClock
    breaker: CircuitBreaker
    transitions: list[tuple[str, BreakerState, BreakerState]] = field(default_factory=list)

    def record(self, outcomes: str) -> None:
        """One call per letter: s fast success, S slow success, f failure, i ignored."""
        for outcome in outcomes:
            permit = self.breaker.acquire()
            if outcome == "s":
                permit.record_success(FAST_S)
            elif outcome == "S":
                permit.record_success(SLOW_S)
            elif outcome == "f":
                permit.record_failure(FAST_S)
            else:
                assert outcome == "i"
                permit.record_ignored()

    def trip(self) -> None:
        self.record("f" * 10)
        assert self.breaker.state is OPEN

    def to_half_open(self) -> None:
        self.trip()
        self.clock.advance(30.0)
        assert self.breaker.state is HALF_OPEN


def make(config: BreakerConfig | None = None) -> Harness:
    clock = FakeClock()
    transitions: list[tuple[str, BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        "alpaca_data",
        config or BreakerConfig(),
        clock=clock,
        on_transition=lambda *change: transitions.append(change),
    )
    return Harness(clock, breaker, transitions)


def test_starts_closed_and_admits_calls() -> None:
    h = make()
    assert h.breaker.name == "alpaca_data"
    assert h.breaker.state is CLOSED
    assert h.breaker.retry_after_s() == 0.0
    h.record("sf")
    assert h.transitions == []


def test_nine_failures_below_minimum_do_not_open() -> None:
    h = make()
    h.record("f" * 9)
    snapshot = h.breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.calls_in_window == 9
    assert snapshot.failure_rate is None
    assert snapshot.slow_call_rate is None


def test_opens_when_failure_rate_reaches_threshold_after_minimum_calls() -> None:
    h = make()
    h.record("sssss" + "ffff")
    assert h.breaker.state is CLOSED
    h.record("f")  # 5 of 10 = 0.5, which reaches the threshold
    assert h.breaker.state is OPEN
    assert h.transitions == [("alpaca_data", CLOSED, OPEN)]


def test_failure_rate_below_threshold_stays_closed() -> None:
    h = make()
    h.record("ssssss" + "ffff")
    snapshot = h.breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.failure_rate == pytest.approx(0.4)
    assert snapshot.slow_call_rate == 0.0


def test_open_rejects_with_time_left() -> None:
    h = make()
    h.trip()
    h.clock.advance(12.0)
    with pytest.raises(CallNotPermitted) as rejected:
        h.breaker.acquire()
    assert rejected.value.upstream == "alpaca_data"
    assert rejected.value.state is OPEN
    assert rejected.value.retry_after_s == pytest.approx(18.0)
    assert h.breaker.retry_after_s() == pytest.approx(18.0)


def test_open_moves_to_half_open_when_open_duration_has_elapsed() -> None:
    h = make()
    h.trip()
    h.clock.advance(29.999)
    assert h.breaker.state is OPEN
    h.clock.advance(0.001)
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.retry_after_s() == 0.0
    assert h.transitions[-1] == ("alpaca_data", OPEN, HALF_OPEN)


def test_first_acquire_after_the_wait_is_a_trial() -> None:
    h = make()
    h.trip()
    h.clock.advance(30.0)
    h.breaker.acquire()  # no state read in between: acquire performs the move itself
    assert h.breaker.snapshot().half_open_in_flight == 1
    assert h.transitions[-1] == ("alpaca_data", OPEN, HALF_OPEN)


def test_half_open_admits_exactly_n_trials() -> None:
    h = make()
    h.to_half_open()
    for _ in range(3):
        h.breaker.acquire()
    with pytest.raises(CallNotPermitted) as rejected:
        h.breaker.acquire()
    assert rejected.value.state is HALF_OPEN
    # Unless a trial reports first, a slot frees when the oldest lease (10 s) lapses.
    assert rejected.value.retry_after_s == pytest.approx(10.0)
    h.clock.advance(4.0)
    assert h.breaker.retry_after_s() == pytest.approx(6.0)


def test_reported_trials_keep_their_slots_until_the_verdict() -> None:
    h = make()
    h.to_half_open()
    h.record("s")
    trials = [h.breaker.acquire(), h.breaker.acquire()]
    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()
    for trial in trials:
        trial.record_success(FAST_S)
    assert h.breaker.state is CLOSED


def test_successful_trials_close_with_an_empty_window() -> None:
    h = make()
    h.to_half_open()
    h.record("sss")
    snapshot = h.breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.calls_in_window == 0
    assert h.transitions[-1] == ("alpaca_data", HALF_OPEN, CLOSED)


def test_failed_trials_reopen_for_a_fresh_open_duration() -> None:
    h = make()
    h.to_half_open()
    h.clock.advance(5.0)
    h.record("ffs")  # 2 of 3 failed: 0.67 >= 0.5
    assert h.breaker.state is OPEN
    assert h.breaker.retry_after_s() == pytest.approx(30.0)
    assert h.transitions[-1] == ("alpaca_data", HALF_OPEN, OPEN)


def test_half_open_waits_for_every_trial_before_deciding() -> None:
    h = make()
    h.to_half_open()
    h.record("f")  # one failed probe is not yet a failure rate of 1/3
    assert h.breaker.state is HALF_OPEN
    h.record("ss")  # 1 of 3 failed: 0.33 < 0.5
    assert h.breaker.state is CLOSED


def test_slow_trials_reopen_the_breaker() -> None:
    h = make()
    h.to_half_open()
    h.record("SSS")
    assert h.breaker.state is OPEN


def test_expired_trial_permit_frees_its_slot() -> None:
    h = make()
    h.to_half_open()
    h.breaker.acquire()
    h.clock.advance(5.0)
    h.breaker.acquire()
    h.breaker.acquire()
    with pytest.raises(CallNotPermitted):
        h.breaker.acquire()
    h.clock.advance(5.0)  # the first lease (10 s) has lapsed
    assert h.breaker.snapshot().half_open_in_flight == 2
    h.breaker.acquire()
    with pytest.raises(CallNotPermitted) as rejected:
        h.breaker.acquire()
    assert rejected.value.retry_after_s == pytest.approx(5.0)


def test_late_result_from_expired_trial_is_ignored() -> None:
    h = make()
    h.to_half_open()
    lost = h.breaker.acquire()
    h.clock.advance(10.0)
    replacements = [h.breaker.acquire() for _ in range(3)]
    lost.record_failure(10.0)
    assert h.breaker.snapshot().calls_in_window == 0
    for trial in replacements:
        trial.record_success(FAST_S)
    assert h.breaker.state is CLOSED


def test_trial_reported_after_its_lease_is_ignored_even_if_nothing_looked() -> None:
    h = make()
    h.to_half_open()
    trials = [h.breaker.acquire() for _ in range(3)]
    h.clock.advance(10.0)  # no acquire or state read in between to sweep the leases
    for trial in trials:
        trial.record_failure(FAST_S)
    snapshot = h.breaker.snapshot()
    assert snapshot.state is HALF_OPEN
    assert (snapshot.calls_in_window, snapshot.half_open_in_flight) == (0, 0)


def test_slow_successes_open_the_breaker() -> None:
    h = make()
    h.record("S" * 9 + "s")  # slow rate 0.9 < 1.0
    assert h.breaker.state is CLOSED
    h.breaker.reset()
    h.record("S" * 10)  # every call took at least slow_call_duration_s
    snapshot = h.breaker.snapshot()
    assert snapshot.state is OPEN
    assert snapshot.failure_rate == 0.0
    assert snapshot.slow_call_rate == 1.0


def test_slow_failures_count_as_both_failed_and_slow() -> None:
    h = make(BreakerConfig(failure_rate_threshold=1.0, slow_call_rate_threshold=1.0))
    for _ in range(9):
        h.breaker.acquire().record_failure(SLOW_S)
    h.record("s")
    snapshot = h.breaker.snapshot()
    assert snapshot.failure_rate == pytest.approx(0.9)
    assert snapshot.slow_call_rate == pytest.approx(0.9)


def test_ignored_outcomes_count_neither_way() -> None:
    h = make()
    h.record("i" * 20 + "f" * 9)
    snapshot = h.breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.calls_in_window == 9

    h.record("f")
    h.clock.advance(30.0)
    h.record("i")  # frees its trial slot without voting
    trials = [h.breaker.acquire() for _ in range(3)]
    assert h.breaker.state is HALF_OPEN
    for trial in trials:
        trial.record_success(FAST_S)
    assert h.breaker.state is CLOSED


def test_late_result_from_previous_generation_is_ignored() -> None:
    h = make()
    from_closed = h.breaker.acquire()
    h.to_half_open()
    from_closed.record_success(FAST_S)  # must not become a half-open vote
    assert h.breaker.snapshot().calls_in_window == 0
    h.record("ss")
    assert h.breaker.state is HALF_OPEN

    from_half_open = h.breaker.acquire()
    h.breaker.reset()
    from_half_open.record_failure(FAST_S)  # must not land in the new CLOSED window
    assert h.breaker.snapshot().calls_in_window == 0


def test_transition_callback_fires_once_per_change() -> None:
    h = make()
    h.trip()
    h.clock.advance(30.0)
    for _ in range(3):
        assert h.breaker.state is HALF_OPEN
    h.breaker.snapshot()
    h.record("sss")
    h.breaker.snapshot()
    assert h.transitions == [
        ("alpaca_data", CLOSED, OPEN),
        ("alpaca_data", OPEN, HALF_OPEN),
        ("alpaca_data", HALF_OPEN, CLOSED),
    ]


def test_transition_callback_runs_after_the_change_and_its_errors_propagate() -> None:
    seen: list[BreakerState] = []

    def failing_callback(name: str, old: BreakerState, new: BreakerState) -> None:
        seen.append(breaker.state)
        raise RuntimeError("metrics exporter broke")

    breaker = CircuitBreaker(
        "alpaca_data", BreakerConfig(), clock=FakeClock(), on_transition=failing_callback
    )
    for _ in range(9):
        breaker.acquire().record_failure(FAST_S)
    with pytest.raises(RuntimeError, match="metrics exporter broke"):
        breaker.acquire().record_failure(FAST_S)
    assert seen == [OPEN]
    assert breaker.state is OPEN


def test_window_evicts_old_results() -> None:
    h = make()
    h.record("s" * 10 + "f" * 9)  # 9 of 19 failed: below the threshold
    h.record("s" * 20)  # the nine failures slide out of the 20-call window
    assert h.breaker.snapshot().failure_rate == 0.0
    h.record("f" * 9)
    snapshot = h.breaker.snapshot()
    assert (snapshot.state, snapshot.calls_in_window) == (CLOSED, 20)
    assert snapshot.failure_rate == pytest.approx(0.45)
    h.record("f")
    assert h.breaker.state is OPEN


def test_permit_reports_after_the_first_are_no_ops() -> None:
    h = make()
    permit = h.breaker.acquire()
    permit.record_failure(FAST_S)
    permit.record_failure(FAST_S)
    permit.record_success(FAST_S)
    permit.record_ignored()
    assert h.breaker.snapshot().calls_in_window == 1


@pytest.mark.parametrize("duration_s", [-0.1, math.nan])
def test_nonsense_durations_are_rejected(duration_s: float) -> None:
    permit = make().breaker.acquire()
    with pytest.raises(ValueError, match="duration_s"):
        permit.record_success(duration_s)


def test_reset_closes_with_an_empty_window() -> None:
    h = make()
    h.trip()
    h.breaker.reset()
    snapshot = h.breaker.snapshot()
    assert (snapshot.state, snapshot.calls_in_window) == (CLOSED, 0)
    h.breaker.reset()  # already CLOSED: no transition to report
    assert h.transitions == [
        ("alpaca_data", CLOSED, OPEN),
        ("alpaca_data", OPEN, CLOSED),
    ]


def test_open_snapshot_shows_the_window_that_tripped_it() -> None:
    h = make()
    h.trip()
    h.clock.advance(10.0)
    snapshot = h.breaker.snapshot()
    assert snapshot.state is OPEN
    assert (snapshot.calls_in_window, snapshot.failure_rate) == (10, 1.0)
    assert snapshot.retry_after_s == pytest.approx(20.0)
    assert snapshot.half_open_in_flight == 0


def test_gauge_values_follow_prometheus_convention() -> None:
    assert [s.gauge_value for s in (CLOSED, HALF_OPEN, OPEN)] == [0, 1, 2]
    assert OPEN == "open"


@pytest.mark.parametrize(
    "overrides",
    [
        {"window_size": 0},
        {"minimum_calls": 0},
        {"window_size": 5, "minimum_calls": 6},
        {"failure_rate_threshold": 0.0},
        {"failure_rate_threshold": 1.5},
        {"slow_call_rate_threshold": -0.1},
        {"slow_call_rate_threshold": math.nan},
        {"slow_call_duration_s": 0.0},
        {"open_duration_s": -1.0},
        {"open_duration_s": math.inf},
        {"half_open_permit_ttl_s": 0.0},
        {"half_open_calls": 0},
    ],
)
def test_config_rejects_nonsense(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="need"):
        BreakerConfig(**overrides)


def test_config_accepts_edges() -> None:
    BreakerConfig(window_size=1, minimum_calls=1, failure_rate_threshold=1.0)


class BreakerMachine(RuleBasedStateMachine):
    """Random acquire/record/advance/reset sequences keep the breaker's invariants."""

    config = BreakerConfig(
        window_size=4,
        minimum_calls=2,
        slow_call_duration_s=1.0,
        slow_call_rate_threshold=0.5,
        open_duration_s=5.0,
        half_open_calls=2,
        half_open_permit_ttl_s=3.0,
    )

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cause = "init"
        self.transitions: list[tuple[BreakerState, BreakerState, str]] = []
        self.breaker = CircuitBreaker(
            "prop", self.config, clock=self.clock, on_transition=self.on_transition
        )
        # Our own lease model: (permit, episode, granted_at) for half-open grants.
        self.permits: list[tuple[Permit, int, float | None]] = []

    def on_transition(self, name: str, old: BreakerState, new: BreakerState) -> None:
        assert name == "prop"
        self.transitions.append((old, new, self.cause))

    @rule()
    def acquire(self) -> None:
        self.cause = "acquire"
        try:
            permit = self.breaker.acquire()
        except CallNotPermitted as exc:
            rejected = exc
        else:
            in_half_open = self.breaker.state is HALF_OPEN
            granted_at = self.clock.now if in_half_open else None
            self.permits.append((permit, len(self.transitions), granted_at))
            return
        assert rejected.retry_after_s > 0
        assert rejected.state is not CLOSED
        assert rejected.state is self.breaker.state

    @precondition(lambda self: self.permits)
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["success", "failure", "ignored"]),
        duration_s=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
    )
    def record(self, data: st.DataObject, outcome: str, duration_s: float) -> None:
        self.cause = "record"
        index = data.draw(st.integers(0, len(self.permits) - 1))
        permit, _, _ = self.permits.pop(index)
        if outcome == "success":
            permit.record_success(duration_s)
        elif outcome == "failure":
            permit.record_failure(duration_s)
        else:
            permit.record_ignored()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.9, 3.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def reset(self) -> None:
        self.cause = "reset"
        self.breaker.reset()

    @invariant()
    def trials_never_exceed_half_open_calls(self) -> None:
        self.cause = "observe"
        snapshot = self.breaker.snapshot()
        limit = self.config.half_open_calls
        if snapshot.state is HALF_OPEN:
            assert snapshot.half_open_in_flight + snapshot.calls_in_window <= limit
            episode = len(self.transitions)
            live = [
                granted_at
                for _, grant_episode, granted_at in self.permits
                if grant_episode == episode
                and granted_at is not None
                and self.clock.now < granted_at + self.config.half_open_permit_ttl_s
            ]
            assert len(live) == snapshot.half_open_in_flight <= limit
        else:
            assert snapshot.half_open_in_flight == 0
        if snapshot.state is CLOSED:
            assert snapshot.retry_after_s == 0.0
        elif snapshot.state is OPEN:
            assert snapshot.retry_after_s > 0.0

    @invariant()
    def transitions_match_state_changes(self) -> None:
        self.cause = "observe"
        state = self.breaker.state
        previous = CLOSED
        for old, new, cause in self.transitions:
            assert old is previous
            assert old is not new
            assert (old, new) != (CLOSED, HALF_OPEN)
            if new is OPEN:
                assert cause == "record"
            elif new is HALF_OPEN:
                assert old is OPEN
                assert cause in {"acquire", "observe"}
            elif old is OPEN:
                assert cause == "reset"
            previous = new
        assert previous is state


TestBreakerStateMachine = BreakerMachine.TestCase
TestBreakerStateMachine.settings = settings(
    max_examples=300, stateful_step_count=60, database=None, deadline=None
)
