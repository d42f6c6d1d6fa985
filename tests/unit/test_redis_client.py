"""The gateway's one Redis client as REDIS_URL and REDIS_CLUSTER describe it, built without
connecting: a single server or a cluster, TLS and an ACL user taken from the URL, and the same
fail-fast options everywhere (no retries, the short timeout)."""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import SSLConnection

from app.cache import fail_fast_redis

TIMEOUT_S = 0.1


async def test_a_plain_url_builds_a_single_server_client_that_never_retries() -> None:
    client = fail_fast_redis("redis://127.0.0.1:6379/3", timeout_s=TIMEOUT_S)
    assert isinstance(client, Redis)
    options = client.connection_pool.connection_kwargs
    assert (options["db"], options["socket_timeout"]) == (3, TIMEOUT_S)
    assert options["socket_connect_timeout"] == TIMEOUT_S
    assert options["retry"].get_retries() == 0
    await client.aclose()


async def test_rediss_with_a_user_turns_tls_on_with_the_query_strings_options() -> None:
    url = "rediss://gateway:s3cret@redis.internal:6380/0?ssl_ca_certs=/etc/ssl/ca.pem"
    client = fail_fast_redis(url, timeout_s=TIMEOUT_S)
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    options = pool.connection_kwargs
    assert (options["username"], options["password"]) == ("gateway", "s3cret")
    assert options["ssl_ca_certs"] == "/etc/ssl/ca.pem"
    assert "s3cret" not in repr(client)  # redis-py's own repr redacts it too
    await client.aclose()


async def test_cluster_mode_builds_a_cluster_client_with_the_same_fail_fast_options() -> None:
    client = fail_fast_redis("redis://10.0.0.5:6379", timeout_s=TIMEOUT_S, cluster=True)
    assert isinstance(client, RedisCluster)
    assert client.retry.get_retries() == 0
    assert client.connection_kwargs["socket_timeout"] == TIMEOUT_S
    assert client.connection_kwargs["socket_connect_timeout"] == TIMEOUT_S
    await client.aclose()
