"""The feed's lease, one tick at a time (real Redis, a namespace of its own; the upstream
connection a stand-in): a lease that vanished while its leader lives is taken back by that
leader, and a follower waits for that instead of taking it; a lease that lapsed (its leader
died) is taken at once. And the gaps the relay causes are counted where they are announced."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError

from app.cache import RedisClient, fail_fast_redis
from app.streams.leader import GAP, RELAY_QUEUE_FRAMES, WANTS, FeedLeadership
from app.streams.subscriptions import Wanted
from tests.conftest import free_port
from tests.support.deaf_redis import DeafRedis

LEASE_S = 0.9  # renewals every 0.3 s; after a Redis error, again after 0.2 s
HOLD_S = LEASE_S / 2  # a follower's wait for the holder of a vanished lease


@dataclass
class Hub:
    feed: Any = field(default_factory=lambda: SimpleNamespace(name="iex"))
    gaps: list[tuple[int, int]] = field(default_factory=list)
    connected: int = 0

    def on_gap(self, since_ns: int, until_ns: int) -> None:
        self.gaps.append((since_ns, until_ns))

    def on_connected(self) -> None:
        self.connected += 1


@dataclass
class Upstream:
    """The connection: what it was told to hold, and whether it was closed."""

    wanted: list[Wanted] = field(default_factory=list)
    closed: int = 0

    def want(self, wanted: Wanted) -> None:
        self.wanted.append(wanted)

    def expect_gap(self, since_ns: int) -> None:
        pass

    async def aclose(self) -> None:
        self.closed += 1


@dataclass
class Metrics:
    gaps: int = 0
    leading: list[bool] = field(default_factory=list)

    def stream_gap(self, feed: str) -> None:
        assert feed == "iex"
        self.gaps += 1

    def stream_leader(self, feed: str, leading: bool) -> None:
        self.leading.append(leading)


@dataclass
class Node:
    leadership: FeedLeadership
    upstream: Upstream
    metrics: Metrics
    hub: Hub


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """What app/streams/leader.py logs at WARNING and above."""
    lines: list[str] = []
    sink = logger.add(
        lambda message: lines.append(message.record["message"]),
        level="WARNING",
        filter="app.streams.leader",
    )
    yield lines
    logger.remove(sink)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = fail_fast_redis(redis_url, timeout_s=1.0)
    yield client
    await client.aclose()


@pytest.fixture
async def namespace(redis: RedisClient) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await redis.delete(*keys(name))


def keys(namespace: str) -> tuple[str, str]:
    return f"{namespace}:stream:{{iex}}:leader", f"{namespace}:stream:{{iex}}:wants"


def node(redis: Any, namespace: str, instance: str, *symbols: str) -> Node:
    """An instance's part in the feed, driven by calling `_tick` (no background tasks)."""
    upstream, metrics, hub = Upstream(), Metrics(), Hub()
    leadership = FeedLeadership(
        hub,  # type: ignore[arg-type]
        lambda feed, owner: upstream,  # type: ignore[arg-type,return-value]
        redis,
        metrics,  # type: ignore[arg-type]
        namespace=namespace,
        instance=instance,
        lease_s=LEASE_S,
    )
    leadership._local = {"quotes": frozenset(symbols)}
    return Node(leadership, upstream, metrics, hub)


async def leader_and_follower(redis: RedisClient, namespace: str) -> tuple[Node, Node]:
    a, b = node(redis, namespace, "gw-a", "AAPL"), node(redis, namespace, "gw-b", "MSFT")
    await a.leadership._tick()
    await b.leadership._tick()
    assert a.leadership.leading
    assert not b.leadership.leading
    assert b.leadership._leader == "gw-a"
    return a, b


async def test_a_leader_whose_lease_vanished_takes_it_back_and_keeps_its_connection(
    redis: RedisClient, namespace: str, logged: list[str]
) -> None:
    a, b = await leader_and_follower(redis, namespace)
    await a.leadership._tick()  # the follower's wants read
    assert a.upstream.wanted[-1] == {"quotes": frozenset({"AAPL", "MSFT"})}

    await redis.delete(*keys(namespace))  # what a FLUSHDB, or a restart, does to them
    await a.leadership._tick()

    assert a.leadership.leading
    assert a.upstream.closed == 0
    assert await redis.get(keys(namespace)[0]) == b"gw-a"
    # The follower's wants went with the flush; it writes them again within a third of the
    # lease. Meanwhile the connection keeps what it held: its clients lose nothing.
    assert a.upstream.wanted[-1] == {"quotes": frozenset({"AAPL", "MSFT"})}
    assert [line for line in logged if "lease" in line] == [
        "stream iex: the lease was gone from Redis (restarted, flushed, failed over?); taken"
        " back, the connection kept"
    ]
    for _ in range(4):  # past the grace (a lease), ticking as the loops would
        await asyncio.sleep(LEASE_S / 3)
        await b.leadership._tick()
        await a.leadership._tick()
    assert a.leadership.leading
    assert a.upstream.wanted[-1] == {"quotes": frozenset({"AAPL", "MSFT"})}
    await redis.hdel(keys(namespace)[1], "gw-b")
    await a.leadership._tick()
    assert a.upstream.wanted[-1] == {"quotes": frozenset({"AAPL"})}


