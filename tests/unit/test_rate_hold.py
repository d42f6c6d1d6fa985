"""The 429 hold and its release, on a fake clock: held until Alpaca's reset, then one probe at a
time until Alpaca answers one, and a lost probe does not hold everyone for good."""

from __future__ import annotations

from app.alpaca.rate_hold import PROBE_WAIT_S, RateLimitHold
from tests.support.clock import FakeClock


def held(clock: FakeClock, *, for_s: float = 5.0, lease_s: float = 2.0) -> RateLimitHold:
    hold = RateLimitHold(probe_lease_s=lease_s, clock=clock)
    hold.hold(clock.now + for_s)
    return hold


def test_calls_go_freely_before_any_429() -> None:
    hold = RateLimitHold(probe_lease_s=2.0, clock=FakeClock())
    for _ in range(3):
        assert hold.wait_s() == 0.0
        hold.admit()


def test_no_call_before_the_reset_and_the_wait_is_the_time_left() -> None:
    clock = FakeClock()
    hold = held(clock, for_s=5.0)
    assert hold.wait_s() == 5.0
    clock.advance(4.5)
    assert hold.wait_s() == 0.5


def test_after_the_reset_one_probe_goes_and_the_others_wait_a_second() -> None:
    clock = FakeClock()
    hold = held(clock)
    clock.advance(5.0)

    assert hold.wait_s() == 0.0  # looking takes nothing: the read path looks first
    assert hold.wait_s() == 0.0
    hold.admit()  # the probe
    assert [hold.wait_s() for _ in range(3)] == [PROBE_WAIT_S] * 3


def test_an_answer_to_the_probe_lets_every_call_go() -> None:
    clock = FakeClock()
    hold = held(clock)
    clock.advance(5.0)
    hold.admit()

    hold.answered()

    assert hold.wait_s() == 0.0
    hold.admit()
    assert hold.wait_s() == 0.0


def test_a_probe_met_by_a_429_holds_again() -> None:
    clock = FakeClock()
    hold = held(clock)
    clock.advance(5.0)
    hold.admit()

    hold.hold(clock.now + 3.0)

    assert hold.wait_s() == 3.0
    clock.advance(3.0)
    hold.admit()
    assert hold.wait_s() == PROBE_WAIT_S  # the new hold ends with a probe too


def test_answers_to_calls_sent_before_the_hold_end_nothing() -> None:
    clock = FakeClock()
    hold = held(clock)
    hold.answered()  # a call that left before the 429 came back with a 200
    clock.advance(5.0)
    hold.admit()
    assert hold.wait_s() == PROBE_WAIT_S


def test_a_probe_that_never_answers_frees_its_slot_after_its_lease() -> None:
    clock = FakeClock()
    hold = held(clock, lease_s=2.0)
    clock.advance(5.0)
    hold.admit()  # times out, or its caller goes away: no answer is ever reported

    clock.advance(1.9)
    assert hold.wait_s() == PROBE_WAIT_S
    clock.advance(0.1)
    assert hold.wait_s() == 0.0
    hold.admit()  # the next probe
    assert hold.wait_s() == PROBE_WAIT_S
