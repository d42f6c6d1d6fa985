"""One upstream connection per feed, fanned out to every client of this instance.

Each client has a buffer bounded in frames and in bytes. Delivery never waits for a client: a
client whose buffer is full when a frame arrives (either bound) is told (`error` 407 `slow
client`, as Alpaca does) and disconnected, never fed a thinned stream, and the others are not
slowed by it. The gateway's answers to a client's own requests count too: a client that keeps
asking and never reads is slow like any other.

Each relayed frame carries the (monotonic) time it reached this instance, so the time it spent
here before its write to each client is measured (gateway_stream_delivery_lag_seconds). Alpaca's
own `t` is not used for it: Alpaca's clock is not ours.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import msgpack  # type: ignore[import-untyped]  # ships no type information
from loguru import logger

from app.metrics import Metrics
from app.streams.feeds import Feed, FeedFamily
from app.streams.subscriptions import Subscriptions, Wanted, empty, routing, union, wants
from app.streams.wire import (
    Element,
    Encoding,
    element_json,
    encode,
    join_json,
    join_msgpack,
    rfc3339,
)

if TYPE_CHECKING:  # the report's type only: the fan-out never touches the connection
    from app.streams.upstream import UpstreamReport

SLOW_CLIENT = 407
INSUFFICIENT_SUBSCRIPTION = 409
TRADE_UPDATES = "trade_updates"
# Answers to a client's own requests may exceed its buffer's frames by this many (never its
# bytes); a client that keeps asking without reading is slow like any other.
CONTROL_HEADROOM = 16
Frame = bytes | str
# A queued frame and the time.monotonic() at which what it carries reached this instance (None
# for the gateway's own messages: answers, notices, the end).
Queued = tuple[Frame | None, float | None]


def slow_client_notice(feed: Feed) -> object:
    if feed.family is FeedFamily.TRADING:
        # alpaca-py's TradingStream ignores streams it does not know; a bot reading raw frames
        # sees why the connection ends.
        return {"stream": "error", "data": {"code": SLOW_CLIENT, "msg": "slow client"}}
    return [{"T": "error", "code": SLOW_CLIENT, "msg": "slow client"}]


def gap_notice(feed: Feed, since_ns: int, until_ns: int) -> object:
    """Alpaca-shaped and ignored by alpaca-py's parsers (a `T`, or a `stream`, it does not
    know): a bot that looks learns that messages between `from` and `to` may be missing."""
    body = {
        "msg": "the gateway's connection to Alpaca was lost and is back; Alpaca replays"
        " nothing, so messages sent between `from` and `to` may be missing",
        "from": _rfc3339_ns(since_ns),
        "to": _rfc3339_ns(until_ns),
    }
    if feed.family is FeedFamily.TRADING:
        return {"stream": "gap", "data": body}
    return [{"T": "gap", **body}]


def _rfc3339_ns(unix_ns: int) -> str:
    return rfc3339(msgpack.Timestamp.from_unix_nano(unix_ns))


def framed(feed: Feed, encoding: Encoding, value: object) -> Frame:
    """A message the gateway writes itself, framed as the feed's clients expect: trade
    updates as JSON in binary frames (as paper trading sends them), market data in the
    client's encoding."""
    if feed.family is FeedFamily.TRADING:
        text = encode(value, "json")
        return text.encode() if isinstance(text, str) else text
    return encode(value, encoding)


