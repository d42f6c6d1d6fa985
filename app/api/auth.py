"""API keys at the door: `Authorization: Bearer <key>` or `X-API-Key: <key>`, checked against
the route's scope. Trading routes always need a key; data routes unless the operator opted into
anonymous data (GATEWAY_ANONYMOUS_DATA=true)."""

from __future__ import annotations

from fastapi import Request

from app.api.params import gateway_of
from app.errors import ErrorCode, GatewayError
from app.keys import Scope
from app.quotas import ANONYMOUS, Quotas
from app.storage.records import ApiKeyRow
from app.storage.store import StoreUnavailable


def presented_key(request: Request) -> str | None:
    """The key the client sent; "" for an Authorization header that is not `Bearer <key>`
    (it wins over X-API-Key, so a malformed one is a 401 even beside a valid X-API-Key)."""
    api_key = None
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    return api_key


async def authorize(request: Request, scope: Scope) -> ApiKeyRow | None:
    """The caller's key row, or None for anonymous data access; raises 401/403/429/503."""
    gateway = gateway_of(request)
    presented = presented_key(request)
    if presented is None and scope is Scope.DATA_READ and gateway.settings.gateway_anonymous_data:
        # Anonymous callers share one quota, so together they weigh what one key may: they
        # cannot take the whole of Alpaca's budget from keyed clients.
        if gateway.anonymous_quotas is not None:
            await _spend_quota(
                gateway.anonymous_quotas, ANONYMOUS, "The anonymous callers' shared request quota"
            )
        return None
    if not presented:
        raise GatewayError(
            ErrorCode.UNAUTHENTICATED,
            "Send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        )
    try:
        row: ApiKeyRow | None = await gateway.keys.authenticate(presented)
    except StoreUnavailable as exc:
        raise GatewayError(
            ErrorCode.AUDIT_UNAVAILABLE,
            "The key store is unavailable and this key was not seen recently; retry shortly",
            retry_after_s=1,
        ) from exc
    if row is None:
        raise GatewayError(ErrorCode.UNAUTHENTICATED, "Unknown, malformed or revoked API key")
    if scope.value not in row.scopes:
        raise GatewayError(
            ErrorCode.FORBIDDEN,
            f"This key lacks the `{scope.value}` scope",
            extensions={"required_scope": scope.value},
        )
    await _spend_quota(gateway.quotas, row.id, "This key's request quota")
    return row


async def _spend_quota(quotas: Quotas, bucket: str, whose: str) -> None:
    wait_s = await quotas.take(bucket)
    if wait_s > 0:
        raise GatewayError(
            ErrorCode.RATE_LIMITED,
            f"{whose} is spent",
            retry_after_s=max(1, int(wait_s + 0.999)),
        )
