"""One upstream call per key across instances: leases, landing notices, takeover, fallback.

Each `Instance` is what one gateway process builds (its own Redis client, cache, shared flights
and read-through) on the real Redis; `GatedAlpaca` plays Alpaca's part and holds its answers
until the test opens the gate, so a fetch is in flight while other instances ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from app.cache import RedisCache, RedisClient, cache_key, fail_fast_redis
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from app.reads.read_through import ReadThrough, Served
from app.shared_flights import SharedFlights, coordinated, lease_key, notice, parse_notice
from tests.conftest import PrivateRedis, free_port
from tests.support.namespaced_redis import namespace, raw_redis
from tests.unit.test_read_through import quote

__all__ = ["namespace", "raw_redis"]  # the fixtures, imported for this module's tests

REDIS_TIMEOUT_S = 0.5  # generous: other suites share this machine's CPU


class GatedAlpaca:
    """Answers each chunk once the gate opens; counts the symbols it was asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked = asyncio.Event()
        self.failure: GatewayError | None = None

    def hold(self) -> None:
        self.gate.clear()

    async def fetch(self, chunk: list[str]) -> Mapping[str, Any]:
        self.calls.append(list(chunk))
        self.asked.set()
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return {s: quote(s) for s in chunk}


class Instance:
    def __init__(self, url: str, namespace: str, name: str, **flights: float) -> None:
        self.client: RedisClient = fail_fast_redis(url, timeout_s=REDIS_TIMEOUT_S)
        self.metrics = Metrics()
        self.cache = RedisCache(
            self.client, self.metrics, timeout_s=REDIS_TIMEOUT_S, namespace=namespace
        )
        self.flights = SharedFlights(
            self.client,
            self.cache,
            self.metrics,
            owner=name,
            lease_s=flights.get("lease_s", 2.0),
            wait_s=flights.get("wait_s", 5.0),
            poll_s=flights.get("poll_s", 0.05),
            channel=f"{namespace}:landed",
        )
        self.reads = ReadThrough(
            self.cache,
            self.metrics,
            negative_ttl_s=1.0,
            stale_retention_s=60.0,
            shared=self.flights,
        )
        self.alpaca = GatedAlpaca()

    async def read(self, *symbols: str) -> dict[str, Any]:
        return await self.reads.read(
            "quote",
            {s: cache_key("quote", "iex", s) for s in symbols},
            self.alpaca.fetch,
            fresh_ttl_s=5.0,
            chunk_size=100,
        )

    def counted(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "gateway_shared_flight_keys_total", {"result": result}
        )
        return value or 0.0

    async def aclose(self) -> None:
        await self.flights.aclose()
        await self.client.aclose()


@pytest.fixture
async def fleet(redis_url: str, namespace: str, raw_redis: Redis) -> AsyncIterator[list[Instance]]:
    """Three instances on one Redis, each listening for landing notices."""
    instances = [Instance(redis_url, namespace, f"gw-{i}") for i in range(3)]
    for instance in instances:
        instance.flights.start()
    await subscribed(raw_redis, f"{namespace}:landed", len(instances))
    yield instances
    for instance in instances:
        await instance.aclose()


async def subscribed(client: Redis, channel: str, listeners: int) -> None:
    """Until `listeners` instances hear `channel` (Redis's own count), within 5 s."""
    async with asyncio.timeout(5):
        while True:
            if (await client.pubsub_numsub(channel))[0][1] >= listeners:
                return
            await asyncio.sleep(0.01)


async def in_flight(alpaca: GatedAlpaca) -> None:
    async with asyncio.timeout(5):
        await alpaca.asked.wait()


