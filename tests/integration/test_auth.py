"""API keys at the door: 401 without or with a bad key, 403 without the scope, 429 past the
quota, revocation honoured, and trading never open without a key."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.keys import parse_key
from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl

pytestmark = pytest.mark.integration
CLOCK = "/v1/clock"


async def test_data_needs_a_key_unless_anonymous_data_is_on(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    closed = await make_gateway(gateway_anonymous_data=False)
    open_data = await make_gateway(gateway_anonymous_data=True)

    refused = await closed.get(CLOCK)
    allowed = await open_data.get(CLOCK)

    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "UNAUTHENTICATED"
    assert allowed.status_code == 200


@pytest.mark.parametrize("path", ["/v1/account", "/v1/positions", "/v1/orders"])
async def test_trading_is_never_open_without_a_key_whatever_the_settings(
    emulator: EmulatorControl, make_gateway: GatewayFactory, path: str
) -> None:
    gateway = await make_gateway(gateway_anonymous_data=True)

    response = await gateway.get(path)

    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHENTICATED"
    assert await emulator.calls() == {}


@pytest.mark.parametrize(
    "header",
    [
        {"Authorization": "Bearer gw_0123456789ab_notarealsecretnotarealsecretnotarealsecr"},
        {"X-API-Key": "gw_0123456789ab_notarealsecretnotarealsecretnotarealsecr"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"X-API-Key": "not-even-a-key"},
        {"Authorization": "Bearer "},
    ],
)
async def test_unknown_or_malformed_keys_are_unauthenticated(
    emulator: EmulatorControl, make_gateway: GatewayFactory, header: dict[str, str]
) -> None:
    gateway = await make_gateway(gateway_anonymous_data=False)

    response = await gateway.get(CLOCK, headers=header)

    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHENTICATED"


async def test_both_header_forms_carry_a_key(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(gateway_anonymous_data=False)
    key = await gateway.issue_key("data:read")

    bearer = await gateway.get(CLOCK, headers={"Authorization": f"Bearer {key}"})
    x_api_key = await gateway.get(CLOCK, headers={"X-API-Key": key})

    assert bearer.status_code == 200
    assert x_api_key.status_code == 200


@pytest.mark.parametrize(
    ("scopes", "method", "path"),
    [
        (("data:read",), "GET", "/v1/account"),
        (("trading:read",), "GET", CLOCK),
        (("data:read", "trading:read"), "POST", "/v1/orders"),
    ],
)
async def test_a_key_without_the_scope_is_forbidden(
    emulator: EmulatorControl,
    make_gateway: GatewayFactory,
    scopes: tuple[str, ...],
    method: str,
    path: str,
) -> None:
    gateway = await make_gateway(gateway_anonymous_data=False)
    key = await gateway.issue_key(*scopes)

    response = await gateway.request(
        method, path, headers={"X-API-Key": key, "Idempotency-Key": "k-1"}, json={}
    )

    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"
    assert await emulator.calls() == {}


async def test_a_revoked_key_is_refused_within_the_key_cache_ttl(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(gateway_anonymous_data=False, key_cache_ttl_s=0.2)
    key = await gateway.issue_key("data:read")
    assert (await gateway.get(CLOCK, headers={"X-API-Key": key})).status_code == 200
    parsed = parse_key(key)
    assert parsed is not None

    # As `python -m app.cli keys revoke` does it: in the store, from another process.
    assert await gateway.state.store.revoke_api_key(parsed[0])
    deadline = time.monotonic() + 0.2 + 0.5
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = (await gateway.get(CLOCK, headers={"X-API-Key": key})).status_code
        await asyncio.sleep(0.02)

    assert status == 401


async def test_key_quota_answers_rate_limited_with_retry_after(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(
        gateway_anonymous_data=False, key_quota_per_minute=6, key_quota_burst=2
    )
    key = await gateway.issue_key("data:read")

    statuses = [(await gateway.get(CLOCK, headers={"X-API-Key": key})) for _ in range(3)]

    assert [r.status_code for r in statuses] == [200, 200, 429]
    limited = statuses[-1]
    assert limited.json()["code"] == "RATE_LIMITED"
    assert int(limited.headers["retry-after"]) >= 1


async def test_anonymous_callers_share_one_quota_and_keyed_clients_keep_theirs(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    # The key's own quota is the default (1200/min, burst 2 here): it is not the one spent.
    gateway = await make_gateway(
        gateway_anonymous_data=True, anonymous_quota_per_minute=6, key_quota_burst=2
    )
    key = await gateway.issue_key("data:read")

    anonymous = [(await gateway.get(CLOCK)).status_code for _ in range(3)]
    keyed = (await gateway.get(CLOCK, headers={"X-API-Key": key})).status_code
    limited = await gateway.get(CLOCK)

    # However many anonymous clients there are, together they spend one bucket.
    assert anonymous == [200, 200, 429]
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert "anonymous" in limited.json()["detail"]
    assert keyed == 200


async def test_key_quota_is_shared_through_redis(
    emulator: EmulatorControl, make_gateway: GatewayFactory, redis_url: str
) -> None:
    namespace = f"test-quota-{time.monotonic_ns()}"
    settings = {
        "gateway_anonymous_data": False,
        "key_quota_per_minute": 6,
        "key_quota_burst": 2,
        "redis_url": redis_url,
        "cache_namespace": namespace,
    }
    first = await make_gateway(**settings)
    key = await first.issue_key("data:read")
    second = await make_gateway(**settings, embedded_db_path=first.state.settings.embedded_db_path)

    a = await first.get(CLOCK, headers={"X-API-Key": key})
    b = await second.get(CLOCK, headers={"X-API-Key": key})
    c = await first.get(CLOCK, headers={"X-API-Key": key})

    assert [a.status_code, b.status_code, c.status_code] == [200, 200, 429]


async def test_stored_keys_are_hashes_only(
    emulator: EmulatorControl, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway()
    key = await gateway.issue_key("data:read")
    parsed = parse_key(key)
    assert parsed is not None

    rows = await gateway.state.store.list_api_keys()

    assert len(rows) == 1
    assert parsed[1] not in repr(rows)
    assert key not in repr(rows)
