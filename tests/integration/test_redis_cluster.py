"""The gateway on a Redis Cluster, as a team runs it: REDIS_CLUSTER=true and REDIS_URL naming
one node of a real three-master cluster (tests/support/redis_cluster.py, started for each test,
never the shared Redis). Cached quotes, batches whose symbols hash to every node, per-key quotas,
shared flights, the shared budget and the shared breaker all work across instances, and not one
Redis call fails (no CROSSSLOT, no MOVED left unanswered).
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import RedisCluster

from tests.conftest import GatewayClient, GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.samples import QUOTE
from tests.support.redis_cluster import RedisClusterServers, redis_cluster

pytestmark = [
    pytest.mark.integration,
    # redis-py's cluster client replaces its node objects when the slot map changes (a master
    # killed, a refresh at start) and leaves the connections the old ones had in use for the
    # garbage collector. They are redis-py's sockets to this test's own servers, reclaimed by
    # the collection below, inside the test, where this mark applies; elsewhere an unclosed
    # socket still fails the suite.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _reclaim_replaced_cluster_connections() -> Iterator[None]:
    yield
    gc.collect()


__all__ = ["redis_cluster"]  # the fixture, imported for this module's tests

QUOTES_PATH = "/v2/stocks/quotes/latest"
# Enough symbols that their keys land on all three masters (checked below, not assumed).
BATCH = ["AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "META", "GOOG", "NFLX", "AMD", "SPY", "F"]
DEADLINE_S = 15.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S:g} s: {what}")
        await asyncio.sleep(0.05)


async def metric(gateway: GatewayClient, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none is exported)."""
    text = (await gateway.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def opener(gateway: GatewayClient) -> str:
    """The instance `gateway` says opened its data breaker."""
    text = (await gateway.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name, sample.labels.get("upstream")) == (
                "gateway_circuit_breaker_opened_by_info",
                "data",
            ) and sample.value == 1:
                return sample.labels["opened_by"]
    return ""


async def redis_errors(gateway: GatewayClient) -> dict[str, float]:
    """Every count of a failed Redis call, by metric: all must stay 0 on a healthy cluster."""
    return {
        "cache": await metric(gateway, "gateway_cache_backend_errors_total"),
        "breaker": await metric(gateway, "gateway_circuit_breaker_redis_errors_total"),
        "unshared flights": await metric(
            gateway, "gateway_shared_flight_keys_total", result="unshared"
        ),
        "budget fallback": await metric(gateway, "gateway_upstream_budget_fallback"),
    }


def cluster_settings(cluster: RedisClusterServers, **overrides: Any) -> dict[str, Any]:
    return {
        "redis_url": cluster.url,
        "redis_cluster": True,
        "cache_namespace": f"test-{uuid.uuid4().hex[:12]}",
        "gateway_anonymous_data": False,  # every request spends its key's quota, in Redis
        "cache_quote_ttl_s": 60.0,
        # A real budget (the script runs on every call either way), far above what the test uses.
        "alpaca_data_budget_per_minute": 6000,
        "alpaca_data_budget_burst": 500,
        **overrides,
    }


async def keyed(gateway: GatewayClient) -> dict[str, str]:
    return {"X-API-Key": await gateway.issue_key("data:read")}


async def test_quotes_batches_quotas_and_flights_work_on_a_cluster_without_a_redis_error(
    redis_cluster: RedisClusterServers, emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    # The batch's value keys really are spread over every master: one MGET would be CROSSSLOT.
    probe = RedisCluster.from_url(redis_cluster.url)
    try:
        await probe.initialize()
        owners = {str(probe.get_node_from_key(f"gw:v1:quote:iex:{s}")) for s in BATCH}
    finally:
        await probe.aclose()
    assert len(owners) == 3, owners

    await emulator.set_state(quotes={s: {**QUOTE} for s in BATCH})
    settings = cluster_settings(redis_cluster, cache_namespace="gw")
    one = await make_gateway(**settings)
    two = await make_gateway(**settings)
    one_key, two_key = await keyed(one), await keyed(two)

    # A cold quote asked of both instances at once: one upstream call between them.
    answers = await asyncio.gather(
        *(g.get("/v1/stocks/AAPL/quote", headers=k) for g, k in [(one, one_key), (two, two_key)])
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert {a.json()["bid_price"] for a in answers} == {QUOTE["bp"]}
    assert await emulator.calls_to(QUOTES_PATH) == 1

    # A batch through one instance stores every symbol, slot by slot...
    symbols = {"symbols": ",".join(BATCH)}
    batch = await one.get("/v1/stocks/quotes", params=symbols, headers=one_key)
    assert batch.status_code == 200, batch.text
    assert batch.json()["errors"] == {}
    calls_after_batch = await emulator.calls_to(QUOTES_PATH)

    # ...and an instance that never saw these symbols reads them all back from the cluster
    # (its near cache is empty: each key comes from the node that owns its slot).
    late = await make_gateway(**settings)
    late_key = await keyed(late)
    again = await late.get("/v1/stocks/quotes", params=symbols, headers=late_key)
    assert again.status_code == 200, again.text
    quotes = again.json()["quotes"]
    assert {s: q["provenance"]["cache"] for s, q in quotes.items()} == dict.fromkeys(BATCH, "hit")
    assert {q["bid_price"] for q in quotes.values()} == {QUOTE["bp"]}
    assert await emulator.calls_to(QUOTES_PATH) == calls_after_batch

    assert await metric(late, "gateway_cache_requests_total", result="hit") >= len(BATCH)
    for gateway in (one, two, late):
        assert await redis_errors(gateway) == dict.fromkeys(
            ["cache", "breaker", "unshared flights", "budget fallback"], 0.0
        )
        # The shared budget answered from the cluster: its level is the fleet's, not a fallback.
        assert await metric(gateway, "gateway_upstream_budget_per_minute", lane="data") == 6000
    assert await metric(one, "gateway_shared_flight_keys_total", result="led") >= 1


async def test_a_key_quota_is_shared_through_the_cluster(
    redis_cluster: RedisClusterServers, emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_quote("AAPL", QUOTE)
    gateway = await make_gateway(
        **cluster_settings(redis_cluster, key_quota_per_minute=1, key_quota_burst=3)
    )
    auth = await keyed(gateway)
    statuses = [
        (await gateway.get("/v1/stocks/AAPL/quote", headers=auth)).status_code for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    assert await redis_errors(gateway) == dict.fromkeys(
        ["cache", "breaker", "unshared flights", "budget fallback"], 0.0
    )


async def test_an_opening_reaches_the_other_instance_through_the_cluster(
    redis_cluster: RedisClusterServers, emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    settings = cluster_settings(
        redis_cluster,
        breaker_minimum_calls=4,
        breaker_window_size=4,
        # No periodic read within the test: only the notice published on the cluster tells
        # the other instance.
        breaker_sync_interval_s=60.0,
    )
    one = await make_gateway(**settings, gateway_instance="gw-one")
    two = await make_gateway(**settings, gateway_instance="gw-two")
    one_key, two_key = await keyed(one), await keyed(two)
    for gateway in (one, two):
        assert await metric(gateway, "gateway_circuit_breaker_state_source", source="shared") == 4
    await emulator.add_fault(QUOTES_PATH, "status_500")

    for symbol in BATCH[:4]:
        answer = await one.get(f"/v1/stocks/{symbol}/quote", headers=one_key)
        assert answer.status_code >= 500
    failing_calls = await emulator.calls_to(QUOTES_PATH)

    async def two_is_open() -> bool:
        state = await metric(two, "gateway_circuit_breaker_state", upstream="data")
        return state == 2

    await eventually(two_is_open, "the other instance adopts the opening")
    refused = await two.get("/v1/stocks/TSLA/quote", headers=two_key)
    assert refused.status_code == 503
    assert refused.json()["code"] == "CIRCUIT_OPEN"
    assert await emulator.calls_to(QUOTES_PATH) == failing_calls  # two spent no call of its own
    opened_by = await opener(two)
    assert opened_by.startswith("gw-one:"), opened_by  # two's metrics name who tripped it
    for gateway in (one, two):
        errors = await redis_errors(gateway)
        assert (errors["cache"], errors["breaker"]) == (0.0, 0.0), errors


async def test_losing_cluster_nodes_costs_the_cache_never_an_answer(
    redis_cluster: RedisClusterServers, emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    await emulator.set_state(quotes={s: {**QUOTE} for s in BATCH})
    gateway = await make_gateway(**cluster_settings(redis_cluster))
    auth = await keyed(gateway)
    warm = await gateway.get("/v1/stocks/AAPL/quote", headers=auth)
    assert warm.status_code == 200, warm.text

    # One master of three gone (no replica takes over): a third of the slots are unserved.
    redis_cluster.kill(1)
    batch = await gateway.get(
        "/v1/stocks/quotes", params={"symbols": ",".join(BATCH[1:6])}, headers=auth
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["errors"] == {}
    assert {q["bid_price"] for q in batch.json()["quotes"].values()} == {QUOTE["bp"]}

    # The whole cluster gone: the client reaches no node at all, and still nothing fails.
    redis_cluster.stop()
    for symbol in BATCH[6:]:
        answer = await gateway.get(f"/v1/stocks/{symbol}/quote", headers=auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["bid_price"] == QUOTE["bp"]
    ready = (await gateway.get("/ready")).json()
    assert ready["status"] == "degraded"
    assert await metric(gateway, "gateway_cache_backend_errors_total") > 0