class StreamClient:
    """One connected client of one feed: what it subscribed to and its bounded buffer.

    The buffer holds at most `buffer_frames` frames and `buffer_bytes` bytes (None: frames
    only), whichever comes first; one frame larger than the byte bound is taken when nothing
    else waits (it exists already; refusing it would make its every reader slow). A frame's
    size is its length: bytes, or characters of text (the gateway writes ASCII JSON)."""

    _ids = itertools.count(1)

    def __init__(
        self,
        feed: Feed,
        encoding: Encoding,
        buffer_frames: int,
        *,
        buffer_bytes: int | None = None,
    ) -> None:
        self.id = next(self._ids)
        self.feed = feed
        self.encoding = encoding
        self.subscriptions: Subscriptions = empty(feed)
        self.routes: Wanted = routing(self.subscriptions)
        self.listening = False  # trade updates
        self.slow = False
        self.close_code: int | None = None  # the end's close code, when not the usual one
        self.ended = asyncio.Event()  # nothing more will be queued: the notice, then the end
        self._limit = buffer_frames
        self._byte_limit = buffer_bytes
        self._frames: deque[Queued] = deque()
        self._bytes = 0  # of the frames queued
        self._ready = asyncio.Event()

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def subscribe(self, subscriptions: Subscriptions) -> None:
        self.subscriptions = subscriptions
        self.routes = routing(subscriptions)

    def offer(self, frame: Frame, *, headroom: int = 0, received_at_s: float | None = None) -> bool:
        """Queue a frame; False (and nothing queued) when it would take the buffer past either
        bound, or the buffer has ended. `headroom`: answers to the client's own requests may
        use a few more frames (not bytes). `received_at_s`: when the relayed messages reached
        this instance (time.monotonic())."""
        if self.ended.is_set() or len(self._frames) >= self._limit + headroom:
            return False
        size = len(frame)
        if self._byte_limit is not None and self._frames and self._bytes + size > self._byte_limit:
            return False
        self._queue(frame, received_at_s)
        return True

    def finish(self, last: Frame | None = None, *, code: int | None = None) -> None:
        """Write `last` (if any) after what is queued, then end the connection (with `code`,
        if given, instead of the usual close code)."""
        if self.ended.is_set():
            return
        self.close_code = code
        if last is not None:
            self._queue(last, None)
        self._frames.append((None, None))
        self.ended.set()
        self._ready.set()

    def end_slow(self, notice: Frame) -> None:
        """Drop what is buffered; what is left to write is the notice, then the end."""
        self.slow = True
        self._frames.clear()
        self._bytes = 0
        self._queue(notice, None)
        self._frames.append((None, None))
        self.ended.set()
        self._ready.set()

    def _queue(self, frame: Frame, received_at_s: float | None) -> None:
        self._frames.append((frame, received_at_s))
        self._bytes += len(frame)
        self._ready.set()

    async def next_frame(self) -> Queued:
        """The next frame to write (None when the connection must end) and when what it relays
        reached this instance (None for the gateway's own messages)."""
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        queued = self._frames.popleft()
        if queued[0] is not None:
            self._bytes -= len(queued[0])
        return queued


class KeySlots:
    """The stream connections each key holds on this instance (all feeds together): a
    connection takes its key's slot once authenticated and gives it back when it ends, however
    it ends."""

    def __init__(self) -> None:
        self._held: Counter[str] = Counter()

    def held(self, key: str) -> int:
        return self._held[key]

    def claim(self, key: str, limit: int) -> bool:
        """Take one of `key`'s `limit` slots; False (nothing taken) when it holds them all."""
        if self._held[key] >= limit:
            return False
        self._held[key] += 1
        return True

    def release(self, key: str) -> None:
        if self._held[key] <= 1:
            del self._held[key]  # a key with no connection is not remembered
        else:
            self._held[key] -= 1