async def read_behind_a_held_call(
    leader: Instance, followers: list[Instance], *, wait_s: float = 0.2
) -> tuple[Any, list[Any]]:
    """The leader reads AAPL and is held at Alpaca while `followers` ask for it too; `wait_s`
    later the gate opens. The leader's outcome, then each follower's."""
    leader.alpaca.hold()
    first = asyncio.create_task(leader.read("AAPL"))
    await in_flight(leader.alpaca)
    others = [asyncio.create_task(f.read("AAPL")) for f in followers]
    await asyncio.sleep(wait_s)
    leader.alpaca.gate.set()
    led = (await first)["AAPL"]
    return led, [(await task)["AAPL"] for task in others]


def aapl_lease(namespace: str) -> str:
    return lease_key(f"{namespace}:{cache_key('quote', 'iex', 'AAPL')}")


# --- keys and notices ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value_key",
    [
        "gw:v1:quote:iex:AAPL",
        "gw:v1:bar:iex:BRK.B:1Day:2024-01-01:-:1000:raw:-",
        "prod-eu:v1:alpaca_page:bars:v2/stocks/bars:symbols=AAPL,MSFT:timeframe=1Day",
    ],
)
def test_a_lease_lives_in_its_values_namespace_and_cluster_slot(value_key: str) -> None:
    lease = lease_key(value_key)

    assert lease.startswith(value_key.partition(":")[0] + ":lease:")
    assert key_slot(lease.encode()) == key_slot(value_key.encode())


def test_a_key_with_braces_is_not_coordinated() -> None:
    assert coordinated("v1:quote:iex:AAPL")
    assert not coordinated("v1:alpaca_page:x:{y}")


def test_a_notice_names_its_key_and_carries_the_entry() -> None:
    assert parse_notice(notice("v1:quote:iex:A:B", b'{"v":1}')) == ("v1:quote:iex:A:B", b'{"v":1}')
    assert parse_notice(notice("v1:quote:iex:AAPL", b"")) == ("v1:quote:iex:AAPL", b"")


# --- one call across instances --------------------------------------------------------------------
async def test_instances_asking_for_a_cold_key_share_one_alpaca_call(
    fleet: list[Instance],
) -> None:
    leader, *followers = fleet
    # the followers claim, find the lease held and wait
    led, followed = await read_behind_a_held_call(leader, followers)

    assert leader.alpaca.calls == [["AAPL"]]
    assert all(f.alpaca.calls == [] for f in followers)
    assert led.cache == "miss"
    assert [f.cache for f in followed] == ["shared", "shared"]
    assert {f.fetched_at for f in followed} == {led.fetched_at}
    assert all(f.value == led.value for f in followed)
    assert leader.counted("led") == 1
    assert [f.counted("followed") for f in followers] == [1, 1]


async def test_a_cache_that_gave_up_on_redis_does_not_stop_the_instances_sharing_a_call(
    fleet: list[Instance],
) -> None:
    """In a cold burst the event loops lag, and a cache read answered late makes the cache
    skip Redis for a while. That is not an outage of Redis: coordination goes on (claims and
    the landing that tells the waiting instances), or each lagging instance would call
    Alpaca again."""
    leader, *followers = fleet
    for instance in fleet:
        instance.cache.report_failure(TimeoutError())  # as a read answered too late does
    assert not any(instance.cache.reachable() for instance in fleet)
    # the followers claim, find the lease held and wait
    led, followed = await read_behind_a_held_call(leader, followers)

    assert leader.alpaca.calls == [["AAPL"]]
    assert all(f.alpaca.calls == [] for f in followers)
    assert [f.cache for f in followed] == ["shared", "shared"]
    assert {f.fetched_at for f in followed} == {led.fetched_at}
    assert sum(f.counted("unshared") for f in fleet) == 0


