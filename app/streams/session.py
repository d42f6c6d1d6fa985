"""One client's stream connection, speaking Alpaca's protocol (what alpaca-py's
StockDataStream, OptionDataStream and TradingStream expect), whatever server carries it.

Market data: `[{"T":"success","msg":"connected"}]`, then `{"action":"auth","key","secret"}`
within the auth timeout (or the APCA headers on the handshake), then `subscribe` and
`unsubscribe`, each answered with the client's whole `subscription`. Trade updates:
`authenticate` answered `authorization`, `listen` answered `listening`. Errors are Alpaca's
codes and words.

Limits: a message longer than the client may send (PRE_AUTH_MAX_MESSAGE_BYTES until it has
authenticated, `max_message_bytes` after) is never decoded: the connection is closed (1009). A
key holds at most `max_clients_per_key` connections on this instance; one more is refused at
auth (Alpaca's 406, or `unauthorized` on trade updates) and stays open to try again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from loguru import logger

from app.streams.fanout import FeedHub, Frame, KeySlots, StreamClient, framed
from app.streams.feeds import FeedFamily
from app.streams.subscriptions import (
    Refusal,
    applied,
    requested,
    subscription_message,
    symbol_count,
)
from app.streams.wire import WireError, decode_client, longer_than

ERRORS = {
    400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
    403: "already authenticated", 404: "auth timeout", 406: "connection limit exceeded",
    410: "invalid subscribe action for this feed",
    412: "option messages are only available in MsgPack format",
    405: "symbol limit exceeded",
    413: "star subscription is not allowed for option quotes", 500: "internal error",
}  # fmt: skip
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_REASONS = {CLOSE_POLICY: "slow client", CLOSE_TOO_BIG: "message too big"}
# The longest message a client may send before it has authenticated: an auth message is a few
# hundred bytes; anyone who can connect must not make the gateway read (and decode) megabytes.
PRE_AUTH_MAX_MESSAGE_BYTES = 64 * 2**10
# After the last frame is queued: how long the client has to take it (and answer the close
# frame) before the connection is dropped. A slow client's socket may never drain.
CLOSE_GRACE_S = 5.0
TRADE_UPDATES = "trade_updates"


class Socket(Protocol):
    """The server's websocket, reduced to what the protocol needs."""

    async def receive(self) -> bytes | str | None:
        """The next frame; None once the client has gone."""

    async def send(self, frame: Frame) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Admission(Enum):
    ADMITTED = "admitted"
    REFUSED = "refused"  # unknown, revoked or malformed key, or a key without the scope
    UNAVAILABLE = "unavailable"  # the key store could not say


@dataclass(frozen=True, slots=True)
class Verdict:
    admission: Admission
    key: str = ""  # the admitted key's id, whose connections are counted (the anonymous: "")


Authenticate = Callable[[str, str], Awaitable[Verdict]]


def error(code: int, msg: str | None = None) -> list[dict[str, object]]:
    return [{"T": "error", "code": code, "msg": msg or ERRORS[code]}]


