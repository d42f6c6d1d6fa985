"""Ordered writes of latest values (app/cache.py): an entry that says when its value was observed
never replaces a fresh entry observed later, in memory, in Redis (one script per key, so two
instances cannot interleave the check and the write) and when a shared flight lands. The case
it exists for: a REST answer in flight while Alpaca's stream pushed a newer quote.

The Redis tests use the real Redis through the `redis_url` fixture; each owns a namespace.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from app.cache import (
    ORDERED_PUT,
    CachedValue,
    MemoryCache,
    RedisCache,
    cache_key,
    decode,
    encode,
    fail_fast_redis,
    keeps_held,
)
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from app.reads.read_through import ReadThrough, Served
from app.reads.stocks import latest_time
from tests.support.namespaced_redis import namespace, raw_redis
from tests.unit.test_read_through import quote
from tests.unit.test_shared_flights import Instance, fleet, in_flight

__all__ = ["fleet", "namespace", "raw_redis"]  # the fixtures, imported for these tests

T_NS = 1_660_730_860_286_587_431  # quote()'s timestamp, 2022-08-17T10:07:40.286587431Z
LATER = time.time() + 3600  # fresh for the test's whole life
EARLIER = time.time() - 3600  # past its freshness


def entry(bid: float, observed_ns: int | None, fresh_until: float = LATER) -> CachedValue:
    return CachedValue(quote("AAPL", bid), 1.0, fresh_until, observed_ns=observed_ns)


# --- the rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("held", "new", "kept"),
    [
        (entry(1, T_NS + 1), entry(2, T_NS), True),  # fresh and observed later: stays
        (entry(1, T_NS), entry(2, T_NS), False),  # as new: replaced (its TTL renewed)
        (entry(1, T_NS), entry(2, T_NS + 1), False),
        (entry(1, T_NS + 1, EARLIER), entry(2, T_NS), False),  # past its freshness: gives way
        (entry(1, None), entry(2, T_NS), False),  # unordered (another version): replaced
        (entry(1, T_NS + 1), entry(2, None), False),  # an unordered write always lands
        (entry(1, 10**18), entry(2, 99 * 10**16), True),  # digits, not text: 19 beat 18
        (entry(1, 1), entry(2, 0), True),  # a failure holding no value orders first
        (None, entry(2, T_NS), False),
    ],
)
def test_keeps_held_only_a_fresh_entry_observed_later(
    held: CachedValue | None, new: CachedValue, kept: bool
) -> None:
    assert keeps_held(held, new, time.time()) is kept


def test_an_ordered_entry_round_trips_with_its_observation_first() -> None:
    ordered = entry(1, T_NS)
    raw = encode(ordered)

    assert raw.startswith(b'{"o":"%d","u":' % T_NS)
    assert decode(raw) == ordered
    assert decode(encode(entry(1, None))).observed_ns is None


# --- in memory --------------------------------------------------------------------------------
async def test_memory_cache_keeps_the_newer_entry_and_says_which() -> None:
    cache = MemoryCache()
    await cache.put_many([("a", entry(1, T_NS + 5), 60.0), ("b", entry(1, T_NS), 60.0)])

    kept = await cache.put_many([("a", entry(2, T_NS), 60.0), ("b", entry(2, T_NS + 5), 60.0)])

    assert kept == {"a"}
    assert cache.peek("a") == entry(1, T_NS + 5)
    assert cache.peek("b") == entry(2, T_NS + 5)


# --- in Redis ---------------------------------------------------------------------------------
@pytest.fixture
async def two_instances(redis_url: str, namespace: str) -> AsyncIterator[list[RedisCache]]:
    """Two caches on one Redis, each with its own near cache, as two gateway instances."""
    clients = [fail_fast_redis(redis_url, timeout_s=1.0) for _ in range(2)]
    yield [RedisCache(c, Metrics(), timeout_s=1.0, namespace=namespace) for c in clients]
    for client in clients:
        await client.aclose()


async def test_an_older_write_from_another_instance_leaves_redis_and_learns_the_newer(
    two_instances: list[RedisCache], raw_redis: Redis, namespace: str
) -> None:
    streamer, fetcher = two_instances
    await streamer.put_many([("q:AAPL", entry(231.25, T_NS + 1_000), 60.0)])

    kept = await fetcher.put_many([("q:AAPL", entry(230.5, T_NS), 60.0)])

    assert kept == {"q:AAPL"}
    # The fetcher's own near cache now holds the newer entry, not its own older one.
    assert fetcher.peek("q:AAPL") == entry(231.25, T_NS + 1_000)
    assert decode(await raw_redis.get(f"{namespace}:q:AAPL")) == entry(231.25, T_NS + 1_000)


async def test_a_newer_or_equal_write_replaces_and_a_stale_newer_entry_gives_way(
    two_instances: list[RedisCache], raw_redis: Redis, namespace: str
) -> None:
    first, second = two_instances
    await first.put_many(
        [("q:A", entry(1, T_NS), 60.0), ("q:B", entry(1, T_NS + 9, EARLIER), 60.0)]
    )

    kept = await second.put_many([("q:A", entry(2, T_NS), 60.0), ("q:B", entry(2, T_NS), 60.0)])

    assert kept == set()
    for key in ("q:A", "q:B"):
        stored = decode(await raw_redis.get(f"{namespace}:{key}"))
        assert stored.value["bid_price"] == 2


async def test_an_entry_of_an_older_version_without_an_observation_is_replaced(
    two_instances: list[RedisCache], raw_redis: Redis, namespace: str
) -> None:
    legacy = b'{"v":{"bid_price":1},"f":1.0,"u":%f}' % LATER
    await raw_redis.set(f"{namespace}:q:AAPL", legacy, px=60_000)

    assert await two_instances[0].put_many([("q:AAPL", entry(2, T_NS), 60.0)]) == set()

    assert decode(await raw_redis.get(f"{namespace}:q:AAPL")).observed_ns == T_NS


async def test_the_script_and_keeps_held_decide_alike(raw_redis: Redis, namespace: str) -> None:
    now = time.time()
    observations = [0, 1, 9, 10, T_NS - 1, T_NS, T_NS + 1, 10**19]
    for n, (held_ns, new_ns, fresh) in enumerate(
        itertools.product(observations, observations, (True, False))
    ):
        held = entry(1, held_ns, now + 60 if fresh else now - 1)
        new = entry(2, new_ns)
        key = f"{namespace}:rule:{n}"
        await raw_redis.set(key, encode(held), px=60_000)
        answer = await raw_redis.eval(ORDERED_PUT, 1, key, encode(new), 60_000, new_ns, now)  # type: ignore[misc]
        assert (answer != 1) is keeps_held(held, new, now), (held_ns, new_ns, fresh)


# --- a shared flight landing after the stream wrote ------------------------------------------
KEY = cache_key("quote", "iex", "AAPL")


async def read_latest(instance: Instance) -> Any:
    """AAPL's latest quote as LatestReads asks for it: ordered by its observation."""
    outcomes = await instance.reads.read(
        "quote", {"AAPL": KEY}, instance.alpaca.fetch, fresh_ttl_s=5.0, chunk_size=100,
        observed=latest_time, ordered=True,
    )  # fmt: skip
    return outcomes["AAPL"]


