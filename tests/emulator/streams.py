"""Alpaca's real-time streams: market data (stocks, options) and trade updates.

Paths (:mod:`stream_paths`): ``/v2/{iex,sip,delayed_sip,test}``, ``/v1beta1/{indicative,opra}``
and ``/stream``, on the emulator's host. What a client sees, as at Alpaca:

- **Market data.** ``[{"T":"success","msg":"connected"}]`` on connect; then auth by message
  (``{"action":"auth","key","secret"}``) or by the APCA headers on the handshake, answered
  ``[{"T":"success","msg":"authenticated"}]`` or an error; subscribe/unsubscribe answered with
  the whole ``subscription``. Errors are ``[{"T":"error","code":N,"msg":...}]``: 400 invalid
  syntax, 401 not authenticated, 402 auth failed, 403 already authenticated, 404 auth timeout
  (then closed), 405 symbol limit exceeded, 406 connection limit exceeded, 409 insufficient
  subscription, 410 invalid subscribe action for this feed, 412 (option feeds in JSON, then
  closed), 413 star subscription is not allowed for option quotes. After an auth error the
  connection stays open (Alpaca's Go client retries auth on it after a 406).
- **One connection per feed.** A feed's slot is taken at auth; a second auth while it is taken
  gets 406. A clean close (a close frame either way) frees it at once; an unclean one (the TCP
  connection ends without a close frame) keeps it taken ``stream_slot_release_ms`` (config,
  Alpaca about 90 s). Trade updates have no such limit.
- **Trade updates** (``/stream``): ``{"action":"authenticate","data":{"key_id","secret_key"}}``
  (or ``{"action":"auth","key","secret"}``) answered ``{"stream":"authorization","data":
  {"status":"authorized"|"unauthorized","action":"authenticate"}}``; ``listen`` answered
  ``{"stream":"listening","data":{"streams":[...]}}``; then one ``trade_updates`` object per
  frame for every order change (:mod:`trade_events`). Binary frames, as paper trading sends.
- **Framing** (:mod:`stream_codec`): MessagePack when the handshake says
  ``Content-Type: application/msgpack``, else JSON.

Data comes only from tests: ``POST /_emulator/stream/{feed}/messages`` or a scenario's
``streams`` (:mod:`stream_control_api`). Faults of the ``stream_*`` kinds and the HTTP ones
(``rate_limited`` is a 429 at the upgrade) come from the fault registry, so the control API and
a scenario's timeline both drive them.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler

from .fault_answers import run_fault
from .faults import Fault, FaultKind
from .responses import ApiFamily
from .scenario import Scenario
from .state import EmulatorState, RequestRecord
from .stream_codec import MSGPACK_CONTENT_TYPE, Encoding, decode, encode, encoding_of
from .stream_paths import BY_PATH, ENDPOINTS, StreamEndpoint, StreamFamily
from .stream_shapes import (
    CHANNELS,
    ERROR_TYPE,
    FOLLOW_TRADES,
    MESSAGES,
    STOCK_ONLY_CHANNELS,
    WILDCARD,
    valid_stream_symbol,
)
from .timestamps import format_ns
from .trade_events import OrderWatch
from .wire_json import Json, JsonObject

log = logging.getLogger(__name__)

KEY_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"
TRADE_UPDATES = "trade_updates"
SENT_LOG_SIZE = 10_000
CLOSE_NORMAL = 1000
CLOSE_SERVICE_RESTART = 1012  # a reset of the emulator ends every stream
ERRORS = {
    400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
    403: "already authenticated", 404: "auth timeout", 405: "symbol limit exceeded",
    406: "connection limit exceeded", 409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    412: "option messages are only available in MsgPack format",
    413: "star subscription is not allowed for option quotes", 500: "internal error",
}  # fmt: skip
# HTTP faults that make sense at a websocket upgrade; the others pass stream connections by.
UPGRADE_KINDS = frozenset({
    FaultKind.LATENCY, FaultKind.HANG, FaultKind.RESET, FaultKind.STATUS_500,
    FaultKind.STATUS_502_HTML, FaultKind.STATUS_503, FaultKind.STATUS_504,
    FaultKind.RATE_LIMITED,
})  # fmt: skip
AUTH_KINDS = {
    FaultKind.STREAM_AUTH_FAILED: 402,
    FaultKind.STREAM_CONNECTION_LIMIT: 406,
    FaultKind.STREAM_INSUFFICIENT_SUBSCRIPTION: 409,
}
STRIKE_KINDS = frozenset({FaultKind.STREAM_MUTE, FaultKind.STREAM_MUTE_NO_PONG,
                          FaultKind.STREAM_DISCONNECT, FaultKind.STREAM_RESET})  # fmt: skip


def _fault_kinds(endpoint: StreamEndpoint) -> frozenset[FaultKind]:
    """The faults a connection to ``endpoint`` takes at its upgrade (trade updates have no
    406/409)."""
    if endpoint.family is StreamFamily.TRADING:
        return UPGRADE_KINDS | STRIKE_KINDS | {FaultKind.STREAM_AUTH_FAILED}
    return UPGRADE_KINDS | STRIKE_KINDS | frozenset(AUTH_KINDS)


def error_message(code: int) -> JsonObject:
    """Alpaca's error message for ``code``."""
    return {"T": ERROR_TYPE, "code": code, "msg": ERRORS[code]}


