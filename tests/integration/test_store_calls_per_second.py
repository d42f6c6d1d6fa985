"""What the store and Redis see from a busy gateway: an unknown key is looked up once per
KEY_MISS_TTL_S, not once per request, and `/ready` pings once per READY_SNAPSHOT_MAX_AGE_S, not
once per call. Counted by the servers themselves (a private PostgreSQL logging every statement,
a private Redis's command statistics), not by the gateway's own account."""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg
import pytest
from redis.asyncio import Redis

from app.keys import generate_key, key_prefix
from app.storage.records import ApiKeyRow, utc_now
from tests.conftest import GatewayFactory, PrivatePostgres, PrivateRedis
from tests.emulator.control import EmulatorControl

pytestmark = pytest.mark.integration
CLOCK = "/v1/clock"
KEY_LOOKUP = re.compile(r"FROM api_keys WHERE id = \$1")
PING = re.compile(r": SELECT 1$", re.MULTILINE)


async def log_every_statement(server: PrivatePostgres) -> None:
    connection = await asyncpg.connect(server.url)
    try:
        await connection.execute("ALTER SYSTEM SET log_statement = 'all'")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()
    await asyncio.sleep(0.2)  # the postmaster passes the reload on to every backend


def server_log(server: PrivatePostgres) -> str:
    return (server.data_dir / "server.log").read_text(errors="replace")


def count_since(pattern: re.Pattern[str], log: str, offset: int) -> int:
    return len(pattern.findall(log[offset:]))


async def test_an_unknown_key_is_looked_up_once_per_miss_ttl(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    gateway = await make_gateway(
        database_url=private_postgres.url, gateway_anonymous_data=False, key_miss_ttl_s=0.5
    )
    unknown, _, _ = generate_key()  # well-formed, never stored
    await log_every_statement(private_postgres)
    offset = len(server_log(private_postgres))

    started = time.monotonic()
    statuses = set()
    requests = 0
    while time.monotonic() - started < 1.2:
        answers = await asyncio.gather(
            *(gateway.get(CLOCK, headers={"X-API-Key": unknown}) for _ in range(20))
        )
        statuses |= {a.status_code for a in answers}
        requests += len(answers)
    await asyncio.sleep(0.2)  # let the server write its log

    assert statuses == {401}
    lookups = count_since(KEY_LOOKUP, server_log(private_postgres), offset)
    assert requests > 100
    # 1.2 s at a 0.5 s miss TTL: three lookups (concurrent checks join one), not one a request.
    assert 1 <= lookups <= 4, lookups


async def test_a_key_created_after_a_miss_works_within_the_miss_ttl(
    emulator: EmulatorControl, make_gateway: GatewayFactory, private_postgres: PrivatePostgres
) -> None:
    miss_ttl_s = 0.3
    gateway = await make_gateway(
        database_url=private_postgres.url, gateway_anonymous_data=False, key_miss_ttl_s=miss_ttl_s
    )
    key, key_id, key_hash = generate_key()
    assert (await gateway.get(CLOCK, headers={"X-API-Key": key})).status_code == 401

    # As `python -m app.cli keys create` does it, from another process: no notice is sent.
    await gateway.state.store.insert_api_key(
        ApiKeyRow(
            id=key_id,
            name="late",
            key_prefix=key_prefix(key_id),
            key_hash=key_hash,
            scopes=("data:read",),
            created_at=utc_now(),
        )
    )
    created = time.monotonic()
    status = 401
    while status == 401 and time.monotonic() - created < miss_ttl_s + 0.3:
        status = (await gateway.get(CLOCK, headers={"X-API-Key": key})).status_code
        await asyncio.sleep(0.02)

    assert status == 200


async def test_ready_pings_once_per_snapshot_age_however_often_it_is_asked(
    emulator: EmulatorControl,
    make_gateway: GatewayFactory,
    private_postgres: PrivatePostgres,
    private_redis: PrivateRedis,
) -> None:
    gateway = await make_gateway(
        database_url=private_postgres.url,
        redis_url=private_redis.url,
        ready_snapshot_max_age_s=1.0,
    )
    await log_every_statement(private_postgres)
    redis = Redis.from_url(private_redis.url)
    await redis.config_resetstat()
    offset = len(server_log(private_postgres))

    started = time.monotonic()
    answers = []
    for _ in range(10):
        answers += await asyncio.gather(*(gateway.get("/ready") for _ in range(10)))
    took_s = time.monotonic() - started
    await asyncio.sleep(0.2)

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["status"] for a in answers} == {"ready"}
    stats = await redis.info("commandstats")
    await redis.aclose()
    redis_pings = stats.get("cmdstat_ping", {}).get("calls", 0)
    store_pings = count_since(PING, server_log(private_postgres), offset)
    allowed = 1 + int(took_s)  # one per started second
    assert redis_pings <= allowed, (redis_pings, took_s)
    assert store_pings <= allowed, (store_pings, took_s)
