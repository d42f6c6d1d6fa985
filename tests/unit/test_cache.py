"""The value cache: keys that keep plans apart, faithful entries, and a Redis that fails open.

Redis here is a real server (REDIS_URL, default redis://127.0.0.1:6379/15); when it is missing
the `redis_url` fixture fails the test with a clear message. Each test owns a fresh namespace.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from app.cache import (
    CachedValue,
    MemoryCache,
    RedisCache,
    cache_key,
    decode,
    encode,
    fail_fast_redis,
)
from app.errors import ErrorCode, GatewayError
from app.metrics import Metrics
from tests.support.clock import FakeClock
from tests.support.namespaced_redis import namespace, raw_redis

__all__ = ["namespace", "raw_redis"]  # the fixtures, imported for this module's tests

# A quote as the parser produces it from Alpaca's latest-quotes example (sub-penny bid).
QUOTE_VALUE: dict[str, Any] = {
    "symbol": "AAPL",
    "bid_price": 0.0001,
    "bid_size": 2,
    "bid_exchange": "Q",
    "ask_price": 172.6201,
    "ask_size": 1,
    "ask_exchange": "Q",
    "conditions": ["R"],
    "tape": "C",
    "timestamp": "2022-08-17T10:07:40.286587431Z",
}
FETCHED_AT = 1_660_730_860.301122


def positive_entry(value: Any = None, fetched_at: float = FETCHED_AT) -> CachedValue:
    return CachedValue(QUOTE_VALUE if value is None else value, fetched_at, fetched_at + 1.0)


def rate_limited() -> GatewayError:
    return GatewayError(
        ErrorCode.UPSTREAM_RATE_LIMITED,
        "Alpaca's data rate budget is spent",
        upstream="data",
        symbol="AAPL",
        retry_after_s=7,
        extensions={"upstream_status": 429, "upstream_message": "too many requests"},
    )


def assert_same_error(decoded: GatewayError | None, original: GatewayError) -> None:
    assert decoded is not None
    assert decoded.code is original.code
    assert decoded.detail == original.detail
    assert decoded.upstream == original.upstream
    assert decoded.symbol == original.symbol
    assert decoded.retry_after_s == original.retry_after_s
    assert decoded.extensions == original.extensions


# --- keys -------------------------------------------------------------------------------------
def test_cache_key_names_kind_feed_symbol_and_params() -> None:
    key = cache_key("bars", "sip", "AAPL", "1Min", "2022-01-03", "raw")

    for part in ("bars", "sip", "AAPL", "1Min", "2022-01-03", "raw"):
        assert part in key


def test_different_feed_is_a_different_key() -> None:
    # An IEX quote must never answer a SIP request: the plans see different markets.
    assert cache_key("quote", "iex", "AAPL") != cache_key("quote", "sip", "AAPL")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("quote", "iex", "AAPL"), ("trade", "iex", "AAPL")),
        (("quote", "iex", "AAPL"), ("quote", "iex", "AAP")),
        (("quote", "iex", "BRK.B"), ("quote", "iex", "BRK-B")),
        (("bars", "iex", "AAPL", "1Min"), ("bars", "iex", "AAPL", "1Day")),
        (("bars", "iex", "AAPL", "1Min", "raw"), ("bars", "iex", "AAPL", "1Min", "split")),
        (("bars", "iex", "AAPL", "1Min", "10"), ("bars", "iex", "AAPL", "1Min", "100")),
    ],
    ids=["kind", "symbol", "share-class", "timeframe", "adjustment", "limit"],
)
def test_requests_that_differ_get_different_keys(
    one: tuple[str, ...], other: tuple[str, ...]
) -> None:
    assert cache_key(*one) != cache_key(*other)


def test_same_request_gets_the_same_key() -> None:
    assert cache_key("quote", "iex", "AAPL") == cache_key("quote", "iex", "AAPL")


# --- entries ----------------------------------------------------------------------------------
def test_positive_entry_round_trips_exactly() -> None:
    entry = positive_entry()

    decoded = decode(encode(entry))

    assert decoded == entry
    assert decoded.value["bid_price"] == 0.0001
    assert decoded.value["ask_price"] == 172.6201
    assert decoded.value["timestamp"] == "2022-08-17T10:07:40.286587431Z"
    assert decoded.error is None


def test_entry_decodes_from_text_as_well_as_bytes() -> None:
    entry = positive_entry()

    assert decode(encode(entry).decode()) == entry


def test_negative_entry_keeps_the_whole_typed_error() -> None:
    error = rate_limited()
    entry = CachedValue(None, 0.0, FETCHED_AT + 2.0, error)

    decoded = decode(encode(entry))

    assert decoded.value is None
    assert decoded.fresh_until == FETCHED_AT + 2.0
    assert_same_error(decoded.error, error)


def test_negative_entry_keeps_the_last_real_value_beside_the_failure() -> None:
    error = GatewayError(ErrorCode.UPSTREAM_UNAVAILABLE, "Alpaca data API failed (HTTP 503)")
    entry = CachedValue(QUOTE_VALUE, FETCHED_AT, FETCHED_AT + 5.0, error)

    decoded = decode(encode(entry))

    assert decoded.value == QUOTE_VALUE
    assert decoded.fetched_at == FETCHED_AT
    assert_same_error(decoded.error, error)


# --- in-process cache -------------------------------------------------------------------------
async def test_memory_entry_is_served_until_it_expires() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    entry = positive_entry()
    await cache.put_many([("k", entry, 10.0)])

    clock.advance(9.9)
    assert await cache.get_many(["k"]) == {"k": entry}

    clock.advance(0.2)
    assert await cache.get_many(["k"]) == {}


async def test_memory_cache_get_many_returns_only_present_keys() -> None:
    cache = MemoryCache(clock=FakeClock())
    await cache.put_many([("a", positive_entry(), 10.0), ("c", positive_entry(), 10.0)])

    found = await cache.get_many(["a", "b", "c", "d"])

    assert set(found) == {"a", "c"}


async def test_memory_cache_is_bounded_and_evicts_the_oldest() -> None:
    cache = MemoryCache(max_entries=3, clock=FakeClock())
    for key in ("a", "b", "c", "d"):
        await cache.put_many([(key, positive_entry(), 60.0)])

    found = await cache.get_many(["a", "b", "c", "d"])

    assert set(found) == {"b", "c", "d"}


async def test_memory_cache_is_bounded_by_bytes_whatever_the_entry_count() -> None:
    # One wide bar range is megabytes; a cap on entries alone let 200 of them take a gigabyte.
    wide = {"bars": [{"t": f"2026-01-01T00:{i % 60:02d}:00Z", "o": 1.5} for i in range(2000)]}
    size = len(encode(positive_entry(wide)))
    cache = MemoryCache(max_entries=1000, max_bytes=3 * size + size // 2, clock=FakeClock())
    for index in range(10):
        await cache.put_many([(f"bars:{index}", positive_entry(wide), 60.0)])

    entries, held = cache.sizes()

    assert entries == 3
    assert held <= 3 * size + size // 2
    assert set(await cache.get_many([f"bars:{i}" for i in range(10)])) == {
        "bars:7",
        "bars:8",
        "bars:9",
    }


async def test_memory_cache_rewrite_makes_an_entry_young_again() -> None:
    cache = MemoryCache(max_entries=2, clock=FakeClock())
    await cache.put_many([("a", positive_entry(), 60.0), ("b", positive_entry(), 60.0)])
    await cache.put_many([("a", positive_entry({"v": 2}), 60.0)])
    await cache.put_many([("c", positive_entry(), 60.0)])

    found = await cache.get_many(["a", "b", "c"])

    assert set(found) == {"a", "c"}
    assert found["a"].value == {"v": 2}


# --- Redis ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def redis_cache_at(url: str, metrics: Metrics, **options: Any) -> AsyncIterator[RedisCache]:
    """A RedisCache on a client of its own, closed afterwards (the gateway's lifespan does this)."""
    client = fail_fast_redis(url, timeout_s=options["timeout_s"])
    try:
        yield RedisCache(client, metrics, **options)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_cache(redis_url: str, namespace: str) -> AsyncIterator[RedisCache]:
    async with redis_cache_at(redis_url, Metrics(), timeout_s=1.0, namespace=namespace) as cache:
        yield cache


async def test_redis_round_trips_positive_and_negative_entries(redis_cache: RedisCache) -> None:
    error = rate_limited()
    negative = CachedValue(QUOTE_VALUE, FETCHED_AT, FETCHED_AT + 3.0, error)
    await redis_cache.put_many([("q:AAPL", positive_entry(), 30.0), ("q:TSLA", negative, 30.0)])

    found = await redis_cache.get_many(["q:AAPL", "q:TSLA", "q:MSFT"])

    assert set(found) == {"q:AAPL", "q:TSLA"}
    assert found["q:AAPL"] == positive_entry()
    assert found["q:TSLA"].value == QUOTE_VALUE
    assert found["q:TSLA"].fetched_at == FETCHED_AT
    assert_same_error(found["q:TSLA"].error, error)


async def test_redis_keys_live_in_the_namespace(
    redis_cache: RedisCache, raw_redis: Redis, namespace: str
) -> None:
    await redis_cache.put_many([("q:AAPL", positive_entry(), 30.0)])

    assert await raw_redis.exists(f"{namespace}:q:AAPL") == 1
    assert await raw_redis.exists("q:AAPL") == 0


async def test_redis_expiry_is_set_in_milliseconds(
    redis_cache: RedisCache, raw_redis: Redis, namespace: str
) -> None:
    await redis_cache.put_many(
        [("q:AAPL", positive_entry(), 1.5), ("q:TSLA", positive_entry(), 0.25)]
    )

    pttl_aapl = await raw_redis.pttl(f"{namespace}:q:AAPL")
    pttl_tsla = await raw_redis.pttl(f"{namespace}:q:TSLA")

    # Whole seconds would give <= 1000 ms (or no expiry at all for 0.25 s).
    assert 1000 < pttl_aapl <= 1500
    assert 0 < pttl_tsla <= 250


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b"\xff\xfe\x00binary", id="binary"),
        pytest.param(b'{"v": {"symbol": "AAPL"}}', id="missing-fields"),
        pytest.param(
            b'{"v":null,"f":0,"u":9e9,"e":{"code":"NO_SUCH_CODE","detail":"x"}}',
            id="unknown-error-code",
        ),
        pytest.param(b"[1, 2, 3]", id="json-array"),
        pytest.param(b"42", id="json-number"),
    ],
)
async def test_corrupt_redis_value_reads_as_a_miss(
    redis_cache: RedisCache, raw_redis: Redis, namespace: str, stored: bytes
) -> None:
    await redis_cache.put_many([("q:TSLA", positive_entry(), 30.0)])
    await raw_redis.set(f"{namespace}:q:AAPL", stored, px=30_000)

    found = await redis_cache.get_many(["q:AAPL", "q:TSLA"])

    assert set(found) == {"q:TSLA"}


