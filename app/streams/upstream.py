"""The one connection to one of Alpaca's feeds: opened when a client first wants the feed,
kept subscribed to what clients want, re-opened as Alpaca asks after it is lost.

Alpaca allows one connection per feed and account, keeps a dropped one's slot for about 90 s
(406 until then), rejects storms at the upgrade (429) and replays nothing after a reconnect.
So: backoff with jitter (app/streams/backoff.py), a socket silent while subscribed counts as
dead (alpaca-py#740's mute socket), the connection is always closed with a close frame (which
frees the slot at once), and after a reconnect the listener is told a gap happened.

This is the stream side's transport: the only module of app/streams that knows aiohttp (its
session, websocket and errors), as app/alpaca/transport.py is for REST.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import aiohttp
import msgpack  # type: ignore[import-untyped]  # ships no type information
from loguru import logger

from app.alpaca.transport import Credentials
from app.background import cancel_and_wait
from app.metrics import Metrics, StreamAttempt
from app.streams.backoff import BackoffPolicy, Setback, reconnect_delay_s, retry_after_s
from app.streams.feeds import Feed, FeedFamily, upstream_url
from app.streams.subscriptions import UpstreamHoldings, Wanted, holds_any
from app.streams.wire import MSGPACK_CONTENT_TYPE, Element, WireError, decode_trading, split_frame

CONTROL_TYPES = frozenset({"success", "subscription", "error"})
# Alpaca's answers to a subscribe it refused as a whole (invalid syntax, symbol limit exceeded,
# insufficient subscription, invalid action for the feed, star on option quotes).
SUBSCRIBE_REFUSALS = frozenset({400, 405, 409, 410, 413})
CONNECTION_LIMIT = 406
CLOSE_TIMEOUT_S = 1.0  # a mute peer never answers our close frame; do not wait for it long


class UpstreamState(Enum):
    """The connection's state; the value is what `gateway_stream_upstream_state` shows."""

    IDLE = 0
    CONNECTING = 1
    STREAMING = 2
    BACKING_OFF = 3


@dataclass(frozen=True, slots=True)
class UpstreamReport:
    """A feed's upstream connection as `/ready` shows it."""

    state: UpstreamState  # this instance's own connection (idle on a follower: it relays)
    reconnect_in_s: float  # backing off: time left before the next attempt; else 0
    leader: str | None = None  # with Redis: the instance holding the connection, if known


