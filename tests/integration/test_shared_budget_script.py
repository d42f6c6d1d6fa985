"""The shared budget's Lua script on a real Redis: it decides exactly as the in-process lane does
(time moved by hand through its clock seam), every instance spends the one budget, Alpaca's hold
and its single probe are the fleet's, and a Redis that dies or hangs hands each instance its share
at once instead of failing calls or waiting on Redis, while one merely answering late (a busy
event loop) does not."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from app.alpaca.budget import Grant, LaneConfig, LocalBudget, Throttle, account_tag
from app.alpaca.shared_budget import SharedBudget, lane_key
from app.cache import RedisClient, fail_fast_redis
from app.metrics import Metrics
from tests.conftest import GatewayFactory, PrivateRedis
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.support.busy_redis import redis_kept_busy
from tests.support.clock import FakeClock
from tests.support.freeze import frozen_redis

pytestmark = pytest.mark.integration

# Whole seconds and microseconds: the script's arithmetic is exact for these.
TRADING = LaneConfig(per_minute=70, burst=10, reserve=4, priority_wait_s=2.5)
KEY_ID = "PKTESTKEYID123456789"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RedisClient]:
    redis = fail_fast_redis(redis_url, timeout_s=0.5)
    yield redis
    await redis.aclose()


def shared(
    redis: RedisClient,
    key: str,
    clock: FakeClock | None = None,
    *,
    config: LaneConfig = TRADING,
    metrics: Metrics | None = None,
    instances: int = 4,
) -> SharedBudget:
    """One instance's view of the lane `key`; `clock` None: Redis's own clock."""
    local_clock: Callable[[], float] = clock or time.monotonic
    return SharedBudget(
        "trading",
        config,
        redis,
        metrics or Metrics(),
        key=key,
        fallback=LocalBudget(
            "trading", config.share(instances), probe_lease_s=2.0, clock=local_clock
        ),
        probe_lease_s=2.0,
        timeout_s=0.1,
        clock=local_clock,
        redis_now_us=None if clock is None else (lambda: round(clock.now * 1_000_000)),
    )


def fresh_key() -> str:
    return lane_key(f"test-{uuid.uuid4().hex}", account_tag(KEY_ID), "trading")


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    text = metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels} is not exported")


async def test_the_script_decides_exactly_as_the_in_process_lane(client: RedisClient) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    redis_lane = shared(client, fresh_key(), clock)
    local_lane = LocalBudget("trading", TRADING, probe_lease_s=2.0, clock=clock)
    rng = random.Random(11)
    refusals = 0
    for step in range(600):
        clock.advance(round(rng.expovariate(4), 3))
        if step in (200, 400):
            for lane in (redis_lane, local_lane):
                await lane.block(3.0)
        priority = rng.random() < 0.3
        ours, theirs = await redis_lane.take(priority), await local_lane.take(priority)
        if isinstance(ours, Grant) and ours.probe:
            for lane in (redis_lane, local_lane):
                await lane.probe_answered()
        assert type(ours) is type(theirs), f"step {step}: {ours} vs {theirs}"
        if isinstance(ours, Grant) and isinstance(theirs, Grant):
            assert ours.probe == theirs.probe, f"step {step}"
            assert ours.delay_s == pytest.approx(theirs.delay_s, abs=1e-5), f"step {step}"
        if isinstance(ours, Throttle) and isinstance(theirs, Throttle):
            assert ours.reason == theirs.reason, f"step {step}"
            assert ours.wait_s == pytest.approx(theirs.wait_s, abs=1e-5), f"step {step}"
        refusals += isinstance(ours, Throttle)
    assert 50 < refusals < 550  # the sequence exercised both answers


async def test_every_instance_spends_the_one_budget(client: RedisClient) -> None:
    key = fresh_key()
    fleet = [shared(client, key) for _ in range(4)]
    answers = [await fleet[n % 4].take(False) for n in range(40)]
    # Redis's own clock: the reads' part of the burst, and no more, in this instant.
    assert sum(isinstance(a, Grant) for a in answers) == TRADING.burst - TRADING.reserve
    refused = [a for a in answers if isinstance(a, Throttle)]
    assert {a.reason for a in refused} == {"budget"}
    assert all(0 < a.wait_s <= TRADING.reserve * TRADING.interval_s + 0.01 for a in refused)
    # An order, on any instance, still finds the reserve.
    assert isinstance(await fleet[3].take(True), Grant)


async def test_one_instances_429_holds_them_all_and_the_fleet_sends_one_probe(
    client: RedisClient,
) -> None:
    clock = FakeClock()
    key = fresh_key()
    a, b, c = (shared(client, key, clock) for _ in range(3))
    await a.block(5.0)

    held = await b.take(True)
    assert isinstance(held, Throttle)
    assert held.reason == "alpaca_block"
    assert held.wait_s == pytest.approx(5.0)
    assert b.wait_s() == pytest.approx(5.0)  # now known without asking Redis
    clock.advance(5.0)
    probe = await c.take(False)
    assert probe == Grant(probe=True)
    assert [await x.take(False) for x in (a, b)] == [Throttle("alpaca_block", 1.0)] * 2
    await c.probe_answered()
    assert isinstance(await a.take(False), Grant)


async def test_a_lost_probe_frees_its_slot_after_its_lease(client: RedisClient) -> None:
    clock = FakeClock()
    key = fresh_key()
    a, b = shared(client, key, clock), shared(client, key, clock)
    await a.block(1.0)
    clock.advance(1.0)
    assert await a.take(False) == Grant(probe=True)  # never answers
    clock.advance(1.9)
    assert await b.take(False) == Throttle("alpaca_block", 1.0)
    clock.advance(0.1)
    assert await b.take(False) == Grant(probe=True)


async def test_the_lane_lives_in_one_cluster_slot_under_a_hash_of_the_key_id(
    client: RedisClient,
) -> None:
    key = lane_key("gw-test", account_tag(KEY_ID), "data")
    assert key.startswith("{")  # the whole name is the hash tag
    assert key.endswith("}")
    assert KEY_ID not in key
    assert key == f"{{gw-test:budget:{account_tag(KEY_ID)}:data}}"

    lane_name = fresh_key()
    await shared(client, lane_name).take(False)
    assert 0 < await client.pttl(lane_name) <= 61_000 + 10_000  # state outlives no use of it


async def test_redis_gone_each_instance_spends_its_share_without_waiting(
    private_redis: PrivateRedis,
) -> None:
    redis = fail_fast_redis(private_redis.url, timeout_s=0.1)
    metrics = Metrics()
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        # A clock that stands still: the 20 calls fall within one retry interval.
        lane = shared(redis, fresh_key(), FakeClock(), metrics=metrics, instances=2)
        assert isinstance(await lane.take(False), Grant)
        assert metric(metrics, "gateway_upstream_budget_fallback", lane="trading") == 0
        private_redis.stop()

        answers = [await lane.take(False) for _ in range(20)]
    finally:
        logger.remove(sink)
        await redis.aclose()

    share = TRADING.share(2)
    # Half the lane: its reads' part of half the burst, the rest refused with a true wait.
    assert sum(isinstance(a, Grant) for a in answers) == share.burst - share.reserve
    assert lane.fallback_active
    assert metric(metrics, "gateway_upstream_budget_fallback", lane="trading") == 1
    # Redis was asked once; the share answered the other calls at once, Redis unasked.
    assert metric(metrics, "gateway_cache_backend_errors_total", backend="redis") == 1
    assert sum("rate budget unavailable" in w for w in warnings) == 1  # said once


async def test_a_hung_redis_costs_one_timeout_per_retry_interval_not_one_per_call(
    private_redis: PrivateRedis,
) -> None:
    redis = fail_fast_redis(private_redis.url, timeout_s=0.1)
    metrics = Metrics()
    # A clock that stands still: all 20 calls fall within one retry interval, however slow.
    lane = shared(redis, fresh_key(), FakeClock(), metrics=metrics)
    try:
        assert isinstance(await lane.take(False), Grant)
        with frozen_redis(private_redis):
            for _ in range(20):
                await lane.take(False)
        assert lane.fallback_active
        # One call waited out the timeout; the 19 after it, within the retry interval, were
        # answered by the share without asking Redis (no timed assertion: the count says it).
        errors = metric(metrics, "gateway_cache_backend_errors_total", backend="redis")
        assert errors == 1
    finally:
        await redis.aclose()


def falling_back(lane: SharedBudget) -> bool:
    # A call, not the property: each look is news after an await (mypy would narrow it).
    return lane.fallback_active


async def test_redis_back_the_shared_budget_answers_again(private_redis: PrivateRedis) -> None:
    clock = FakeClock()
    redis = fail_fast_redis(private_redis.url, timeout_s=0.1)
    metrics = Metrics()
    key = fresh_key()
    lane = shared(redis, key, clock, metrics=metrics)
    try:
        private_redis.stop()
        await lane.take(False)
        assert falling_back(lane)
        private_redis.start()
        await lane.take(True)  # within the retry interval the share answers, Redis unasked
        assert falling_back(lane)
        clock.advance(1.0)  # the retry interval
        assert isinstance(await lane.take(False), Grant)
        assert not falling_back(lane)
        assert metric(metrics, "gateway_upstream_budget_fallback", lane="trading") == 0
        assert await redis.exists(key) == 1
    finally:
        await redis.aclose()


async def test_an_answer_later_than_the_caches_timeout_is_not_an_outage_of_the_budget(
    emulator: EmulatorControl,
    emulator_process: EmulatorProcess,
    make_gateway: GatewayFactory,
    private_redis: PrivateRedis,
) -> None:
    """As when a burst keeps the event loop busy: the budget's answer is read past the cache's
    fail-fast timeout. A lane that took that for an outage would spend this instance's share
    on top of the shared budget; on the lifespan's coordination client it waits, within its
    own bound, and spends the shared budget."""
    namespace = f"test-{uuid.uuid4().hex}"
    gateway = await make_gateway(
        redis_url=private_redis.url,
        cache_namespace=namespace,
        redis_timeout_s=0.05,
        alpaca_trading_budget_per_minute=60,
        alpaca_trading_budget_burst=10,
        alpaca_order_budget_reserve=2,
    )
    key = await gateway.issue_key("trading:read")
    async with redis_kept_busy(private_redis.url) as (raw, busy):
        account = await gateway.get("/v1/account", headers={"Authorization": f"Bearer {key}"})
        await busy
        lane = lane_key(namespace, account_tag(emulator_process.key_id), "trading")
        spent_shared = await raw.exists(lane)

    assert account.status_code == 200, account.text
    assert await emulator.calls_to("/v2/account") == 1
    fallback = await gateway.get("/metrics")
    assert 'gateway_upstream_budget_fallback{lane="trading"} 0.0' in fallback.text
    assert spent_shared == 1