@pytest.fixture
def closed_port_url() -> str:
    """A URL on which nothing listens: bind a port, then let it go."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def redis_samples(metrics: Metrics) -> tuple[float | None, float | None]:
    errors = metrics.registry.get_sample_value(
        "gateway_cache_backend_errors_total", {"backend": "redis"}
    )
    up = metrics.registry.get_sample_value("gateway_dependency_up", {"dependency": "redis"})
    return errors, up


async def test_unreachable_redis_fails_open_quickly_and_says_so(closed_port_url: str) -> None:
    metrics = Metrics()
    async with redis_cache_at(
        closed_port_url, metrics, timeout_s=0.25, retry_interval_s=0.0
    ) as cache:
        started = time.perf_counter()
        found = await cache.get_many(["q:AAPL"])
        stored = await cache.put_many([("q:AAPL", positive_entry(), 30.0)])
        elapsed_s = time.perf_counter() - started

        assert found == {}
        assert stored == set()  # nothing kept: the write failed open
        assert elapsed_s < 1.0
        errors, up = redis_samples(metrics)
        assert errors is not None
        assert errors >= 1
        assert up == 0
        assert cache.status() == "down"
        assert await cache.ping() is False


async def test_redis_outage_is_counted_once_per_failed_call(closed_port_url: str) -> None:
    metrics = Metrics()
    async with redis_cache_at(
        closed_port_url, metrics, timeout_s=0.25, retry_interval_s=0.0
    ) as cache:
        await cache.get_many(["q:AAPL"])
        await cache.get_many(["q:AAPL"])

        errors, _ = redis_samples(metrics)
        assert errors == 2


async def test_reachable_redis_is_reported_up_without_errors(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    metrics = Metrics()
    async with redis_cache_at(redis_url, metrics, timeout_s=1.0, namespace=namespace) as cache:
        assert await cache.ping() is True
        await cache.put_many([("q:AAPL", positive_entry(), 5.0)])

        _, up = redis_samples(metrics)
        assert up == 1
        assert cache.status() == "up"
        assert await raw_redis.exists(f"{namespace}:q:AAPL") == 1


async def test_redis_error_counter_is_exported_at_zero_before_any_error(redis_url: str) -> None:
    # A counter child born at 1 on the first failure hides that failure from increase()/rate().
    metrics = Metrics()
    async with redis_cache_at(redis_url, metrics, timeout_s=1.0):
        errors, _ = redis_samples(metrics)

        assert errors == 0


# --- the near cache in front of Redis ------------------------------------------------------------
async def test_near_cache_answers_a_fresh_entry_without_asking_redis_and_never_past_it(
    redis_url: str, namespace: str, raw_redis: Redis
) -> None:
    wall = FakeClock(FETCHED_AT)
    async with redis_cache_at(
        redis_url, Metrics(), timeout_s=1.0, namespace=namespace, wall_clock=wall
    ) as cache:
        entry = positive_entry()  # fresh for 1 s after FETCHED_AT
        await cache.put_many([("q:AAPL", entry, 30.0)])
        # Another instance refreshes the entry in Redis.
        newer = positive_entry({**QUOTE_VALUE, "ask_price": 172.63}, FETCHED_AT + 0.5)
        await raw_redis.set(f"{namespace}:q:AAPL", encode(newer))

        wall.advance(0.9)
        near = await cache.get_many(["q:AAPL"])
        wall.advance(0.2)  # past the near entry's own freshness
        after = await cache.get_many(["q:AAPL"])

    assert near["q:AAPL"] is entry  # from memory: its own value and fetch time
    assert after["q:AAPL"] == newer  # Redis asked again, never the old entry past its time
    assert after["q:AAPL"].fetched_at == FETCHED_AT + 0.5


async def test_near_cache_keeps_this_instances_fetches_while_redis_is_away(
    closed_port_url: str,
) -> None:
    wall = FakeClock(FETCHED_AT)
    async with redis_cache_at(
        closed_port_url, Metrics(), timeout_s=0.25, retry_interval_s=0.0, wall_clock=wall
    ) as cache:
        await cache.put_many([("q:AAPL", positive_entry(), 30.0)])
        found = await cache.get_many(["q:AAPL"])
        wall.advance(1.5)
        expired = await cache.get_many(["q:AAPL"])

    assert found["q:AAPL"].value == QUOTE_VALUE
    assert expired == {}


async def test_near_cache_is_bounded(redis_url: str, namespace: str) -> None:
    wall = FakeClock(FETCHED_AT)
    async with redis_cache_at(
        redis_url,
        Metrics(),
        timeout_s=1.0,
        namespace=namespace,
        near_max_entries=3,
        wall_clock=wall,
    ) as cache:
        await cache.put_many([(f"q:S{i}", positive_entry(), 30.0) for i in range(10)])

        assert cache.sizes()[0] == 3
        assert cache.peek("q:S9") is not None
        assert cache.peek("q:S0") is None
