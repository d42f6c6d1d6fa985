"""Keys on the Alpaca-compatible face, as alpaca-py sends them.

alpaca-py sends a key pair in `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY`. A gateway key
`gw_<id>_<secret>` maps onto them as its public part and its secret part:

    TradingClient("gw_<id>", "<secret>", url_override=GATEWAY + "/alpaca")

so the key id is what logs and `keys list` show, and the secret travels in the secret header.
Both halves are checked together, exactly as `Authorization: Bearer gw_<id>_<secret>` is (same
scopes, quotas and revocation); `Authorization` and `X-API-Key` work here too. The gateway's own
Alpaca credentials are never read from, or sent back to, a client.
"""

from __future__ import annotations

from starlette.requests import Request

from app.api.auth import authorize
from app.keys import Scope
from app.storage.records import ApiKeyRow

_KEY_ID = b"apca-api-key-id"
_SECRET = b"apca-api-secret-key"


async def authorize_face(request: Request, scope: Scope) -> ApiKeyRow | None:
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    key_id = secret = None
    has_own = False
    for name, value in headers:
        if name == _KEY_ID:
            key_id = value
        elif name == _SECRET:
            secret = value
        elif name in (b"authorization", b"x-api-key"):
            has_own = True
    if key_id is not None and not has_own:
        # The pair is one key: joined as `Authorization: Bearer <id>_<secret>` for the same check
        # every route makes. A half pair joins to something malformed, hence a 401.
        joined = key_id + b"_" + (secret or b"")
        request.scope["headers"] = [*headers, (b"authorization", b"Bearer " + joined)]
    return await authorize(request, scope)