# --- what a connection's writer does, in order ------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    value: Json
    data_messages: int  # market data or trade updates it carries (0 for control messages)


@dataclass(frozen=True)
class _Close:
    code: int


@dataclass(frozen=True)
class _Strike:
    fault: Fault


_Outbound = _Frame | _Close | _Strike


@dataclass(frozen=True)
class SentFrame:
    """One frame written to a client, as ``GET /_emulator/stream/sent`` shows it."""

    connection: str
    feed: str
    sent_ns: int
    frame: Json

    def to_wire(self) -> JsonObject:
        """As JSON."""
        return {"connection": self.connection, "feed": self.feed,
                "sent_at": format_ns(self.sent_ns), "sent_ns": self.sent_ns,
                "frame": self.frame}  # fmt: skip


class StreamConnection:
    """One client connection: its protocol state, subscriptions and fault state."""

    def __init__(
        self,
        hub: StreamHub,
        conn_id: str,
        endpoint: StreamEndpoint,
        request: web.Request,
        ws: web.WebSocketResponse,
        fault: Fault | None,
    ) -> None:
        self.hub = hub
        self.id = conn_id
        self.endpoint = endpoint
        self.request = request
        self.ws = ws
        self.encoding: Encoding = encoding_of(request.headers.get("Content-Type"))
        self.connected_ns = time.time_ns()
        self.authenticated = False
        self.holds_slot = False
        self.subscriptions: dict[str, list[str]] = {
            channel: [] for channel in CHANNELS.get(endpoint.family, ())
        }
        self.listening: list[str] = []
        self.muted = False  # sends nothing more
        self.deaf = False  # and answers no ping, no frame, no close frame
        self.clean: bool | None = None  # how it ended: with a close frame or not
        self.frames_sent = 0
        self.messages_sent = 0
        self.withheld = 0
        self._auth_fault = fault if fault is not None and fault.kind in AUTH_KINDS else None
        self._strike = fault if fault is not None and fault.kind in STRIKE_KINDS else None
        self._queue: asyncio.Queue[_Outbound] = asyncio.Queue()
        self._server_closing = False
        self._timers: list[asyncio.TimerHandle] = []

    # --- life ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends (either side, cleanly or not)."""
        writer = asyncio.create_task(self._write(), name=f"stream-writer-{self.id}")
        try:
            self._greet()
            await self._read()
            if self._server_closing:
                await writer  # the close handshake it started decides how it ended
        finally:
            writer.cancel()
            for timer in self._timers:
                timer.cancel()
            if self.clean is None:
                self.clean = False

    def _greet(self) -> None:
        if self.endpoint.family is StreamFamily.TRADING:
            return  # the trade stream says nothing until it is spoken to
        if self.endpoint.family is StreamFamily.OPTIONS and self.encoding == "json":
            self._send([error_message(412)])
            self.close(CLOSE_NORMAL)
            return
        self._send([{"T": "success", "msg": "connected"}])
        timeout_s = self.hub.state.config.stream_auth_timeout_ms / 1000
        self._later(timeout_s, self._auth_timed_out)
        key, secret = self.request.headers.get(KEY_HEADER), self.request.headers.get(SECRET_HEADER)
        if key is not None and secret is not None:
            self._auth(key, secret)

    def _later(self, delay_s: float, callback: Callable[..., None], *args: object) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay_s, callback, *args))

    def _auth_timed_out(self) -> None:
        if not self.authenticated and self.clean is None and not self._server_closing:
            self._send([error_message(404)])
            self.close(CLOSE_NORMAL)

    async def _read(self) -> None:
        ws = self.ws
        while True:
            message = await ws.receive()
            kind = message.type
            if kind in (WSMsgType.TEXT, WSMsgType.BINARY):
                if not self.deaf:
                    self._on_frame(message.data)
            elif kind is WSMsgType.PING:
                if not self.deaf:
                    await ws.pong(message.data)
            elif kind is WSMsgType.PONG:
                continue
            elif kind is WSMsgType.CLOSE:
                if self.deaf:  # never answered: the client gives up and drops the connection
                    await self._until_transport_gone()
                    self.clean = False
                else:
                    self.clean = True
                    await ws.close()  # the answering close frame
                return
            else:  # CLOSING (our close started: the writer finishes it), CLOSED, ERROR
                if not self._server_closing and self.clean is None:
                    self.clean = False
                return

    async def _until_transport_gone(self) -> None:
        # aiohttp has no event for a transport lost while nobody reads: poll until the client
        # drops it (websockets does after its close timeout, 10 s by default).
        transport = self.request.transport
        while transport is not None and not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def _write(self) -> None:
        binary = self.encoding == "msgpack" or self.endpoint.family is StreamFamily.TRADING
        timestamps = self.endpoint.family is not StreamFamily.TRADING
        while True:
            item = await self._queue.get()
            if isinstance(item, _Strike):
                self._schedule_strike(item.fault)
                continue
            if isinstance(item, _Close):
                await self._close_now(item.code)
                return
            if self.muted:
                self.withheld += 1
                continue
            payload = encode(item.value, self.encoding, timestamps=timestamps)
            try:
                if binary:
                    await self.ws.send_bytes(
                        payload.encode() if isinstance(payload, str) else payload
                    )
                else:
                    await self.ws.send_str(
                        payload if isinstance(payload, str) else payload.decode()
                    )
            except (ConnectionError, RuntimeError):
                return  # the connection is gone; the reader sees it end
            self.frames_sent += 1
            self.messages_sent += item.data_messages
            self.hub.record_sent(self, item.value)

    async def _close_now(self, code: int) -> None:
        self._server_closing = True
        await self.ws.close(code=code)
        if self.clean is None:
            # aiohttp reports 1006 when the client never answered the close frame.
            self.clean = self.ws.close_code not in (None, 1006)

    def close(self, code: int) -> None:
        """Close with a close frame once what is queued before it has been written."""
        self._queue.put_nowait(_Close(code))

    def drop(self, *, reset: bool) -> None:
        """End the TCP connection now, without a close frame: a FIN, or an RST."""
        self.clean = False
        transport = self.request.transport
        if transport is None:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()

    # --- faults ------------------------------------------------------------------------------

    def strike(self, fault: Fault) -> None:
        """Apply a mute/disconnect fault to this open connection (after its delay_ms)."""
        self._schedule_strike(fault)

    def _schedule_strike(self, fault: Fault) -> None:
        if fault.delay_ms:
            self._later(fault.delay_ms / 1000, self._apply_strike, fault.kind)
        else:
            self._apply_strike(fault.kind)

    def _apply_strike(self, kind: FaultKind) -> None:
        if kind is FaultKind.STREAM_MUTE:
            self.muted = True
        elif kind is FaultKind.STREAM_MUTE_NO_PONG:
            self.muted = self.deaf = True
        else:
            self.drop(reset=kind is FaultKind.STREAM_RESET)

    def _streaming(self) -> None:
        """The first subscription (or listen) is answered: a pending strike goes in after it."""
        if self._strike is not None:
            self._queue.put_nowait(_Strike(self._strike))
            self._strike = None

    # --- the protocol ------------------------------------------------------------------------

    def _send(self, value: Json, data_messages: int = 0) -> None:
        self._queue.put_nowait(_Frame(value, data_messages))

    def _on_frame(self, data: str | bytes) -> None:
        try:
            value = decode(data)
        except ValueError:
            value = None
        if self.endpoint.family is StreamFamily.TRADING:
            self._on_trading_message(value)
        else:
            self._on_data_message(value)

    def _on_data_message(self, value: object) -> None:
        action = value.get("action") if isinstance(value, dict) else None
        if not isinstance(value, dict) or action not in ("auth", "subscribe", "unsubscribe"):
            self._send([error_message(400)])
        elif action == "auth":
            self._auth(value.get("key"), value.get("secret"))
        elif not self.authenticated:
            self._send([error_message(401)])
        else:
            self._change(action == "subscribe", value)

    def _credentials_ok(self, key: object, secret: object) -> bool:
        expected = self.hub.state.credentials
        if not isinstance(key, str) or not isinstance(secret, str):
            return False
        key_ok = hmac.compare_digest(key.encode(), expected.key_id.encode())
        return hmac.compare_digest(secret.encode(), expected.secret_key.encode()) and key_ok

    def _auth(self, key: object, secret: object) -> None:
        if self.authenticated:
            self._send([error_message(403)])
            return
        forced, self._auth_fault = self._auth_fault, None
        if forced is not None:
            self._send([error_message(AUTH_KINDS[forced.kind])])
        elif not self._credentials_ok(key, secret):
            self._send([error_message(402)])
        elif self.endpoint.paid and self.hub.state.config.plan == "free":
            self._send([error_message(409)])
        elif not self.hub.take_slot(self):
            self._send([error_message(406)])
        else:
            self.authenticated = True
            self._send([{"T": "success", "msg": "authenticated"}])

    def _change(self, subscribe: bool, message: dict[object, object]) -> None:
        family = self.endpoint.family
        asked: dict[str, list[str]] = {}
        for channel, symbols in message.items():
            if channel == "action" or symbols is None:
                continue
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                self._send([error_message(400)])
                return
            if not symbols or (channel in FOLLOW_TRADES and family is StreamFamily.STOCKS):
                continue  # corrections and cancel/errors follow trades
            if family is StreamFamily.OPTIONS and channel in STOCK_ONLY_CHANNELS:
                self._send([error_message(410)])
                return
            if isinstance(channel, str) and channel in self.subscriptions:
                asked[channel] = [str(symbol) for symbol in symbols]
        for channel, symbols in asked.items():
            for symbol in symbols:
                if symbol == WILDCARD:
                    if family is StreamFamily.OPTIONS and channel == "quotes" and subscribe:
                        self._send([error_message(413)])
                        return
                elif not valid_stream_symbol(family, symbol):
                    self._send([error_message(400)])
                    return
        changed = {channel: list(current) for channel, current in self.subscriptions.items()}
        for channel, symbols in asked.items():
            current = changed[channel]
            for symbol in symbols:
                if subscribe and symbol not in current:
                    current.append(symbol)
                elif not subscribe and symbol in current:
                    current.remove(symbol)
        limit = self.hub.state.config.stream_symbol_limit
        if subscribe and limit is not None and _symbol_count(changed) > limit:
            self._send([error_message(405)])
            return
        self.subscriptions = changed
        self._send([self.subscription_message()])
        self._streaming()

    def subscription_message(self) -> JsonObject:
        """Alpaca's ``subscription`` message: every channel, corrections and cancel/errors
        following trades."""
        message: JsonObject = {"T": "subscription"}
        for channel in CHANNELS[self.endpoint.family]:
            source = "trades" if channel in FOLLOW_TRADES else channel
            message[channel] = list(self.subscriptions[source])
        return message

    def _on_trading_message(self, value: object) -> None:
        if not isinstance(value, dict):
            return  # Alpaca documents no answer to a message it cannot read
        action, data = value.get("action"), value.get("data")
        if action == "authenticate":
            data = data if isinstance(data, dict) else {}
            self._trading_auth(data.get("key_id"), data.get("secret_key"))
        elif action == "auth":
            self._trading_auth(value.get("key"), value.get("secret"))
        elif action == "listen":
            self._listen(data)

    def _trading_auth(self, key: object, secret: object) -> None:
        forced, self._auth_fault = self._auth_fault, None
        self.authenticated = forced is None and self._credentials_ok(key, secret)
        status = "authorized" if self.authenticated else "unauthorized"
        self._send({"stream": "authorization", "data": {"status": status,
                                                        "action": "authenticate"}})  # fmt: skip

    def _listen(self, data: object) -> None:
        if not self.authenticated:
            self._send({"stream": "authorization", "data": {"status": "unauthorized",
                                                            "action": "listen"}})  # fmt: skip
            return
        streams = data.get("streams") if isinstance(data, dict) else None
        wanted = streams if isinstance(streams, list) else []
        self.listening = [TRADE_UPDATES] if TRADE_UPDATES in wanted else []
        listening: list[Json] = list(self.listening)
        self._send({"stream": "listening", "data": {"streams": listening}})
        self._streaming()

    # --- delivery -----------------------------------------------------------------------------

    def wants(self, message: JsonObject) -> bool:
        """Whether this client is subscribed to the channel and symbol of a data message."""
        known = MESSAGES[self.endpoint.family].get(str(message.get("T")))
        if known is None:
            return False
        channel = "trades" if known[1] in FOLLOW_TRADES else known[1]
        subscribed = self.subscriptions.get(channel, [])
        return message.get("S") in subscribed or WILDCARD in subscribed

    def deliver(self, messages: list[JsonObject], per_frame: int | None) -> bool:
        """Queue the messages this client wants, in order; errors go to every client, alone
        in their frame (control messages always are). Whether anything was queued."""
        batch: list[Json] = []
        queued = False

        def flush() -> None:
            nonlocal batch, queued
            if batch:
                self._send(batch, data_messages=len(batch))
                batch, queued = [], True

        for message in messages:
            if message.get("T") == ERROR_TYPE:
                flush()
                self._send([message])
                queued = True
            elif self.wants(message):
                batch.append(message)
                if per_frame is not None and len(batch) >= per_frame:
                    flush()
        flush()
        return queued

    def deliver_trade_update(self, event: JsonObject) -> bool:
        """Queue one trade update if this client listens to trade_updates."""
        if not self.authenticated or TRADE_UPDATES not in self.listening:
            return False
        self._send({"stream": TRADE_UPDATES, "data": event}, data_messages=1)
        return True

    def to_wire(self) -> JsonObject:
        """The connection as ``GET /_emulator/stream`` shows it."""
        wire: JsonObject = {
            "id": self.id, "feed": self.endpoint.feed, "path": self.endpoint.path,
            "encoding": self.encoding, "authenticated": self.authenticated,
            "connected_at": format_ns(self.connected_ns), "frames_sent": self.frames_sent,
            "messages_sent": self.messages_sent, "withheld": self.withheld,
            "muted": self.muted, "deaf": self.deaf,
        }  # fmt: skip
        if self.endpoint.family is StreamFamily.TRADING:
            wire["streams"] = list(self.listening)
        else:
            subscription = self.subscription_message()
            del subscription["T"]
            wire["subscriptions"] = subscription
        return wire


