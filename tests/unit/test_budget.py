"""One lane of the account's rate budget, in process, on a clock the test moves: the burst, then
one cell per interval; no 60-second window over the budget; the true wait for a refused call;
orders' reserve and booked waits; Alpaca's hold and its one probe."""

from __future__ import annotations

import random

import pytest

from app.alpaca.budget import Grant, LaneConfig, LocalBudget, Throttle
from tests.support.clock import FakeClock

# 70/min with a burst of 10: one cell per second once the burst is spent.
LANE = LaneConfig(per_minute=70, burst=10)
TRADING = LaneConfig(per_minute=70, burst=10, reserve=4, priority_wait_s=2.5)


def lane(config: LaneConfig = LANE) -> tuple[LocalBudget, FakeClock]:
    clock = FakeClock()
    return LocalBudget("data", config, probe_lease_s=2.0, clock=clock), clock


def test_a_fresh_lane_lets_the_burst_go_then_one_call_per_interval() -> None:
    budget, clock = lane()
    assert LANE.interval_s == 1.0
    assert [budget.take_now(False) for _ in range(10)] == [Grant()] * 10
    refused = budget.take_now(False)
    assert isinstance(refused, Throttle)
    assert refused.reason == "budget"
    assert refused.wait_s == pytest.approx(1.0)
    clock.advance(1.0)
    assert budget.take_now(False) == Grant()
    assert isinstance(budget.take_now(False), Throttle)


def test_a_refused_call_is_told_the_true_wait_and_is_granted_then() -> None:
    budget, clock = lane()
    for _ in range(10):
        budget.take_now(False)
    clock.advance(0.3)
    refused = budget.take_now(False)
    assert isinstance(refused, Throttle)
    assert refused.wait_s == pytest.approx(0.7)
    clock.advance(0.69)
    assert isinstance(budget.take_now(False), Throttle)  # a refusal takes nothing
    clock.advance(0.01)
    assert budget.take_now(False) == Grant()


def test_no_sixty_second_window_holds_more_than_the_budget() -> None:
    """Whatever window Alpaca counts in, wherever it starts: calls asked at random times, as
    fast as they come, are granted at most per_minute in any 60 s."""
    budget, clock = lane()
    rng = random.Random(7)
    granted: list[float] = []
    for _ in range(5000):
        clock.advance(rng.expovariate(10))  # ~600 asks a minute, 8.5 x the budget
        if isinstance(budget.take_now(False), Grant):
            granted.append(clock.now)
    busiest = max(
        sum(1 for t in granted[i:] if t < start + 60.0) for i, start in enumerate(granted)
    )
    assert busiest <= LANE.per_minute
    assert busiest >= LANE.per_minute - 2  # and the budget is used, not wasted


def test_reads_leave_the_order_reserve_untouched() -> None:
    budget, _ = lane(TRADING)
    reads = [budget.take_now(priority=False) for _ in range(20)]
    assert reads.count(Grant()) == TRADING.burst - TRADING.reserve
    # The reads' flood spent its share of the burst; the orders' reserve is all there.
    assert [budget.take_now(priority=True) for _ in range(4)] == [Grant()] * 4


def test_after_orders_spend_the_reserve_reads_wait_for_it_to_come_back() -> None:
    budget, clock = lane(TRADING)
    for _ in range(TRADING.burst - TRADING.reserve):
        budget.take_now(priority=False)
    for _ in range(TRADING.reserve):
        budget.take_now(priority=True)
    clock.advance(1.0)  # one cell regenerated: it is the orders'
    refused = budget.take_now(priority=False)
    assert isinstance(refused, Throttle)
    assert refused.wait_s == pytest.approx(TRADING.reserve * TRADING.interval_s)
    assert budget.take_now(priority=True) == Grant()


def test_an_order_past_the_burst_is_booked_within_its_wait_and_refused_past_it() -> None:
    budget, _ = lane(TRADING)
    for _ in range(TRADING.burst):
        assert budget.take_now(priority=True) == Grant()
    booked = [budget.take_now(priority=True) for _ in range(3)]
    assert booked[:2] == [Grant(1.0), Grant(2.0)]
    assert isinstance(booked[2], Throttle)
    assert booked[2].reason == "budget"
    assert booked[2].wait_s == pytest.approx(3.0)


async def test_alpacas_hold_refuses_every_call_then_one_probe_goes() -> None:
    budget, clock = lane()
    clock.advance(30)

    await budget.block(5.0)

    assert budget.wait_s() == 5.0
    assert budget.take_now(priority=True) == Throttle("alpaca_block", 5.0)
    clock.advance(5.0)
    probe = budget.take_now(False)
    assert probe == Grant(probe=True)
    assert budget.take_now(False) == Throttle("alpaca_block", 1.0)
    await budget.probe_answered()
    assert budget.take_now(False) == Grant()


def test_a_lane_shared_by_four_instances_gives_each_a_quarter() -> None:
    share = LaneConfig(200, 20, reserve=10, priority_wait_s=2.0).share(4)
    assert share == LaneConfig(50, 5, 3, 2.0)
    assert LaneConfig(200, 20).share(1) == LaneConfig(200, 20)
    tiny = LaneConfig(3, 2, 1).share(10)  # never below a working lane
    assert (tiny.per_minute, tiny.burst, tiny.reserve) == (2, 1, 0)


@pytest.mark.parametrize(
    "values", [(10, 10, 0), (10, 0, 0), (10, 5, 5)], ids=["burst=budget", "no burst", "reserve"]
)
def test_a_lane_that_could_not_keep_its_promise_is_refused(values: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="below"):
        LaneConfig(*values)
