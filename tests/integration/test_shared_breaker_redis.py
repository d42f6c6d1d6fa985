"""The fleet's breaker state in real Redis: the Lua scripts one step at a time, then the sync
that carries it between instances (several `SharedBreaker`s with their own clients in one
loop), and a throwaway redis-server stopped mid-way to show each instance deciding alone.

Short open durations and leases keep it fast; waits poll with deadlines.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from app.alpaca import breaker_scripts
from app.alpaca.breaker import BreakerConfig, BreakerState, CallNotPermitted
from app.alpaca.breaker_sync import (
    BreakerSync,
    breaker_channel,
    breaker_keys,
    parse_view,
    script_args,
)
from app.alpaca.shared_breaker import SharedBreaker, SharedView
from app.cache import fail_fast_redis
from tests.conftest import PrivateRedis

pytestmark = pytest.mark.integration

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
CONFIG = BreakerConfig(
    window_size=4,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    open_duration_s=0.3,
    half_open_calls=2,
    half_open_permit_ttl_s=0.4,
)
DEADLINE_S = 5.0


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> float:
    """Poll `check` until it holds; the seconds it took. Fails with `what` at the deadline."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# --- the scripts, called as instances would call them -----------------------------------------
class Scripts:
    """One upstream's state under a fresh namespace; `instance` names the caller."""

    def __init__(self, redis: Redis, config: BreakerConfig = CONFIG) -> None:
        self.redis = redis
        self.namespace = f"test-breaker-{uuid.uuid4().hex[:12]}"
        self.config = config
        self.keys = breaker_keys(self.namespace, "data")

    async def run(self, script: str, instance: str, *args: str, channel_of: str = "") -> list[Any]:
        argv = script_args(channel_of or self.namespace, "data", instance, self.config, *args)
        return list(await self.redis.eval(script, 3, *self.keys, *argv))

    async def state(self) -> SharedView:
        return parse_view(await self.run(breaker_scripts.STATE, "reader"))

    async def report(self, instance: str, generation: int, *codes: str) -> SharedView:
        answer = await self.run(breaker_scripts.REPORT, instance, str(generation), *codes)
        return parse_view(answer)

    async def trial(self, instance: str, permit: str) -> tuple[SharedView, bool, int]:
        """(state, granted, retry_ms)"""
        answer = await self.run(breaker_scripts.TRIAL, instance, permit)
        return parse_view(answer), int(answer[10]) == 1, int(answer[12])

    async def trip(self, instance: str = "gw-a") -> SharedView:
        opened = await self.report(instance, (await self.state()).generation, "1", "1", "1", "1")
        assert opened.state is OPEN
        return opened

    async def half_open(self, first: str, permit: str) -> SharedView:
        """Trip, wait the open duration out, and take the first trial (which moves it)."""
        await self.trip()
        deadline = time.monotonic() + DEADLINE_S
        while True:
            view, granted, retry_ms = await self.trial(first, permit)
            if granted:
                assert view.state is HALF_OPEN
                return view
            assert time.monotonic() < deadline, "never half-open"
            await asyncio.sleep(retry_ms / 1000)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def scripts(redis: Redis) -> AsyncIterator[Scripts]:
    s = Scripts(redis)
    yield s
    await redis.delete(*s.keys)


async def test_every_instance_feeds_one_window_and_the_opener_tells_everyone(
    scripts: Scripts, redis: Redis
) -> None:
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(breaker_channel(scripts.namespace))
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        generation = (await scripts.state()).generation
        await scripts.report("gw-a:1", generation, "1", "1")
        after_three = await scripts.report("gw-b:2", generation, "1")
        assert (after_three.state, after_three.calls, after_three.failures) == (CLOSED, 3, 3)

        opened = await scripts.report("gw-b:2", generation, "0")  # 3 of 4 failed: >= 0.5

        assert opened.state is OPEN
        assert (opened.opened_by, opened.calls, opened.failures) == ("gw-b:2", 4, 3)
        assert opened.generation > generation
        assert opened.open_until_ms == opened.now_ms + 300
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert message is not None
    fields = message["data"].decode().split("|")
    assert fields[0] == "data"
    assert parse_view(fields[1:]) == opened


async def test_slow_calls_count_by_their_own_rate(scripts: Scripts) -> None:
    slow = BreakerConfig(window_size=4, minimum_calls=4, slow_call_rate_threshold=0.75)
    scripts.config = slow
    generation = (await scripts.state()).generation
    view = await scripts.report("gw-a", generation, "2", "2", "0", "0")
    assert (view.state, view.slow_calls) == (CLOSED, 2)
    view = await scripts.report("gw-a", generation, "2", "3", "2")  # the last 4: 0, 2, 3, 2
    assert (view.state, view.calls, view.slow_calls, view.failures) == (OPEN, 4, 3, 1)