async def test_a_leader_whose_lease_another_instance_holds_lets_its_connection_go(
    redis: RedisClient, namespace: str, logged: list[str]
) -> None:
    a, _ = await leader_and_follower(redis, namespace)
    await redis.set(keys(namespace)[0], "gw-c", px=int(LEASE_S * 1000))

    await a.leadership._tick()

    assert not a.leadership.leading
    assert a.upstream.closed == 1
    assert a.metrics.leading == [True, False]
    assert await redis.get(keys(namespace)[0]) == b"gw-c"
    assert [line for line in logged if "lease" in line] == [
        "stream iex: no longer leading (another instance holds the lease); relaying another"
        " instance's connection"
    ]


async def test_a_follower_leaves_a_lease_that_vanished_early_to_its_holder(
    redis: RedisClient, namespace: str, logged: list[str]
) -> None:
    a, b = await leader_and_follower(redis, namespace)
    await redis.delete(*keys(namespace))
    gone_at = time.monotonic()

    await b.leadership._tick()  # it could not have lapsed yet: its holder lives
    assert not b.leadership.leading
    assert await redis.get(keys(namespace)[0]) is None
    [waiting] = [line for line in logged if "lease" in line]
    assert waiting.startswith("stream iex: the lease is not in Redis (gone ")
    assert waiting.endswith(
        f" s before it could lapse); waiting {HOLD_S:.1f} s for its holder to take it back"
        " before taking it"
    )
    await asyncio.sleep(HOLD_S / 2)
    await b.leadership._tick()
    assert not b.leadership.leading

    await a.leadership._tick()  # the holder's renewal: taken back
    await b.leadership._tick()
    assert a.leadership.leading
    assert not b.leadership.leading
    assert b.leadership._leader == "gw-a"
    assert a.upstream.closed == 0
    assert b.upstream.wanted == []  # the follower never connected
    assert time.monotonic() - gone_at < HOLD_S


async def test_a_follower_takes_a_vanished_lease_whose_holder_never_came_back(
    redis: RedisClient, namespace: str
) -> None:
    _, b = await leader_and_follower(redis, namespace)
    await redis.delete(*keys(namespace))  # and the leader is gone too: it never renews
    gone_at = time.monotonic()
    await b.leadership._tick()
    while not b.leadership.leading:
        assert time.monotonic() - gone_at < LEASE_S, "the follower never took the lease"
        await asyncio.sleep(0.02)
        await b.leadership._tick()
    waited_s = time.monotonic() - gone_at
    assert waited_s >= HOLD_S
    assert await redis.get(keys(namespace)[0]) == b"gw-b"
    assert b.upstream.wanted[-1] == {"quotes": frozenset({"MSFT"})}


async def test_a_follower_takes_a_lapsed_lease_at_once(
    redis: RedisClient, namespace: str, logged: list[str]
) -> None:
    """The leader died (kill -9): its lease lapses, and the first look after that takes it."""
    _, b = await leader_and_follower(redis, namespace)
    renewed_at = time.monotonic()
    for _ in range(1000):  # nothing renews it: it lapses within the lease
        if await redis.get(keys(namespace)[0]) is None:
            break
        await asyncio.sleep(0.005)
    lapsed_s = time.monotonic() - renewed_at
    await b.leadership._tick()
    assert b.leadership.leading
    assert lapsed_s <= LEASE_S + 0.05
    assert not [line for line in logged if "waiting" in line]