async def test_a_batch_calls_alpaca_only_for_the_symbols_no_other_instance_is_fetching(
    fleet: list[Instance],
) -> None:
    one, two, batch = fleet
    one.alpaca.hold()
    two.alpaca.hold()
    fetching = [asyncio.create_task(one.read("AAPL")), asyncio.create_task(two.read("MSFT"))]
    await in_flight(one.alpaca)
    await in_flight(two.alpaca)

    asked = asyncio.create_task(batch.read("AAPL", "MSFT", "TSLA"))
    await in_flight(batch.alpaca)
    one.alpaca.gate.set()
    two.alpaca.gate.set()
    outcomes = await asked
    await asyncio.gather(*fetching)

    assert batch.alpaca.calls == [["TSLA"]]
    calls = [s for i in fleet for call in i.alpaca.calls for s in call]
    assert sorted(calls) == ["AAPL", "MSFT", "TSLA"]  # each symbol once, across the instances
    assert {s: o.cache for s, o in outcomes.items()} == {
        "AAPL": "shared",
        "MSFT": "shared",
        "TSLA": "miss",
    }


async def test_a_failure_is_published_so_followers_do_not_call_again(
    fleet: list[Instance],
) -> None:
    leader, follower, _ = fleet
    leader.alpaca.failure = GatewayError(
        ErrorCode.UPSTREAM_UNAVAILABLE, "Alpaca data API failed (HTTP 503)", upstream="data"
    )
    failed, [shared] = await read_behind_a_held_call(leader, [follower])

    assert isinstance(failed, GatewayError)
    assert isinstance(shared, GatewayError)
    assert shared.code is failed.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert shared.detail == failed.detail
    assert shared is not failed
    assert follower.alpaca.calls == []
    assert follower.counted("followed") == 1


async def test_an_answer_given_without_alpaca_is_not_shared(fleet: list[Instance]) -> None:
    """An open breaker is the holder's own state: the next claimer asks its own."""
    leader, follower, _ = fleet
    leader.alpaca.failure = GatewayError(
        ErrorCode.CIRCUIT_OPEN, "data breaker open", upstream="data", retry_after_s=30
    )
    led, [taken_over] = await read_behind_a_held_call(leader, [follower])

    assert isinstance(led, GatewayError)

    assert isinstance(taken_over, Served)
    assert taken_over.cache == "miss"
    assert follower.alpaca.calls == [["AAPL"]]
    assert follower.counted("took_over") == 1