async def test_outcomes_admitted_under_another_generation_are_dropped(scripts: Scripts) -> None:
    generation = (await scripts.state()).generation
    view = await scripts.report("gw-a", generation - 1, "1", "1", "1", "1")
    assert (view.state, view.calls) == (CLOSED, 0)


async def test_half_open_grants_the_configured_trials_in_total(scripts: Scripts) -> None:
    view = await scripts.half_open("gw-a", "a1")
    assert view.trials_in_flight == 1
    _, granted_b, _ = await scripts.trial("gw-b", "b1")
    _, granted_c, retry_ms = await scripts.trial("gw-c", "c1")
    assert (granted_b, granted_c) == (True, False)
    assert 0 < retry_ms <= 400  # when the oldest lease lapses

    await scripts.report("gw-a", view.generation, "i:a1")  # ignored: frees its slot
    _, granted_c, _ = await scripts.trial("gw-c", "c1")
    assert granted_c
    after_one = await scripts.report("gw-b", view.generation, "0:b1")
    assert (after_one.state, after_one.calls) == (HALF_OPEN, 1)
    closed = await scripts.report("gw-c", view.generation, "0:c1")

    assert closed.state is CLOSED
    assert closed.changed_by == "gw-c"
    assert (closed.calls, closed.trials_in_flight) == (0, 0)  # a fresh window


async def test_failed_trials_open_it_again_for_everyone(scripts: Scripts) -> None:
    view = await scripts.half_open("gw-a", "a1")
    await scripts.trial("gw-b", "b1")
    await scripts.report("gw-a", view.generation, "1:a1")
    reopened = await scripts.report("gw-b", view.generation, "0:b1")  # 1 of 2 failed
    assert reopened.state is OPEN
    assert reopened.opened_by == "gw-b"
    assert reopened.generation > view.generation
    _, granted, _ = await scripts.trial("gw-c", "c1")
    assert not granted  # a fresh open duration, for every instance


async def test_a_lost_trial_frees_its_slot_after_its_lease(scripts: Scripts) -> None:
    view = await scripts.half_open("gw-a", "a1")
    await scripts.trial("gw-b", "b1")
    started = time.monotonic()
    while not (await scripts.trial("gw-c", "c1"))[1]:
        assert time.monotonic() - started < DEADLINE_S, "the lapsed leases never freed a slot"
        await asyncio.sleep(0.02)
    # a1's lease lapsed (its call hung, its instance died): its late word is not counted.
    late = await scripts.report("gw-a", view.generation, "0:a1")
    assert (late.state, late.calls) == (HALF_OPEN, 0)


async def test_a_verdict_reached_alone_is_taken_only_while_the_fleet_is_closed(
    scripts: Scripts,
) -> None:
    taken = parse_view(await scripts.run(breaker_scripts.OPEN, "gw-a", "5000"))
    assert (taken.state, taken.opened_by) == (OPEN, "gw-a")
    assert taken.open_until_ms == taken.now_ms + 5000
    kept = parse_view(await scripts.run(breaker_scripts.OPEN, "gw-b", "90000"))
    assert (kept.generation, kept.opened_by, kept.open_until_ms) == (
        taken.generation,
        "gw-a",
        taken.open_until_ms,
    )


async def test_a_state_gone_from_redis_comes_back_newer(scripts: Scripts, redis: Redis) -> None:
    opened = await scripts.trip()
    await redis.delete(*scripts.keys)  # expired, flushed, a fresh Redis
    again = await scripts.state()
    assert again.state is CLOSED
    assert again.generation > opened.generation  # newer than any copy an instance holds


# --- the sync: several instances in one loop, each with its own client ------------------------
@dataclass
class Instances:
    """`await make(name, url=..., interval_s=...)`: a breaker and its running sync, all under
    `namespace`; `errors` counts each sync's Redis errors."""

    namespace: str
    stack: AsyncExitStack
    redis_url: str
    errors: list[int] = field(default_factory=list)

    async def make(
        self,
        name: str,
        *,
        url: str | None = None,
        interval_s: float = 30.0,
        config: BreakerConfig = CONFIG,
    ) -> SharedBreaker:
        client = fail_fast_redis(url or self.redis_url, timeout_s=0.1)
        self.stack.push_async_callback(client.aclose)
        breaker = SharedBreaker("data", config, instance=name)
        index = len(self.errors)
        self.errors.append(0)

        def error() -> None:
            self.errors[index] += 1

        sync = BreakerSync(
            client,
            [breaker],
            config,
            namespace=self.namespace,
            instance=name,
            interval_s=interval_s,
            on_error=error,
        )
        await sync.start()
        self.stack.push_async_callback(sync.aclose)
        return breaker


