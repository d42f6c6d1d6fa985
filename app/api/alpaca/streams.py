"""Alpaca's real-time streams on the Alpaca-compatible face, for alpaca-py unchanged:

    StockDataStream("gw_<id>", "<secret>", url_override=GATEWAY_WS + "/alpaca/v2/iex")
    OptionDataStream("gw_<id>", "<secret>", url_override=GATEWAY_WS + "/alpaca/v1beta1/indicative")
    TradingStream("gw_<id>", "<secret>", url_override=GATEWAY_WS + "/alpaca/stream")

The auth message's `key` and `secret` are a gateway key's two parts, as the REST face's APCA
headers are (access.py); market data needs `data:read`, trade updates `trading:read`. A key
holds at most STREAM_MAX_CLIENTS_PER_KEY stream connections on this instance (the anonymous,
with GATEWAY_ANONYMOUS_DATA, count as one key).
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from loguru import logger
from starlette.websockets import WebSocketDisconnect

from app.api.alpaca.errors import PREFIX
from app.keys import Scope
from app.state import GatewayState
from app.storage.store import StoreUnavailable
from app.streams.fanout import Frame, StreamClient
from app.streams.feeds import BY_NAME, FEED_NAMES, FeedFamily, FeedName
from app.streams.session import Admission, Authenticate, ClientSession, Verdict
from app.streams.wire import encoding_of

router = APIRouter(prefix=PREFIX, include_in_schema=False)
CLOSE_POLICY = 1008
CLOSE_UNAVAILABLE = 1011
ANONYMOUS = ""  # whose connections the anonymous ones count as (no key id is empty)


class _Socket:
    """Starlette's websocket as app/streams/session.py sees it: a client that has gone is
    None on receive, and sending to it is a no-op (the reader sees the end)."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive(self) -> bytes | str | None:
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            return None  # gone (or closed, and its close frame answered)
        if message["type"] == "websocket.disconnect":
            return None
        data: bytes | str | None = message.get("bytes")
        if data is None:
            data = message.get("text") or ""
        return data

    async def send(self, frame: Frame) -> None:
        try:
            if isinstance(frame, bytes):
                await self._ws.send_bytes(frame)
            else:
                await self._ws.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._ws.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


def _authenticator(gateway: GatewayState, scope: Scope) -> Authenticate:
    async def authenticate(key: str, secret: str) -> Verdict:
        if not key and scope is Scope.DATA_READ and gateway.settings.gateway_anonymous_data:
            return Verdict(Admission.ADMITTED, ANONYMOUS)
        # `gw_<id>` + `<secret>`, joined as the REST face joins its two headers; a whole key
        # sent as `key` with an empty secret is accepted too.
        presented = f"{key}_{secret}" if secret else key
        try:
            row = await gateway.keys.authenticate(presented)
        except StoreUnavailable:
            return Verdict(Admission.UNAVAILABLE)
        except Exception:
            # A bug in the key check: the client is told it is unavailable, never left hanging.
            logger.exception("stream authentication failed")
            return Verdict(Admission.UNAVAILABLE)
        if row is None or scope.value not in row.scopes:
            return Verdict(Admission.REFUSED)
        return Verdict(Admission.ADMITTED, row.id)

    return authenticate


def _handshake_credentials(websocket: WebSocket) -> tuple[str, str] | None:
    key = websocket.headers.get("apca-api-key-id")
    secret = websocket.headers.get("apca-api-secret-key")
    return None if key is None or secret is None else (key, secret)


async def _serve(websocket: WebSocket, name: str, family: FeedFamily) -> None:
    gateway: GatewayState = websocket.scope["state"]["gateway"]
    feed = BY_NAME[name] if name in FEED_NAMES else None
    if feed is None or feed.family is not family:
        await websocket.close(CLOSE_POLICY)  # before the upgrade: refused with HTTP 403
        return
    streams = gateway.streams
    if not streams.configured:
        await websocket.close(CLOSE_UNAVAILABLE)
        return
    feed_name: FeedName = feed.name
    hub = streams.feed(feed_name)
    encoding = encoding_of(websocket.headers.get("content-type"))
    await websocket.accept()
    settings = gateway.settings
    client = StreamClient(
        feed, encoding, streams.buffer_frames, buffer_bytes=settings.stream_client_buffer_bytes
    )
    scope = Scope.TRADING_READ if family is FeedFamily.TRADING else Scope.DATA_READ
    session = ClientSession(
        _Socket(websocket),
        hub,
        client,
        _authenticator(gateway, scope),
        auth_timeout_s=settings.stream_auth_timeout_s,
        max_symbols=settings.stream_max_symbols_per_client,
        max_message_bytes=settings.stream_max_message_bytes,
        key_slots=streams.key_slots,
        max_clients_per_key=settings.stream_max_clients_per_key,
    )
    await session.run(_handshake_credentials(websocket))


@router.websocket("/v2/{feed}")
async def stock_stream(websocket: WebSocket, feed: str) -> None:
    """Stock market data: iex, sip, delayed_sip, test."""
    await _serve(websocket, feed, FeedFamily.STOCKS)


@router.websocket("/v1beta1/{feed}")
async def option_stream(websocket: WebSocket, feed: str) -> None:
    """Option market data (MessagePack only, as at Alpaca): indicative, opra."""
    await _serve(websocket, feed, FeedFamily.OPTIONS)


@router.websocket("/stream")
async def trade_updates_stream(websocket: WebSocket) -> None:
    """The account's trade updates."""
    await _serve(websocket, "trade_updates", FeedFamily.TRADING)