async def test_leases_are_renewed_while_a_slow_call_lasts(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    short = {"lease_s": 0.3, "wait_s": 10.0, "poll_s": 0.05}
    leader = Instance(redis_url, namespace, "gw-0", **short)
    follower = Instance(redis_url, namespace, "gw-1", **short)
    try:
        # four leases long: without renewal the follower would call
        _, [followed] = await read_behind_a_held_call(leader, [follower], wait_s=1.2)

        assert followed.cache == "shared"
        assert follower.alpaca.calls == []
    finally:
        await leader.aclose()
        await follower.aclose()


async def test_a_dead_holders_lease_lapses_and_another_instance_takes_over(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    # What a process killed mid-fetch leaves behind: its lease, which nobody renews.
    await raw_redis.set(aapl_lease(namespace), "gw-dead:0123", px=400)
    follower = Instance(redis_url, namespace, "gw-1", lease_s=0.4, wait_s=5.0, poll_s=0.05)
    try:
        outcome = (await follower.read("AAPL"))["AAPL"]

        assert isinstance(outcome, Served)
        assert outcome.cache == "miss"
        assert follower.alpaca.calls == [["AAPL"]]
        assert follower.counted("took_over") == 1
        assert await raw_redis.exists(aapl_lease(namespace)) == 0  # released after landing
    finally:
        await follower.aclose()


async def test_a_wait_past_its_budget_is_upstream_timeout_not_a_call(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    """The holder is alive (its lease is renewed) and still waiting for Alpaca."""
    lease = aapl_lease(namespace)
    await raw_redis.set(lease, "gw-slow:0123", px=300)

    async def renew() -> None:
        while True:
            await raw_redis.pexpire(lease, 300)
            await asyncio.sleep(0.1)

    holder = asyncio.create_task(renew())
    follower = Instance(redis_url, namespace, "gw-1", lease_s=0.3, wait_s=0.6, poll_s=0.05)
    try:
        outcome = (await follower.read("AAPL"))["AAPL"]
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        await follower.aclose()

    assert isinstance(outcome, GatewayError)
    assert outcome.code is ErrorCode.UPSTREAM_TIMEOUT
    assert "did not arrive within 0.6 s" in outcome.detail
    assert follower.alpaca.calls == []
    assert follower.counted("timed_out") == 1


async def test_a_landing_notice_wakes_a_waiter_long_before_its_next_poll(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    leader = Instance(redis_url, namespace, "gw-0")
    follower = Instance(redis_url, namespace, "gw-1", lease_s=10.0, wait_s=60.0, poll_s=30.0)
    follower.flights.start()
    await subscribed(raw_redis, f"{namespace}:landed", 1)
    try:
        leader.alpaca.hold()
        first = asyncio.create_task(leader.read("AAPL"))
        await in_flight(leader.alpaca)
        second = asyncio.create_task(follower.read("AAPL"))
        await asyncio.sleep(0.2)  # the follower's one claim is made; its next is 30 s away
        leader.alpaca.gate.set()
        await first

        async with asyncio.timeout(10):  # only the notice can answer it within this
            outcome = (await second)["AAPL"]
        assert outcome.cache == "shared"
    finally:
        await leader.aclose()
        await follower.aclose()


async def test_a_missed_notice_is_made_up_for_by_polling(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    leader = Instance(redis_url, namespace, "gw-0")
    deaf = Instance(redis_url, namespace, "gw-1", poll_s=0.05)  # never started: hears nothing
    try:
        led, [found] = await read_behind_a_held_call(leader, [deaf])
        assert found.cache == "shared"
        assert found.fetched_at == led.fetched_at
        assert deaf.alpaca.calls == []
    finally:
        await leader.aclose()
        await deaf.aclose()


# --- without Redis --------------------------------------------------------------------------------
async def test_redis_stopped_mid_wait_the_waiter_calls_alpaca_itself(
    private_redis: PrivateRedis,
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    leader = Instance(private_redis.url, namespace, "gw-0")
    follower = Instance(private_redis.url, namespace, "gw-1", wait_s=30.0)
    try:
        leader.alpaca.hold()
        first = asyncio.create_task(leader.read("AAPL"))
        await in_flight(leader.alpaca)
        second = asyncio.create_task(follower.read("AAPL"))
        await asyncio.sleep(0.2)  # waiting for the leader's landing

        private_redis.stop()
        async with asyncio.timeout(5):  # long before its 30 s budget: it stops waiting
            alone = (await second)["AAPL"]
        leader.alpaca.gate.set()
        led = (await first)["AAPL"]

        assert isinstance(alone, Served)
        assert alone.cache == "miss"
        assert isinstance(led, Served)
        assert follower.alpaca.calls == [["AAPL"]]
        assert follower.counted("unshared") == 1
        assert follower.cache.status() == "down"

        # Still down: the next cold key costs no Redis round trip and no wait, just the call.
        again = (await follower.read("MSFT"))["MSFT"]
        assert isinstance(again, Served)
        assert follower.alpaca.calls == [["AAPL"], ["MSFT"]]
    finally:
        await leader.aclose()
        await follower.aclose()


async def test_with_redis_unreachable_each_instance_calls_for_itself() -> None:
    """Exactly a single instance's behaviour: its own call, shared by its own requests."""
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    one = Instance(url, f"test-{uuid.uuid4().hex}", "gw-0")
    two = Instance(url, f"test-{uuid.uuid4().hex}", "gw-1")
    try:
        outcomes = await asyncio.gather(
            one.read("AAPL"), one.read("AAPL"), two.read("AAPL"), two.read("AAPL")
        )
    finally:
        await one.aclose()
        await two.aclose()

    assert sorted(o["AAPL"].cache for o in outcomes) == ["miss", "miss", "shared", "shared"]
    assert one.alpaca.calls == two.alpaca.calls == [["AAPL"]]
    assert one.counted("unshared") == two.counted("unshared") == 1