@pytest.fixture
async def instances(redis_url: str) -> AsyncIterator[Instances]:
    async with AsyncExitStack() as stack:
        yield Instances(f"test-sync-{uuid.uuid4().hex[:12]}", stack, redis_url)


def trip(breaker: SharedBreaker) -> None:
    for _ in range(CONFIG.minimum_calls):
        breaker.acquire().record_failure(0.01)


async def test_an_opening_reaches_the_others_without_their_own_failures(
    instances: Instances,
) -> None:
    make = instances.make
    a = await make("gw-a:1")  # no periodic read in this test: only the notice can tell them
    others = [await make(f"gw-{n}:{n}") for n in "bcd"]
    assert {b.source for b in [a, *others]} == {"shared"}

    trip(a)
    await eventually(lambda: all(b.state is OPEN for b in [a, *others]), "every instance open")

    for breaker in others:
        snapshot = breaker.snapshot()
        assert (snapshot.source, snapshot.opened_by) == ("shared", "gw-a:1")
        assert snapshot.retry_after_s > 0
        with pytest.raises(CallNotPermitted):
            breaker.acquire()


async def test_a_lost_notice_is_made_up_by_the_periodic_read(
    instances: Instances, redis_url: str
) -> None:
    make = instances.make
    a = await make("gw-a:1", interval_s=0.2)
    client = Redis.from_url(redis_url)
    try:
        scripts = Scripts(client)
        scripts.namespace = instances.namespace
        scripts.keys = breaker_keys(instances.namespace, "data")
        scripts.config = BreakerConfig(open_duration_s=5.0)
        # Opened with its notice sent elsewhere: as if the listener had missed it.
        await scripts.run(breaker_scripts.OPEN, "gw-z:9", "5000", channel_of="nowhere")
    finally:
        await client.aclose()
    await eventually(lambda: a.state is OPEN, "the periodic read adopted the open state")
    assert a.snapshot().opened_by == "gw-z:9"


async def test_trial_permits_are_shared_by_all_instances(
    instances: Instances,
) -> None:
    make = instances.make
    fleet = [await make(f"gw-{n}:{n}", interval_s=0.2) for n in "abcd"]
    trip(fleet[0])
    await eventually(lambda: all(b.state is HALF_OPEN for b in fleet), "every one half-open")
    for breaker in fleet:
        assert breaker.retry_after_s() > 0  # no permit yet: refused, and asked for one

    await eventually(lambda: sum(b.retry_after_s() == 0 for b in fleet) == 2, "two permits")
    holders = [b for b in fleet if b.retry_after_s() == 0]
    for breaker in holders:
        breaker.acquire().record_success(0.01)
    await eventually(lambda: all(b.state is CLOSED for b in fleet), "closed everywhere")


async def test_redis_stopped_mid_way_each_instance_decides_alone(
    instances: Instances, private_redis: PrivateRedis
) -> None:
    make, errors = instances.make, instances.errors
    config = BreakerConfig(window_size=4, minimum_calls=4, open_duration_s=2.0, half_open_calls=2)
    a = await make("gw-a:1", url=private_redis.url, interval_s=0.2, config=config)
    b = await make("gw-b:2", url=private_redis.url, interval_s=0.2, config=config)
    trip(a)
    await eventually(lambda: b.state is OPEN, "b adopts a's opening")
    left_s = b.retry_after_s()

    private_redis.stop()
    await eventually(lambda: a.source == b.source == "local", "both decide alone")

    # Never fail open: the fleet's OPEN holds here until the same moment, then local trials.
    assert b.state is OPEN
    assert b.snapshot().opened_by == "gw-a:1"
    assert 0 < b.retry_after_s() <= left_s
    with pytest.raises(CallNotPermitted):
        b.acquire()
    await eventually(lambda: b.state is HALF_OPEN, "b's own half-open")
    b.acquire().record_failure(0.01)
    b.acquire().record_failure(0.01)
    assert b.state is OPEN  # its own trials, its own verdict
    assert b.snapshot().opened_by == "gw-b:2"
    # a was not told: its own wait ends (by its own clock, a few ms apart) and it half-opens.
    await eventually(lambda: a.state is HALF_OPEN, "a's own half-open")
    assert min(errors) >= 1  # counted (gateway_circuit_breaker_redis_errors_total)

    private_redis.start()  # an empty Redis on the same port
    await eventually(lambda: a.source == b.source == "shared", "both follow the fleet again")
    # b's verdict, reached alone, was offered to the fleet; a adopts it.
    await eventually(lambda: a.state is OPEN, "a adopts b's opening")
    assert a.snapshot().opened_by == "gw-b:2"