async def test_a_follower_back_from_a_redis_outage_leaves_the_lease_to_its_holder(
    redis: RedisClient, namespace: str, logged: list[str]
) -> None:
    """Redis away longer than the lease, back empty: the lease has passed its time, yet its
    holder kept streaming all along and takes it back at its next renewal."""
    a, b = await leader_and_follower(redis, namespace)
    away = fail_fast_redis(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
    b.leadership._redis = away  # what the follower's lease loop meets while Redis is away
    try:
        assert await b.leadership._step() == pytest.approx(0.2)  # and looks again soon
    finally:
        b.leadership._redis = redis
        await away.aclose()
    await asyncio.sleep(LEASE_S)
    await redis.delete(*keys(namespace))  # back, empty

    assert await b.leadership._step() == pytest.approx(LEASE_S / 3)
    assert not b.leadership.leading
    assert any(f"(Redis was unavailable); waiting {HOLD_S:.1f} s" in line for line in logged)
    await a.leadership._step()
    assert a.leadership.leading
    assert await redis.get(keys(namespace)[0]) == b"gw-a"
    await b.leadership._step()
    assert b.leadership._leader == "gw-a"
    assert a.upstream.closed == 0


async def test_a_follower_whose_relay_failed_waits_for_a_vanished_lease_once(
    redis: RedisClient, namespace: str, logged: list[str]
) -> None:
    """The relay's subscription failed (its lease ticks did not): the lease, gone, is left to
    its holder half a lease, and no longer, however long the relay keeps failing."""
    _, b = await leader_and_follower(redis, namespace)
    b.leadership._redis_fails(RedisConnectionError("Redis went away"))  # as _listen does
    await asyncio.sleep(LEASE_S)  # lapsed: its holder is dead
    gone_at = time.monotonic()
    await b.leadership._tick()
    assert not b.leadership.leading
    assert any(f"(Redis failed the relay); waiting {HOLD_S:.1f} s" in line for line in logged)
    while not b.leadership.leading:
        assert time.monotonic() - gone_at < LEASE_S, "the follower never took the lease"
        await asyncio.sleep(0.02)
        b.leadership._redis_fails(RedisConnectionError("Redis went away"))  # and again
        await b.leadership._tick()
    assert time.monotonic() - gone_at >= HOLD_S


# --- gaps, counted where they are announced ----------------------------------------------------


class Pipeline:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._messages: list[bytes] = []

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def publish(self, channel: str, message: bytes) -> None:
        self._messages.append(message)

    async def execute(self) -> None:
        if self._relay.failures:
            self._relay.failures -= 1
            raise RedisConnectionError("Redis went away")
        self._relay.published += [msgpack.unpackb(m, raw=False) for m in self._messages]


@dataclass
class Relay:
    """Redis as the relay's publisher sees it: `failures` publishes fail, then all work."""

    failures: int = 0
    published: list[list[Any]] = field(default_factory=list)

    def pipeline(self, **options: Any) -> Pipeline:
        return Pipeline(self)


async def publishing(leadership: FeedLeadership, relay: Relay, *messages: str) -> None:
    """Run the relay's publisher; each message is relayed once the one before was tried."""
    task = asyncio.create_task(leadership._publish())
    try:
        for n, kind in enumerate(messages):
            leadership._relay(kind, f"message {n}".encode())
            await asyncio.sleep(0.01)
        for _ in range(100):
            if relay.published:
                break
            await asyncio.sleep(0.005)
    finally:
        task.cancel()


async def test_a_leaders_relay_that_lost_messages_announces_one_gap_counted_once(
    logged: list[str],
) -> None:
    relay = Relay(failures=3)
    a = node(relay, "gw", "gw-a", "AAPL")
    started_ns = time.time_ns()
    # Three data frames lost (Redis away, each batch a failed publish), the fourth relayed.
    await publishing(a.leadership, relay, "d", "d", "d", "d")

    [(origin, kind, payload), frame] = relay.published
    assert (origin, kind) == ("gw-a", GAP)
    since_ns, until_ns = map(int, payload.decode().split(","))
    # From the first message lost, not from the last failure.
    assert started_ns <= since_ns < started_ns + 10_000_000 < until_ns
    assert frame == ["gw-a", "d", b"message 3"]
    assert a.metrics.gaps == 1
    assert a.hub.gaps == []  # its own clients had every frame
    [lost, announced] = [line for line in logged if "relay" in line]
    assert lost == "stream iex: relay to the other instances lost messages"
    assert announced.startswith("stream iex: relay to the other instances works again after ")
    assert announced.endswith(" s; their clients told of the gap")


async def test_a_follower_whose_wants_message_was_lost_announces_no_gap(
    logged: list[str],
) -> None:
    relay = Relay(failures=1)
    b = node(relay, "gw", "gw-b", "MSFT")
    await publishing(b.leadership, relay, WANTS, WANTS)  # the first lost
    assert relay.published == [["gw-b", WANTS, b"message 1"]]  # no GAP before it
    assert b.metrics.gaps == 0
    assert not [line for line in logged if "relay" in line or "gap" in line]


def test_a_full_relay_queue_loses_a_gap_only_for_what_the_followers_needed() -> None:
    b = node(Relay(), "gw", "gw-b", "MSFT")
    for _ in range(RELAY_QUEUE_FRAMES + 5):  # Redis too slow to take them: the queue fills
        b.leadership._relay(WANTS, b"")
    assert b.leadership._lost_since_ns is None  # the leader reads the wants at its next tick
    b.leadership._relay("d", b"frame")
    assert b.leadership._lost_since_ns is not None


@pytest.mark.parametrize("symbols", [("MSFT",), ()])
async def test_a_follower_that_did_not_hear_the_relay_counts_the_gap_it_announces(
    symbols: tuple[str, ...], logged: list[str]
) -> None:
    redis = DeafRedis(failures=3)
    b = node(redis, "gw", "gw-b", *symbols)
    listening = asyncio.create_task(b.leadership._listen())
    try:
        for _ in range(200):
            if b.hub.gaps:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        listening.cancel()

    assert redis.subscribes == 4
    [(since_ns, until_ns)] = b.hub.gaps  # one gap, from the first failure
    assert until_ns - since_ns >= 2 * 0.2 * 1e9  # two waits to subscribe again
    if symbols:
        assert b.metrics.gaps == 1
        [heard] = [line for line in logged if "hearing" in line]
        assert heard.startswith("stream iex: hearing the relay again after ")
    else:  # nobody here listened: nothing to count
        assert b.metrics.gaps == 0
        assert not [line for line in logged if "hearing" in line]