async def streamed_during_a_flight(
    fetcher: Instance, streamer: Instance, failure: GatewayError | None = None
) -> Any:
    """The fetcher asks Alpaca for AAPL; while the answer (or `failure`) is on its way, the
    stream's leader caches a quote observed 0.71 s later. The fetcher's outcome."""
    fetcher.alpaca.hold()
    flight = asyncio.create_task(read_latest(fetcher))
    await in_flight(fetcher.alpaca)
    streamed = CachedValue(
        quote("AAPL", 231.25) | {"timestamp": "2022-08-17T10:07:41Z"},
        time.time(), LATER, streamed=True, observed_ns=T_NS + 713_412_569,
    )  # fmt: skip
    assert await streamer.cache.put_many([(KEY, streamed, 60.0)]) == set()
    fetcher.alpaca.failure = failure
    fetcher.alpaca.gate.set()
    return await flight


async def test_a_rest_answer_landing_after_a_newer_streamed_quote_leaves_it_in_place(
    fleet: list[Instance],
) -> None:
    fetcher, streamer, reader = fleet

    answered = await streamed_during_a_flight(fetcher, streamer)

    # The fetcher's own caller gets Alpaca's answer: real, and its provenance says so.
    assert isinstance(answered, Served)
    assert (answered.value["bid_price"], answered.cache) == (172.62, "miss")
    # Everyone after reads the newer streamed quote: in Redis, and in the fetcher's near cache.
    later = await read_latest(reader)
    assert (later.value["bid_price"], later.cache) == (231.25, "stream")
    again = await read_latest(fetcher)
    assert (again.value["bid_price"], again.cache) == (231.25, "stream")
    assert len(fetcher.alpaca.calls) == 1
    assert reader.alpaca.calls == []


async def test_a_failure_landing_after_a_streamed_quote_does_not_hide_it(
    fleet: list[Instance],
) -> None:
    fetcher, streamer, reader = fleet

    failed = await streamed_during_a_flight(
        fetcher, streamer, GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Alpaca answered 500")
    )

    assert isinstance(failed, GatewayError)
    later = await read_latest(reader)
    assert (later.value["bid_price"], later.cache) == (231.25, "stream")


async def test_a_value_observed_at_gos_zero_time_orders_first_and_never_below_zero() -> None:
    cache = MemoryCache()
    reads = ReadThrough(cache, Metrics(), negative_ttl_s=1.0, stale_retention_s=60.0)

    async def zero_time(chunk: list[str]) -> dict[str, Any]:
        return {s: quote(s) | {"timestamp": "0001-01-01T00:00:00Z"} for s in chunk}

    await reads.read("quote", {"AAPL": KEY}, zero_time, fresh_ttl_s=5.0, chunk_size=100,
                     observed=latest_time, ordered=True)  # fmt: skip

    held = cache.peek(KEY)
    assert held is not None
    assert held.observed_ns == 0  # Lua compares digits: a minus sign would sort as one