class FeedListener(Protocol):
    """Who receives what the feed sends (the fan-out of app/streams/fanout.py)."""

    def on_data(self, elements: list[Element], frame: bytes, received_at_s: float) -> None:
        """Market-data messages of one frame (`frame` is all of it when they are all data),
        received at `received_at_s` (time.monotonic())."""

    def on_trade_update(self, frame: bytes | str, received_at_s: float) -> None:
        """One trade_updates frame, as received (at `received_at_s`, time.monotonic())."""

    def on_error(
        self, element: Element, refused: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """An error Alpaca sent on the feed that concerns its clients: all of them, or with
        `refused` (a subscribe Alpaca refused) those that want one of its symbols."""

    def on_gap(self, since_ns: int, until_ns: int) -> None:
        """The connection was lost at `since_ns` and streams again at `until_ns`."""

    def on_connected(self) -> None:
        """Alpaca accepted the connection (what it refused at auth before no longer holds)."""


# Sees every frame's market-data messages after the listener (app/streams/refresh.py); cheap.
Tap = Callable[[Feed, Sequence[Element]], None]


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str
    credentials: Credentials
    policy: BackoffPolicy
    silence_s: float  # 0: never treat silence as death
    handshake_timeout_s: float
    idle_close_s: float = 0.0  # nobody subscribed this long: close (0: never)
    # Whether Alpaca's clock says the market is open (None: not known yet). Silence is only
    # suspect while it is open, or while nobody knows.
    market_open: Callable[[], bool | None] = lambda: None


@dataclass(slots=True)
class _Ended:
    setback: Setback
    got_data: bool = False
    retry_after_s: float | None = None
    streamed_until_ns: int | None = None  # set when the connection had been streaming


@dataclass(slots=True)
class _Connection:
    ws: aiohttp.ClientWebSocketResponse
    holdings: UpstreamHoldings = field(default_factory=UpstreamHoldings)


class UpstreamFeed:
    """One feed's connection; `want()` sets what it must be subscribed to and opens it."""

    def __init__(
        self,
        feed: Feed,
        config: UpstreamConfig,
        session: aiohttp.ClientSession,
        listener: FeedListener,
        metrics: Metrics,
        *,
        tap: Tap | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.feed = feed
        self._tap = tap
        self._config = config
        self._session = session
        self._listener = listener
        self._metrics = metrics
        self._uniform = uniform
        self._wanted: Wanted = {}
        self._connection: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        # One sync at a time: two syncs' sends interleaved (aiohttp waits for the socket to
        # drain past 64 KiB) would leave Alpaca holding what the gateway believes dropped.
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_due = False
        self._idle_task: asyncio.Task[None] | None = None
        self._gap_since_ns: int | None = None
        self._reconnect_at_s = 0.0  # time.monotonic() of the next attempt while backing off
        self.state = UpstreamState.IDLE
        self.attempts = 0

    # --- what the fan-out calls --------------------------------------------------------------

    def want(self, wanted: Wanted) -> None:
        """Hold exactly `wanted` upstream (trade updates: any non-empty value means listen)."""
        self._wanted = wanted
        wants_any = holds_any(wanted)
        if wants_any and self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        if self._task is None:
            if not wants_any:
                return  # opened lazily, by the first client who wants something
            self._task = asyncio.create_task(self._run(), name=f"stream-upstream-{self.feed.name}")
            return
        if not wants_any and self._idle_task is None and self._config.idle_close_s > 0:
            self._idle_task = asyncio.create_task(self._close_when_idle())
        self._sync_soon()

    def expect_gap(self, since_ns: int) -> None:
        """Messages since `since_ns` were lost elsewhere (the leader that held the feed died):
        the next connection that streams announces a gap from then."""
        if self._gap_since_ns is None:
            self._gap_since_ns = since_ns

    def report(self) -> UpstreamReport:
        if self.state is not UpstreamState.BACKING_OFF:
            return UpstreamReport(self.state, 0.0)
        return UpstreamReport(self.state, max(0.0, self._reconnect_at_s - time.monotonic()))

    async def aclose(self) -> None:
        """Stop; an open connection is closed with a close frame (its slot frees at once)."""
        await cancel_and_wait([self._idle_task, self._task, self._sync_task])
        self._task = self._sync_task = self._idle_task = None
        self._set_state(UpstreamState.IDLE, "closed")

    async def _close_when_idle(self) -> None:
        """Nobody has wanted anything for STREAM_IDLE_CLOSE_S: close the connection, freeing
        Alpaca's one slot for the feed (another tool of the account may want it). The next
        client to subscribe opens it again; nobody was listening, so no gap is announced."""
        await asyncio.sleep(self._config.idle_close_s)
        self._idle_task = None  # done: aclose must not cancel this very task
        task = self._task
        # Still set while it closes, so a client arriving now does not open a second one.
        await cancel_and_wait([task, self._sync_task])
        if self._task is task:
            self._task = None
        self._set_state(
            UpstreamState.IDLE, f"nobody subscribed for {self._config.idle_close_s:g} s"
        )
        if holds_any(self._wanted):  # somebody subscribed while it closed: open it again
            self.want(self._wanted)

    # --- the connection's life ------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            ended = await self._connect_once()
            if ended.streamed_until_ns is not None and self._gap_since_ns is None:
                self._gap_since_ns = ended.streamed_until_ns
            # Only data proves the connection worked: a socket that authenticates and then
            # stays mute must not reset the backoff (alpaca-py#740).
            failures = 1 if ended.got_data else failures + 1
            delay_s = reconnect_delay_s(
                self._config.policy,
                failures,
                ended.setback,
                retry_after_s=ended.retry_after_s,
                uniform=self._uniform,
            )
            self._reconnect_at_s = time.monotonic() + delay_s
            self._set_state(UpstreamState.BACKING_OFF, f"{ended.setback.value}; {delay_s:.1f} s")
            await asyncio.sleep(delay_s)

    async def _connect_once(self) -> _Ended:
        self._set_state(UpstreamState.CONNECTING)
        self.attempts += 1
        headers = {} if self.feed.family is FeedFamily.TRADING else {
            "Content-Type": MSGPACK_CONTENT_TYPE  # option feeds speak nothing else
        }  # fmt: skip
        heartbeat_s = self._config.silence_s / 2 if self._config.silence_s > 0 else None
        try:
            ws = await self._session.ws_connect(
                self._config.url,
                headers=headers,
                heartbeat=heartbeat_s,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                max_msg_size=0,  # Alpaca batches freely; its frames are never ours to refuse
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 429:
                wait = retry_after_s(exc.headers, time.time())
                return self._attempt(_Ended(Setback.RATE_LIMITED, retry_after_s=wait))
            return self._attempt(_Ended(Setback.FAILED), f"upgrade answered {exc.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._attempt(_Ended(Setback.FAILED), type(exc).__name__)
        connection = _Connection(ws)
        try:
            return await self._speak(connection)
        except (aiohttp.ClientError, OSError, TimeoutError, WireError) as exc:
            return self._attempt(_Ended(Setback.FAILED), f"{type(exc).__name__}: {exc}")
        finally:
            self._connection = None
            if not ws.closed:
                await ws.close()

    async def _speak(self, connection: _Connection) -> _Ended:
        ws = connection.ws
        if self.feed.family is FeedFamily.TRADING:
            refused = await self._trading_handshake(ws)
        else:
            refused = await self._market_data_handshake(ws)
        if refused is not None:
            return refused
        self._connection = connection
        self._set_state(UpstreamState.STREAMING)
        self._metrics.stream_upstream_attempt(self.feed.name, "connected")
        self._listener.on_connected()
        self._sync_soon()
        if self._sync_task is not None:
            await asyncio.shield(self._sync_task)
        self._announce_gap()
        return await self._stream(connection)

    async def _market_data_handshake(self, ws: aiohttp.ClientWebSocketResponse) -> _Ended | None:
        timeout_s = self._config.handshake_timeout_s
        welcome = await _control(ws, timeout_s)
        if welcome.get("T") != "success" or welcome.get("msg") != "connected":
            return self._attempt(_Ended(Setback.FAILED), "no `connected` message")
        credentials = self._config.credentials
        auth = {"action": "auth", "key": credentials.key_id, "secret": credentials.secret_key}
        await ws.send_bytes(msgpack.packb(auth))
        answer = await _control(ws, timeout_s)
        if answer.get("T") == "success" and answer.get("msg") == "authenticated":
            return None
        code = answer.get("code")
        if code == CONNECTION_LIMIT:
            return self._attempt(_Ended(Setback.CONNECTION_LIMIT))
        if answer.get("T") == "error":
            # 402 auth failed, 409 insufficient subscription: the operator must act, and the
            # clients waiting for this feed are told why nothing arrives.
            self._listener.on_error(Element(msgpack.packb(answer), "error", None, answer))
            return self._attempt(_Ended(Setback.REFUSED), f"error {code} {answer.get('msg')}")
        return self._attempt(_Ended(Setback.FAILED), "no `authenticated` message")

    async def _trading_handshake(self, ws: aiohttp.ClientWebSocketResponse) -> _Ended | None:
        credentials = self._config.credentials
        auth = {"key_id": credentials.key_id, "secret_key": credentials.secret_key}
        await ws.send_str(json.dumps({"action": "authenticate", "data": auth}))
        message = await ws.receive(timeout=self._config.handshake_timeout_s)
        if message.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return self._attempt(_Ended(Setback.FAILED), "closed during authentication")
        data = decode_trading(message.data).get("data")
        if not isinstance(data, dict) or data.get("status") != "authorized":
            return self._attempt(_Ended(Setback.REFUSED), "trade updates: not authorized")
        await ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        return None

    async def _stream(self, connection: _Connection) -> _Ended:
        ws = connection.ws
        loop = asyncio.get_running_loop()
        got_data = False
        last_frame_ns, last_frame_at = time.time_ns(), loop.time()
        silence_s = self._config.silence_s
        # Trade updates are rare by nature: only the heartbeat (ping/pong) judges them.
        judged = self.feed.family is not FeedFamily.TRADING and silence_s > 0
        while True:
            try:
                # Timed here, not by receive(timeout=): aiohttp restarts that on every pong, and a
                # mute socket still answers pings.
                async with asyncio.timeout_at(last_frame_at + silence_s if judged else None):
                    message = await ws.receive()
            except TimeoutError:
                acknowledged = connection.holdings.acknowledged
                if holds_any(acknowledged) and self._config.market_open() is not False:
                    ended = _Ended(Setback.DROPPED, got_data, streamed_until_ns=last_frame_ns)
                    return self._attempt(ended, f"silent for {silence_s:g} s while subscribed")
                # Nothing subscribed, or the market closed: silence is all there is. Judged
                # again a silence later, so a socket gone mute overnight is caught once it opens.
                last_frame_at = loop.time()
                continue
            if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                last_frame_ns, last_frame_at = time.time_ns(), loop.time()
                # Not loop.time(): some event loops (uvloop) tick it in milliseconds.
                received_at_s = time.monotonic()
                if self.feed.family is FeedFamily.TRADING:
                    got = self._on_trading_frame(message.data, received_at_s)
                else:
                    got = self._on_market_data_frame(connection, message.data, received_at_s)
                got_data = got or got_data
                continue
            ended = _Ended(Setback.DROPPED, got_data, streamed_until_ns=last_frame_ns)
            return self._attempt(ended, f"connection ended ({message.type.name})")

    def _on_market_data_frame(
        self, connection: _Connection, frame: bytes | str, received_at_s: float
    ) -> bool:
        if isinstance(frame, str):
            frame = frame.encode()  # never asked for; Alpaca honours the msgpack handshake
        elements = split_frame(frame)
        data = [e for e in elements if e.type not in CONTROL_TYPES]
        for element in elements:
            if element.type == "subscription":
                connection.holdings.confirmed(_acknowledged(element.value, self.feed))
            elif element.type == "error":
                code = element.value.get("code")
                refused = connection.holdings.refusal() if code in SUBSCRIBE_REFUSALS else {}
                logger.bind(feed=self.feed.name).warning(
                    "stream {}: Alpaca sent error {} {}{}",
                    self.feed.name,
                    code,
                    element.value.get("msg"),
                    f"; held back until room is made: {refused}" if refused else "",
                )
                self._listener.on_error(element, refused or None)
        if data:
            self._metrics.stream_messages(self.feed.name, "in", len(data))
            whole = frame if len(data) == len(elements) else b""
            self._listener.on_data(data, whole, received_at_s)
            if self._tap is not None:
                self._tap(self.feed, data)
        return bool(data)

    def _on_trading_frame(self, frame: bytes | str, received_at_s: float) -> bool:
        if decode_trading(frame).get("stream") != "trade_updates":
            return False  # `listening` and the like: the gateway's own business
        self._metrics.stream_messages(self.feed.name, "in", 1)
        self._listener.on_trade_update(frame, received_at_s)
        return True

    def _sync_soon(self) -> None:
        """Bring the connection to what is wanted, after any sync under way."""
        self._sync_due = True
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(self._syncs())

    async def _syncs(self) -> None:
        while self._sync_due:
            self._sync_due = False
            await self._sync()

    async def _sync(self) -> None:
        """Subscribe to what is wanted and not held, unsubscribe what is held and not wanted."""
        connection = self._connection
        if connection is None or self.feed.family is FeedFamily.TRADING:
            return
        try:
            for action, channels in connection.holdings.plan(self._wanted):
                await connection.ws.send_bytes(msgpack.packb({"action": action, **channels}))
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            return  # the connection is going; the reader sees it end and reconnects

    def _announce_gap(self) -> None:
        since, self._gap_since_ns = self._gap_since_ns, None
        if since is None or not holds_any(self._wanted):
            return  # nobody was listening through the outage
        self._metrics.stream_gap(self.feed.name)
        logger.bind(feed=self.feed.name).warning(
            "stream {}: streaming again after a gap of {:.1f} s; clients told",
            self.feed.name,
            (time.time_ns() - since) / 1e9,
        )
        self._listener.on_gap(since, time.time_ns())

    # --- bookkeeping ----------------------------------------------------------------------------

    def _attempt(self, ended: _Ended, detail: str = "") -> _Ended:
        outcome: StreamAttempt = ended.setback.value
        self._metrics.stream_upstream_attempt(self.feed.name, outcome)
        if detail:
            logger.bind(feed=self.feed.name, setback=outcome).info(
                "stream {}: {} ({})", self.feed.name, outcome, detail
            )
        return ended

    def _set_state(self, state: UpstreamState, detail: str = "") -> None:
        if state is self.state:
            return
        before, self.state = self.state, state
        self._metrics.stream_upstream_state(self.feed.name, state.value)
        log = logger.bind(feed=self.feed.name, from_state=before.name, to_state=state.name)
        log.info(
            "stream {}: upstream {} -> {}{}",
            self.feed.name,
            before.name.lower(),
            state.name.lower(),
            f" ({detail})" if detail else "",
        )


class UpstreamFeedFactory:
    """Builds a feed's upstream connection around its listener (the hub, or the leadership
    that relays what it receives to the other instances). The stream's transport: it owns the
    one aiohttp session every feed's connection uses, closed by `aclose()`."""

    def __init__(
        self,
        *,
        credentials: Credentials,
        market_data_url: str,
        trading_url: str,
        policy: BackoffPolicy,
        silence_s: float,
        handshake_timeout_s: float,
        metrics: Metrics,
        tap: Tap | None = None,
        market_open: Callable[[], bool | None] = lambda: None,
        idle_close_s: float = 0.0,
    ) -> None:
        """`tap` sees the market data every connection built here receives (the REST cache's
        refresh)."""
        # Its own session: the REST sessions carry the APCA headers and short total timeouts,
        # while a stream lives for hours and authenticates by message. Built here, inside the
        # running loop (the lifespan), never at import.
        self._session = aiohttp.ClientSession()
        self._credentials = credentials
        self._market_data_url = market_data_url
        self._trading_url = trading_url
        self._policy = policy
        self._silence_s = silence_s
        self._market_open = market_open
        self._idle_close_s = idle_close_s
        self._handshake_timeout_s = handshake_timeout_s
        self._metrics = metrics
        self._tap = tap

    def __call__(self, feed: Feed, listener: FeedListener) -> UpstreamFeed:
        config = UpstreamConfig(
            url=upstream_url(feed, self._market_data_url, self._trading_url),
            credentials=self._credentials,
            policy=self._policy,
            silence_s=self._silence_s,
            handshake_timeout_s=self._handshake_timeout_s,
            market_open=self._market_open,
            idle_close_s=self._idle_close_s,
        )
        return UpstreamFeed(feed, config, self._session, listener, self._metrics, tap=self._tap)

    async def aclose(self) -> None:
        """Close the session; call after every feed built here has been closed."""
        await self._session.close()


async def _control(ws: aiohttp.ClientWebSocketResponse, timeout_s: float) -> Mapping[str, Any]:
    """The next frame, which during the handshake is one control message alone."""
    message = await ws.receive(timeout=timeout_s)
    if message.type is not aiohttp.WSMsgType.BINARY:
        raise WireError(f"expected a MessagePack frame, got {message.type.name}")
    elements = split_frame(message.data)
    if len(elements) != 1:
        raise WireError("a control message comes alone in its frame")
    return elements[0].value


def _acknowledged(subscription: Mapping[str, Any], feed: Feed) -> Wanted:
    held: dict[str, frozenset[str]] = {}
    for channel in feed.channels:
        symbols = subscription.get(channel)
        if isinstance(symbols, list):
            held[channel] = frozenset(s for s in symbols if isinstance(s, str))
    return held