def _symbol_count(subscriptions: dict[str, list[str]]) -> int:
    """Symbols held on the trades and quotes channels (Alpaca's limit counts those)."""
    return len(set(subscriptions.get("trades", [])) | set(subscriptions.get("quotes", [])))


@dataclass
class _Slot:
    holder: StreamConnection | None
    free_at: float = 0.0  # monotonic time a lingering slot frees (holder None)


class StreamHub:
    """Every open stream connection, the feeds' connection slots, counters and the sent log."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.connections: dict[str, StreamConnection] = {}
        self.attempts: Counter[str] = Counter()
        self.sent: deque[SentFrame] = deque(maxlen=SENT_LOG_SIZE)
        self._slots: dict[str, _Slot] = {}
        self._ids = itertools.count(1)
        self._timers: list[asyncio.TimerHandle] = []
        self._orders = OrderWatch()
        state.faults.on_add(self._fault_added)
        state.on_clean.append(self.reset)
        state.on_load.append(self.schedule)

    # --- connections --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A websocket upgrade on one of the stream paths."""
        endpoint = BY_PATH[request.path]
        self.attempts[endpoint.path] += 1
        has_auth = KEY_HEADER in request.headers and SECRET_HEADER in request.headers
        record = RequestRecord(request.method, request.path, dict(request.query), has_auth)
        self.state.record_call(record)
        fault = self.state.faults.take(request.path, _fault_kinds(endpoint))
        if fault is not None and fault.kind in UPGRADE_KINDS:
            trading = endpoint.family is StreamFamily.TRADING
            family = ApiFamily.TRADING if trading else ApiFamily.MARKET_DATA
            answer = await run_fault(request, fault, None, family)
            if answer is not None:
                return answer
            fault = None  # latency, or a released hang: go on
        ws = web.WebSocketResponse(autoping=False, autoclose=False)
        await ws.prepare(request)
        conn = StreamConnection(self, f"conn-{next(self._ids)}", endpoint, request, ws, fault)
        self.connections[conn.id] = conn
        try:
            await conn.run()
        finally:
            self._ended(conn)
        return ws

    def take_slot(self, conn: StreamConnection) -> bool:
        """Give ``conn`` its feed's one slot; False if a connection (or one that ended
        uncleanly not long ago) holds it."""
        slot = self._slots.get(conn.endpoint.path)
        if slot is not None and (slot.holder is not None or slot.free_at > time.monotonic()):
            return False
        self._slots[conn.endpoint.path] = _Slot(conn)
        conn.holds_slot = True
        return True

    def _ended(self, conn: StreamConnection) -> None:
        if self.connections.get(conn.id) is conn:
            del self.connections[conn.id]
        slot = self._slots.get(conn.endpoint.path)
        if slot is None or slot.holder is not conn:
            return  # never held it, or a reset freed it already
        release_s = self.state.config.stream_slot_release_ms / 1000
        if conn.clean or release_s <= 0:
            del self._slots[conn.endpoint.path]
        else:
            self._slots[conn.endpoint.path] = _Slot(None, time.monotonic() + release_s)

    def free_slots(self) -> None:
        """Free the slots kept after unclean disconnects (open connections keep theirs)."""
        for path, slot in list(self._slots.items()):
            if slot.holder is None:
                del self._slots[path]

    def slots_to_wire(self) -> JsonObject:
        """Each taken slot: its connection, or how long it stays taken after an unclean end."""
        now = time.monotonic()
        wire: JsonObject = {}
        for path, slot in self._slots.items():
            if slot.holder is not None:
                wire[path] = {"connection": slot.holder.id, "free_in_ms": None}
            elif slot.free_at > now:
                wire[path] = {"connection": None, "free_in_ms": int((slot.free_at - now) * 1000)}
        return wire

    def to_wire(self) -> JsonObject:
        """What ``GET /_emulator/stream`` answers."""
        attempts: JsonObject = dict(self.attempts)
        connections: list[Json] = [conn.to_wire() for conn in self.connections.values()]
        return {"attempts": attempts, "connections": connections, "slots": self.slots_to_wire()}

    def reset(self) -> None:
        """The emulator is reset: every stream ends (close frame 1012), every slot is free,
        counters, the sent log and the scheduled pushes are cleared."""
        for conn in self.connections.values():
            conn.close(CLOSE_SERVICE_RESTART)
        self.connections.clear()
        self._slots.clear()
        self.attempts.clear()
        self.sent.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def shutdown(self) -> None:
        """Close every connection (the server is stopping)."""
        for conn in list(self.connections.values()):
            conn.close(CLOSE_SERVICE_RESTART)

    # --- faults ------------------------------------------------------------------------------

    def _fault_added(self, fault: Fault) -> None:
        """A mute/disconnect fault strikes the open connections it matches, while it has uses."""
        if fault.kind not in STRIKE_KINDS:
            return
        for conn in list(self.connections.values()):
            if fnmatchcase(conn.endpoint.path, fault.path):
                if not self.state.faults.spend(fault):
                    return
                conn.strike(fault)

    # --- data ---------------------------------------------------------------------------------

    def publish(
        self, endpoint: StreamEndpoint, messages: list[JsonObject], per_frame: int | None = None
    ) -> list[str]:
        """Deliver checked messages to the authenticated clients of ``endpoint``; the ids of
        the connections that got any."""
        reached = []
        for conn in list(self.connections.values()):
            if (
                conn.endpoint is endpoint
                and conn.authenticated
                and conn.deliver(messages, per_frame)
            ):
                reached.append(conn.id)
        return reached

    def check_orders(self) -> None:
        """Send a trade update for every order change since the last check."""
        events = self._orders.events(self.state.orders, self.state.config, self.state.positions)
        for event in events:
            for conn in list(self.connections.values()):
                if conn.endpoint.family is StreamFamily.TRADING:
                    conn.deliver_trade_update(event)

    def record_sent(self, conn: StreamConnection, frame: Json) -> None:
        """Log one written frame (the last SENT_LOG_SIZE are kept)."""
        self.sent.append(SentFrame(conn.id, conn.endpoint.feed, time.time_ns(), frame))

    def schedule(self, scenario: Scenario) -> None:
        """Start a loaded scenario's timed pushes (seconds after the load)."""
        loop = asyncio.get_running_loop()
        for push in scenario.streams:
            endpoint = next(e for e in ENDPOINTS if e.feed == push.feed)
            if push.at_s == 0:
                self.publish(endpoint, push.messages)
            else:
                self._timers.append(
                    loop.call_later(float(push.at_s), self.publish, endpoint, push.messages)
                )


STREAMS_KEY = web.AppKey("emulator_streams", StreamHub)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """The route handler of every stream path."""
    return await request.app[STREAMS_KEY].handle(request)


@web.middleware
async def order_events(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After any request that may change an order (not a GET), send its trade updates."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return await handler(request)
    try:
        return await handler(request)
    finally:
        request.app[STREAMS_KEY].check_orders()


def add_stream_routes(app: web.Application, state: EmulatorState) -> StreamHub:
    """Serve every stream path and keep the hub in ``app[STREAMS_KEY]``."""
    hub = StreamHub(state)
    app[STREAMS_KEY] = hub
    for endpoint in ENDPOINTS:
        app.router.add_get(endpoint.path, stream_handler)

    async def close_streams(_: web.Application) -> None:
        await hub.shutdown()

    app.on_shutdown.append(close_streams)
    return hub


__all__ = ["MSGPACK_CONTENT_TYPE", "STREAMS_KEY", "StreamHub", "add_stream_routes"]
