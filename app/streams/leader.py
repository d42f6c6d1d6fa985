"""One upstream connection per feed across every instance sharing Redis.

Alpaca allows one connection per feed and account, whatever the number of gateway instances
(or workers). So one instance per feed, the leader, holds a lease in Redis (renewed every third
of STREAM_LEADER_LEASE_S) and the connection; it publishes what Alpaca sends on the feed's
channel, and every other instance fans that out to its own clients. Each instance keeps what
its clients want in the feed's hash (refreshed with the lease, so a dead instance's wants
lapse); the leader subscribes to the union. When the leader dies its lease lapses, one other
instance takes it and connects, and the gap is announced to every client.

Fail-open, narrowly: while Redis does not answer, the leader keeps its connection and nobody
else takes over (a second connection would only get Alpaca's 406).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
from loguru import logger

from app.background import cancel_and_wait
from app.cache import REDIS_ERRORS, RedisClient
from app.metrics import Metrics
from app.streams.fanout import FeedHub, Steering
from app.streams.subscriptions import Wanted
from app.streams.upstream import UpstreamFeed, UpstreamFeedFactory, UpstreamReport
from app.streams.wire import Element, WireError, join_msgpack, split_frame

# Renew only while still ours: a lease that lapsed and was taken must not be stolen back.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Relayed message kinds: data frame, trade update, error, gap, "my clients' wants changed".
DATA, TRADE_UPDATE, ERROR, GAP, WANTS = "d", "u", "e", "g", "w"
RELAY_QUEUE_FRAMES = 10_000
# How soon a follower subscribes to the relay again after Redis failed it.
_RESUBSCRIBE_S = 0.2


class FeedLeadership:
    """This instance's part in holding one feed's one connection (a `Steering` for the hub)."""

    def __init__(
        self,
        hub: FeedHub,
        upstream: UpstreamFeedFactory,
        redis: RedisClient,
        metrics: Metrics,
        *,
        namespace: str,
        instance: str,
        lease_s: float,
    ) -> None:
        self._hub = hub
        self._redis = redis
        self._metrics = metrics
        self._instance = instance
        self._lease_s = lease_s
        feed = hub.feed.name
        # One hash tag per feed: the lease, the wants and the scripts share a cluster slot.
        self._lease_key = f"{namespace}:stream:{{{feed}}}:leader"
        self._wants_key = f"{namespace}:stream:{{{feed}}}:wants"
        self._channel = f"{namespace}:stream:{feed}:relay"
        self._upstream: UpstreamFeed = upstream(hub.feed, self)
        self._leading = False
        self._leader: str | None = None  # the lease's holder when last looked at
        self._local: Wanted = {}
        self._last_relayed_ns: int | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(RELAY_QUEUE_FRAMES)
        self._nudge = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis_failing = False
        self._told: dict[str, list[str]] = {}  # the wants last written to Redis
        self._lost_since_ns: int | None = None  # the relay lost messages from then

    @property
    def leading(self) -> bool:
        return self._leading

    # --- Steering -------------------------------------------------------------------------------

    def report(self) -> UpstreamReport:
        return replace(self._upstream.report(), leader=self._leader)

    def want(self, wanted: Wanted) -> None:
        """This instance's clients want `wanted`: tell the leader (maybe this instance)."""
        self._local = wanted
        if not self._tasks:
            self._start()
        self._nudge.set()

    async def aclose(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await self._upstream.aclose()
        if self._leading:
            self._metrics.stream_leader(self._hub.feed.name, False)
            # Released at once: another instance takes the feed now, not a lease later.
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.eval(_RELEASE, 1, self._lease_key, self._instance)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.hdel(self._wants_key, self._instance)

    def _start(self) -> None:
        name = self._hub.feed.name
        self._tasks = [
            asyncio.create_task(self._elect(), name=f"stream-lease-{name}"),
            asyncio.create_task(self._listen(), name=f"stream-relay-in-{name}"),
            asyncio.create_task(self._publish(), name=f"stream-relay-out-{name}"),
        ]

    # --- the lease -------------------------------------------------------------------------------

    async def _elect(self) -> None:
        interval_s = self._lease_s / 3
        while True:
            self._nudge.clear()
            try:
                await self._tick()
                self._redis_answers()
            except REDIS_ERRORS as exc:
                self._redis_fails(exc)
            except Exception:
                # A bug must not end the lease loop: a dead loop keeps its upstream socket while
                # another instance takes the lapsed lease (two connections, 406s). Log, go on.
                logger.exception("stream lease loop for {} failed", self._hub.feed.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), interval_s)

    async def _tick(self) -> None:
        lease_ms = int(self._lease_s * 1000)
        local = _wire(self._local)
        wants = {"until": time.time() + 2 * self._lease_s, "wants": local}
        await self._redis.hset(self._wants_key, self._instance, json.dumps(wants))
        if local != self._told and not self._leading:
            self._relay(WANTS, b"")  # the leader (another instance) reads the wants now
        self._told = local
        if self._leading:
            renewed = await self._redis.eval(_RENEW, 1, self._lease_key, self._instance, lease_ms)
            if not renewed:
                await self._stop_leading("the lease was lost")
                return
        elif await self._redis.set(self._lease_key, self._instance, nx=True, px=lease_ms):
            self._start_leading()
        else:
            holder = await self._redis.get(self._lease_key)  # for /ready: who leads
            self._leader = holder.decode() if isinstance(holder, bytes) else holder
        if self._leading:
            self._upstream.want(await self._union())

    async def _union(self) -> Wanted:
        """What every live instance's clients want (the lapsed instances' entries dropped)."""
        entries: Mapping[Any, Any] = await self._redis.hgetall(self._wants_key)
        now = time.time()
        merged: dict[str, set[str]] = {}
        lapsed = []
        for field, raw in entries.items():
            try:
                doc = json.loads(raw)
                until, wants = float(doc["until"]), dict(doc["wants"])
            except (ValueError, TypeError, KeyError):
                continue  # not an entry this version writes (a rolling deploy, a stray writer)
            if until < now:
                lapsed.append(field)
                continue
            for channel, symbols in wants.items():
                if isinstance(channel, str) and isinstance(symbols, list):
                    merged.setdefault(channel, set()).update(
                        s for s in symbols if isinstance(s, str)
                    )
        if lapsed:
            await self._redis.hdel(self._wants_key, *lapsed)
        return {channel: frozenset(symbols) for channel, symbols in merged.items()}

    def _start_leading(self) -> None:
        self._leading = True
        self._leader = self._instance
        self._metrics.stream_leader(self._hub.feed.name, True)
        if self._last_relayed_ns is not None:
            # Another leader streamed before and died: what it never relayed is lost.
            self._upstream.expect_gap(self._last_relayed_ns)
        logger.bind(feed=self._hub.feed.name, instance=self._instance).info(
            "stream {}: this instance leads the feed (holds Alpaca's one connection)",
            self._hub.feed.name,
        )

    async def _stop_leading(self, why: str) -> None:
        self._leading = False
        self._leader = None  # someone else's now; the next tick reads whose
        self._metrics.stream_leader(self._hub.feed.name, False)
        await self._upstream.aclose()
        logger.bind(feed=self._hub.feed.name, instance=self._instance).warning(
            "stream {}: no longer leading ({}); relaying another instance's connection",
            self._hub.feed.name,
            why,
        )

    def _redis_fails(self, exc: BaseException) -> None:
        if not self._redis_failing:
            self._redis_failing = True
            logger.bind(dependency="redis", feed=self._hub.feed.name).warning(
                "stream {}: Redis unavailable ({}); {}",
                self._hub.feed.name,
                type(exc).__name__,
                "keeping the connection" if self._leading else "waiting for the leader",
            )

    def _redis_answers(self) -> None:
        if self._redis_failing:
            self._redis_failing = False
            logger.bind(dependency="redis", feed=self._hub.feed.name).info(
                "stream {}: Redis answers again", self._hub.feed.name
            )

    # --- the relay: what the leader's connection receives, to every instance ---------------------

    def on_data(self, elements: list[Element], frame: bytes, received_at_s: float) -> None:
        self._hub.on_data(elements, frame, received_at_s)
        self._relay(DATA, frame or join_msgpack([e.raw for e in elements]))

    def on_trade_update(self, frame: bytes | str, received_at_s: float) -> None:
        self._hub.on_trade_update(frame, received_at_s)
        self._relay(TRADE_UPDATE, frame.encode() if isinstance(frame, str) else frame)

    def on_error(self, element: Element) -> None:
        self._hub.on_error(element)
        self._relay(ERROR, join_msgpack([element.raw]))

    def on_gap(self, since_ns: int, until_ns: int) -> None:
        self._hub.on_gap(since_ns, until_ns)
        self._relay(GAP, f"{since_ns},{until_ns}".encode())

    def _relay(self, kind: str, payload: bytes) -> None:
        try:
            self._outbox.put_nowait(msgpack.packb([self._instance, kind, payload]))
        except asyncio.QueueFull:
            self._relay_lost()

    def _relay_lost(self) -> None:
        """Redis did not take some messages: the followers are told of a gap (from the first
        one lost) once the relay works again."""
        if self._lost_since_ns is None:
            self._lost_since_ns = time.time_ns()
            logger.bind(feed=self._hub.feed.name).warning(
                "stream {}: relay to the other instances lost messages", self._hub.feed.name
            )

    async def _publish(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            if self._lost_since_ns is not None:
                gap = f"{self._lost_since_ns},{time.time_ns()}".encode()
                batch.insert(0, msgpack.packb([self._instance, GAP, gap]))
                self._lost_since_ns = None
            try:
                # One pipeline: the frames reach Redis, and so every follower, in order.
                async with self._redis.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self._channel, message)
                    await pipe.execute()
            except REDIS_ERRORS as exc:
                self._redis_fails(exc)
                self._relay_lost()

    async def _listen(self) -> None:
        deaf_since_ns: int | None = None  # since when the relay may have gone unheard
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    if deaf_since_ns is not None:
                        # What the leader relayed meanwhile is lost to this instance's clients:
                        # they are told, never served a stream that pretends continuity.
                        if not self._leading:
                            self._hub.on_gap(deaf_since_ns, time.time_ns())
                        deaf_since_ns = None
                    while True:
                        message = await pubsub.get_message(timeout=None)
                        if message is not None and message["type"] == "message":
                            self._received(message["data"])
            except REDIS_ERRORS as exc:
                self._redis_fails(exc)
                if deaf_since_ns is None:
                    deaf_since_ns = time.time_ns()
                # Soon, not a lease later: every moment unsubscribed is messages lost.
                await asyncio.sleep(min(self._lease_s / 3, _RESUBSCRIBE_S))

    def _received(self, data: bytes) -> None:
        try:
            self._relayed(data)
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException):
            return  # not one of ours (another version, a stray writer): the relay goes on

    def _relayed(self, data: bytes) -> None:
        origin, kind, payload = msgpack.unpackb(data, raw=False)
        if kind == WANTS:
            if self._leading and origin != self._instance:
                self._nudge.set()  # another instance's clients changed: subscribe now
            return
        self._last_relayed_ns = time.time_ns()
        if origin == self._instance:
            return  # delivered here when it arrived
        # A follower's lag counts from the relay's arrival: the leader's clock is not ours.
        received_at_s = time.monotonic()
        if kind == TRADE_UPDATE:
            self._hub.on_trade_update(payload, received_at_s)
        elif kind == GAP:
            since, _, until = payload.decode().partition(",")
            self._hub.on_gap(int(since), int(until))
        elif kind in (DATA, ERROR):
            try:
                elements = split_frame(payload)
            except WireError:
                return  # the leader relays what it parsed; another writer's garbage is ignored
            if kind == DATA:
                self._hub.on_data(elements, payload, received_at_s)
            else:
                for element in elements:
                    self._hub.on_error(element)


def _wire(wanted: Wanted) -> dict[str, list[str]]:
    return {channel: sorted(symbols) for channel, symbols in wanted.items() if symbols}


def leadership(
    redis: RedisClient, metrics: Metrics, *, namespace: str, instance: str, lease_s: float
) -> Callable[[FeedHub, UpstreamFeedFactory], Steering]:
    """The StreamHub's way to share each feed's connection with the other instances."""

    def lead(hub: FeedHub, upstream: UpstreamFeedFactory) -> Steering:
        return FeedLeadership(
            hub, upstream, redis, metrics, namespace=namespace, instance=instance, lease_s=lease_s
        )

    return lead
