"""The per-key quota when Redis fails: a frozen Redis costs one timeout per retry interval, not
one per keyed request (the cache's fail-open pattern), and a pooled connection that a Redis
restart closed is replaced at once instead of sending the quota to its fallback."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.cache import fail_fast_redis
from app.quotas import MemoryQuotas, RedisQuotas
from tests.conftest import GatewayClient, GatewayFactory, PrivateRedis
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE
from tests.support.freeze import frozen_redis

pytestmark = pytest.mark.integration
QUOTE_PATH = "/v1/stocks/AAPL/quote"


async def redis_errors(gateway: GatewayClient) -> float:
    text = (await gateway.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_cache_backend_errors_total":
                return float(sample.value)
    raise AssertionError("gateway_cache_backend_errors_total is not exported")


async def test_a_frozen_redis_does_not_cost_every_keyed_request_a_timeout(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_redis: PrivateRedis
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(
        redis_url=private_redis.url,
        gateway_anonymous_data=False,
        cache_namespace=f"test-{uuid.uuid4().hex}",
        cache_quote_ttl_s=5.0,  # the near cache answers: what is measured is the key's quota
    )
    key = await gateway.issue_key("data:read")
    auth = {"X-API-Key": key}
    assert (await gateway.get(QUOTE_PATH, headers=auth)).status_code == 200
    errors_before = await redis_errors(gateway)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")

    timings = []
    try:
        with frozen_redis(private_redis):
            for _ in range(20):
                started = time.perf_counter()
                response = await gateway.get(QUOTE_PATH, headers=auth)
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
    finally:
        logger.remove(sink)

    # The first request meets the frozen Redis (REDIS_TIMEOUT_S, 0.1 s); the next ones use the
    # in-process quota until the retry interval has passed, without asking Redis.
    assert sum(timings) < 0.6, timings
    assert sorted(timings)[-2] < 0.05, timings
    assert await redis_errors(gateway) > errors_before
    quota_warnings = [w for w in warnings if "quota" in w]
    assert len(quota_warnings) == 1, warnings


async def test_quota_retries_redis_once_per_interval_while_it_is_frozen(
    private_redis: PrivateRedis,
) -> None:
    client = fail_fast_redis(private_redis.url, timeout_s=0.1)
    errors: list[None] = []
    quotas = RedisQuotas(
        client,
        60_000,
        1000,
        namespace=f"test-{uuid.uuid4().hex}",
        fallback=MemoryQuotas(60_000, 1000),
        retry_interval_s=0.5,
        on_error=lambda: errors.append(None),
    )
    try:
        assert await quotas.take("k") == 0.0
        with frozen_redis(private_redis):
            started = time.monotonic()
            while time.monotonic() - started < 1.2:
                assert await quotas.take("k") == 0.0  # the fallback has tokens: never an error
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()

    # 1.2 s at a 0.5 s retry interval: Redis was asked (and timed out) three times.
    assert 2 <= len(errors) <= 3, len(errors)


async def test_a_connection_closed_by_a_redis_restart_is_replaced_not_reported_down(
    private_redis: PrivateRedis,
) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    client = fail_fast_redis(private_redis.url, timeout_s=0.1)
    errors: list[None] = []
    quotas = RedisQuotas(
        client,
        60,
        10,
        namespace=namespace,
        fallback=MemoryQuotas(60, 10),
        on_error=lambda: errors.append(None),
    )
    try:
        assert await quotas.take("k") == 0.0  # a pooled connection now exists
        private_redis.stop()
        private_redis.start()  # same port, empty: the pooled connection is dead

        assert await quotas.take("k") == 0.0
    finally:
        await client.aclose()

    assert errors == []
    check = Redis.from_url(private_redis.url)
    try:
        assert await check.exists(f"{namespace}:quota:k") == 1  # Redis's bucket, not the fallback
    finally:
        await check.aclose()