class FeedHub:
    """The clients of one feed on this instance and the feed's one upstream connection."""

    def __init__(self, feed: Feed, metrics: Metrics) -> None:
        self.feed = feed
        self._metrics = metrics
        self._clients: dict[int, StreamClient] = {}
        self._observe_lag = metrics.stream_delivery_lag_observer(feed.name)
        self._refused_at_auth: Mapping[str, object] | None = None
        # What holds the feed's upstream connection: this instance's own, or the leadership
        # that shares one across instances (app/streams/leader.py). Set by StreamHub.
        self.steering: Steering | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    def join(self, client: StreamClient) -> None:
        if client.id not in self._clients:
            self._clients[client.id] = client
            self._metrics.stream_clients(self.feed.name, 1)

    def leave(self, client: StreamClient) -> None:
        if self._clients.pop(client.id, None) is not None:
            self._metrics.stream_clients(self.feed.name, -1)
            self.changed()

    def changed(self) -> None:
        """A client's subscriptions changed: hold the union upstream."""
        if self.steering is None:
            return
        if self.feed.family is FeedFamily.TRADING:
            listening = any(client.listening for client in self._clients.values())
            self.steering.want({TRADE_UPDATES: frozenset({"*"})} if listening else {})
            return
        self.steering.want(union(self.feed, (c.subscriptions for c in self._clients.values())))

    # --- what the upstream connection hands over ------------------------------------------------

    def on_data(self, elements: list[Element], frame: bytes, received_at_s: float) -> None:
        self._refused_at_auth = None  # data: the feed is the account's after all
        json_texts: dict[int, str] = {}
        delivered = 0
        for client in list(self._clients.values()):
            routes = client.routes
            picked = [e for e in elements if wants(routes, e.type, e.symbol)]
            if not picked:
                continue
            out: Frame
            if client.encoding == "msgpack":
                # Alpaca's own bytes: the whole frame when the client takes all of it.
                out = frame if frame and len(picked) == len(elements) else join_msgpack(
                    [e.raw for e in picked]
                )  # fmt: skip
            else:
                for element in picked:
                    if id(element) not in json_texts:
                        json_texts[id(element)] = element_json(element.value)
                out = join_json([json_texts[id(e)] for e in picked])
            if self._deliver(client, out, received_at_s=received_at_s):
                delivered += len(picked)
        if delivered:
            self._metrics.stream_messages(self.feed.name, "out", delivered)

    def on_trade_update(self, frame: bytes | str, received_at_s: float) -> None:
        delivered = 0
        for client in list(self._clients.values()):
            if client.listening and self._deliver(client, frame, received_at_s=received_at_s):
                delivered += 1
        if delivered:
            self._metrics.stream_messages(self.feed.name, "out", delivered)

    def on_error(
        self, element: Element, refused: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """An error Alpaca sent on the feed, to every client; Alpaca's refusal of a subscribe
        (`refused`: its channels and symbols) only to the clients that want one of them. A
        refusal of the feed itself at auth is remembered for the clients still to come."""
        if refused is None and element.value.get("code") == INSUFFICIENT_SUBSCRIPTION:
            self._refused_at_auth = element.value
        for client in list(self._clients.values()):
            if refused is not None and not _wants_any(client.routes, refused):
                continue
            if client.encoding == "msgpack":
                self._deliver(client, join_msgpack([element.raw]))
            else:
                self._deliver(client, join_json([element_json(element.value)]))

    def on_connected(self) -> None:
        """Alpaca accepted the feed's connection: a refusal remembered before no longer holds."""
        self._refused_at_auth = None

    def refused_at_auth(self) -> Mapping[str, object] | None:
        """Alpaca's refusal of this feed for the account (409 insufficient subscription) since
        its connection last authenticated, if any."""
        return self._refused_at_auth

    def answer(self, client: StreamClient, value: object) -> None:
        """The gateway's answer to a client's own request (auth, subscribe, errors)."""
        self._deliver(client, self._as(client, value), headroom=CONTROL_HEADROOM)

    def written(self, received_at_s: float) -> None:
        """A client's frame relaying what reached this instance at `received_at_s` was written."""
        self._observe_lag(time.monotonic() - received_at_s)

    def on_gap(self, since_ns: int, until_ns: int) -> None:
        notice = gap_notice(self.feed, since_ns, until_ns)
        for client in list(self._clients.values()):
            self._deliver(client, self._as(client, notice))

    def _as(self, client: StreamClient, value: object) -> Frame:
        return framed(self.feed, client.encoding, value)

    def _deliver(
        self,
        client: StreamClient,
        frame: Frame,
        *,
        headroom: int = 0,
        received_at_s: float | None = None,
    ) -> bool:
        if client.offer(frame, headroom=headroom, received_at_s=received_at_s):
            return True
        if client.ended.is_set():
            return False
        client.end_slow(self._as(client, slow_client_notice(self.feed)))
        self._metrics.stream_slow_client(self.feed.name)
        logger.bind(feed=self.feed.name, client=client.id).warning(
            "stream {}: client {} fell behind its buffer; told and disconnected",
            self.feed.name,
            client.id,
        )
        self.leave(client)
        return False


class Steering(Protocol):
    """Keeps a feed's upstream connection subscribed to what this instance's clients want."""

    def want(self, wanted: Wanted) -> None: ...

    def report(self) -> UpstreamReport: ...

    async def aclose(self) -> None: ...


def _wants_any(routes: Wanted, refused: Mapping[str, Sequence[str]]) -> bool:
    """Whether a client with these routes asked for one of the refused channels' symbols."""
    return any(
        symbol in routes.get(channel, ())
        for channel, symbols in refused.items()
        for symbol in symbols
    )