class ClientSession:
    """Serves one client connection until it ends; `run()` returns when it has."""

    def __init__(
        self,
        socket: Socket,
        hub: FeedHub,
        client: StreamClient,
        authenticate: Authenticate,
        *,
        auth_timeout_s: float,
        max_symbols: int = 10_000,
        max_message_bytes: int = 2**20,
        key_slots: KeySlots | None = None,
        max_clients_per_key: int = 100,
    ) -> None:
        """`key_slots`: the connections each key holds on this instance (shared by every
        session; None: this session's own)."""
        self._socket = socket
        self._max_symbols = max_symbols
        self._max_message_bytes = max_message_bytes
        self._hub = hub
        self._client = client
        self._authenticate = authenticate
        self._auth_timeout_s = auth_timeout_s
        self._authenticated = False
        self._key_slots = KeySlots() if key_slots is None else key_slots
        self._max_clients_per_key = max_clients_per_key
        self._holds: str | None = None  # the key whose slot this connection holds
        self._reader: asyncio.Task[None] | None = None
        self._trading = hub.feed.family is FeedFamily.TRADING

    async def run(self, handshake_credentials: tuple[str, str] | None = None) -> None:
        client = self._client
        writer = asyncio.create_task(self._write())
        reader = self._reader = asyncio.create_task(self._read(handshake_credentials))
        deadline = asyncio.create_task(self._dropped_after_grace())
        tasks = (reader, writer, deadline)
        try:
            # Until both sides are done, or the grace after the end has passed (a client that
            # stopped reading never takes the last frames nor answers the close frame).
            while not (reader.done() and writer.done()) and not deadline.done():
                pending = {task for task in tasks if not task.done()}
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if reader.done() and not client.ended.is_set():
                    client.finish()  # the client went away, or the protocol ended it
        finally:
            self._hub.leave(client)
            for task in tasks:
                task.cancel()
            try:
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            finally:
                self._release_slot()  # after the reader: nothing can take it again

    async def _dropped_after_grace(self) -> None:
        await self._client.ended.wait()
        await asyncio.sleep(CLOSE_GRACE_S)

    # --- writing -----------------------------------------------------------------------------

    async def _write(self) -> None:
        while True:
            frame, received_at_s = await self._client.next_frame()
            if frame is None:
                code = self._client.close_code
                if code is None:
                    code = CLOSE_POLICY if self._client.slow else CLOSE_NORMAL
                if self._reader is not None and not self._reader.done():
                    self._reader.cancel()  # only dropping what the client sends by now
                    await asyncio.wait((self._reader,))
                await self._socket.close(code, CLOSE_REASONS.get(code, ""))
                return
            await self._socket.send(frame)
            if received_at_s is not None:
                self._hub.written(received_at_s)

    def _answer(self, value: object) -> None:
        self._hub.answer(self._client, value)

    # --- reading -----------------------------------------------------------------------------

    async def _read(self, handshake_credentials: tuple[str, str] | None) -> None:
        if not await self._serve(handshake_credentials):
            return  # the client has gone
        # The gateway ended the connection (a protocol end, a slow client): what the client
        # still sends is read and dropped until the writer is about to close (the writer stops
        # this first: granian holds a close while a receive waits). A socket closed with unread
        # data is reset, and the client loses what was still on its way to it: the notice, the
        # close frame.
        while await self._socket.receive() is not None:
            pass

    async def _serve(self, handshake_credentials: tuple[str, str] | None) -> bool:
        """Serve the client's messages until the connection ends; False if the client went."""
        if not self._trading:
            if self._hub.feed.family is FeedFamily.OPTIONS and self._client.encoding == "json":
                self._client.finish(self._hub_frame(error(412)))
                return True
            self._answer([{"T": "success", "msg": "connected"}])
            if handshake_credentials is not None:
                await self._auth(*handshake_credentials)
        loop = asyncio.get_running_loop()
        auth_deadline = loop.time() + self._auth_timeout_s
        while not self._client.ended.is_set():
            timeout = None if self._authenticated else auth_deadline - loop.time()
            try:
                data = await asyncio.wait_for(self._socket.receive(), timeout)
            except TimeoutError:
                self._client.finish(self._timeout_frame())
                return True
            if data is None:
                return False
            limit = self._max_message_bytes if self._authenticated else PRE_AUTH_MAX_MESSAGE_BYTES
            if longer_than(data, limit):
                # Never decoded: what it holds cannot cost more than its receipt did.
                logger.bind(feed=self._hub.feed.name, client=self._client.id).info(
                    "stream {}: client {} sent a message over {} bytes; closed (1009)",
                    self._hub.feed.name,
                    self._client.id,
                    limit,
                )
                self._client.finish(code=CLOSE_TOO_BIG)
                return True
            try:
                message = decode_client(data)
            except WireError:
                message = None
            if self._trading:
                await self._on_trading(message)
            else:
                await self._on_market_data(message)
        return True

    def _hub_frame(self, value: object) -> Frame:
        return framed(self._hub.feed, self._client.encoding, value)

    def _timeout_frame(self) -> Frame:
        if self._trading:
            return self._hub_frame(_authorization("unauthorized", "authenticate"))
        return self._hub_frame(error(404))

    async def _auth(self, key: object, secret: object) -> None:
        if self._authenticated:
            self._answer(error(403))
            return
        if not isinstance(key, str) or not isinstance(secret, str):
            self._answer(error(402))
            return
        verdict = await self._authenticate(key, secret)
        admission = verdict.admission
        plan_refusal = self._hub.refused_at_auth()
        if admission is Admission.ADMITTED and plan_refusal is not None:
            # Alpaca refuses the account this feed (409 insufficient subscription): said at
            # auth, where Alpaca says it and alpaca-py stops on it, not as data that never comes.
            self._answer([dict(plan_refusal)])
        elif admission is Admission.ADMITTED and not self._hold_slot(verdict.key):
            self._answer(error(406))  # the connection stays open: it may try again
        elif admission is Admission.ADMITTED:
            self._authenticated = True
            self._hub.join(self._client)
            self._answer([{"T": "success", "msg": "authenticated"}])
        elif admission is Admission.UNAVAILABLE:
            self._answer(error(500, "the gateway's key store is unavailable; retry shortly"))
        else:
            self._answer(error(402))

    async def _on_market_data(self, message: object) -> None:
        action = message.get("action") if isinstance(message, dict) else None
        if not isinstance(message, dict) or action not in ("auth", "subscribe", "unsubscribe"):
            self._answer(error(400))
        elif action == "auth":
            await self._auth(message.get("key"), message.get("secret"))
        elif not self._authenticated:
            self._answer(error(401))
        else:
            self._subscribe(message, subscribe=action == "subscribe")

    def _subscribe(self, message: Mapping[str, object], *, subscribe: bool) -> None:
        feed = self._hub.feed
        asked = requested(feed, message, subscribe=subscribe)
        if isinstance(asked, Refusal):
            self._answer(error(asked.code))
            return
        client = self._client
        wanted = applied(client.subscriptions, asked, subscribe=subscribe)
        if subscribe and symbol_count(wanted) > self._max_symbols:
            # Alpaca's own refusal: one client cannot grow the feed's subscription (and every
            # instance's work) without bound. Its subscriptions stay as they were.
            self._answer(error(405))
            return
        client.subscribe(wanted)
        # Answered first: the subscription message precedes the data it brings.
        self._answer([subscription_message(feed, client.subscriptions)])
        self._hub.changed()

    async def _on_trading(self, message: object) -> None:
        if not isinstance(message, dict):
            return  # Alpaca documents no answer to a frame it cannot read
        action, data = message.get("action"), message.get("data")
        if action in ("authenticate", "auth"):
            if action == "auth":
                key, secret = message.get("key"), message.get("secret")
            else:
                fields = data if isinstance(data, dict) else {}
                key, secret = fields.get("key_id"), fields.get("secret_key")
            verdict = None
            if isinstance(key, str) and isinstance(secret, str):
                verdict = await self._authenticate(key, secret)
            # Past the key's connections: refused as any failed auth is (the connection stays).
            admitted = (
                verdict is not None
                and verdict.admission is Admission.ADMITTED
                and self._hold_slot(verdict.key)
            )
            if admitted:
                self._authenticated = True
            else:
                self._unauthorize()  # what the answer says, also to a client authorized before
            status = "authorized" if admitted else "unauthorized"
            self._answer(_authorization(status, "authenticate"))
        elif action == "listen":
            if not self._authenticated:
                self._answer(_authorization("unauthorized", "listen"))
                return
            streams = data.get("streams") if isinstance(data, dict) else None
            listening = isinstance(streams, list) and TRADE_UPDATES in streams
            self._client.listening = listening
            if listening:
                self._hub.join(self._client)
            else:
                self._hub.leave(self._client)
            self._answer(
                {"stream": "listening", "data": {"streams": [TRADE_UPDATES] if listening else []}}
            )
            self._hub.changed()

    def _unauthorize(self) -> None:
        """A failed auth ends any authorization before it: no more trade updates (until a
        good auth and a new `listen`), and the key's slot is given back."""
        self._authenticated = False
        self._release_slot()
        if self._client.listening:
            self._client.listening = False
            self._hub.leave(self._client)

    # --- the key's connection slots ----------------------------------------------------------

    def _hold_slot(self, key: str) -> bool:
        """Hold one of `key`'s connection slots (already held: kept); False if it has none
        left, and then whatever this connection held is kept as it was."""
        if self._holds == key:
            return True
        if not self._key_slots.claim(key, self._max_clients_per_key):
            return False
        self._release_slot()
        self._holds = key
        return True

    def _release_slot(self) -> None:
        if self._holds is not None:
            self._key_slots.release(self._holds)
            self._holds = None


def _authorization(status: str, action: str) -> dict[str, object]:
    return {"stream": "authorization", "data": {"status": status, "action": action}}
