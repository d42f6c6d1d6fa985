"""One upstream connection per feed across every instance sharing Redis.

Alpaca allows one connection per feed and account, whatever the number of gateway instances
(or workers). So one instance per feed, the leader, holds a lease in Redis (renewed every third
of STREAM_LEADER_LEASE_S) and the connection; it publishes what Alpaca sends on the feed's
channel, and every other instance fans that out to its own clients. Each instance keeps what
its clients want in the feed's hash (refreshed with the lease, so a dead instance's wants
lapse); the leader subscribes to the union. When the leader dies its lease lapses, one other
instance takes it and connects, and the gap is announced to every client.

Fail-open, narrowly: while Redis does not answer, the leader keeps its connection and nobody
else takes over (a second connection would only get Alpaca's 406). A lease that vanishes while
Redis answers (Redis restarted empty, flushed, failed over) is taken back by its leader at its
next renewal; a follower that finds it gone before it could have lapsed, or right after Redis
failed it, waits half a lease for that first, and takes it at once only when it lapsed (the
leader died).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import msgpack  # type: ignore[import-untyped]  # ships no type information
from loguru import logger

from app.background import cancel_and_wait
from app.cache import REDIS_ERRORS, RedisClient
from app.metrics import Metrics
from app.streams.fanout import FeedHub, Steering
from app.streams.subscriptions import Wanted, holds_any
from app.streams.upstream import UpstreamFeed, UpstreamFeedFactory, UpstreamReport
from app.streams.wire import Element, WireError, join_msgpack, split_frame

# Renew only while still ours: a lease that lapsed and was taken must not be stolen back.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# A follower's look at the lease: its holder and the milliseconds left (nothing when it is gone).
_LOOK = """
local holder = redis.call('get', KEYS[1])
if not holder then
  return {}
end
return {holder, redis.call('pttl', KEYS[1])}
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# Relayed message kinds: data frame, trade update, error, a refused subscribe (the error and its
# symbols), gap, "my clients' wants changed", "Alpaca accepted the connection".
DATA, TRADE_UPDATE, ERROR, REFUSED, GAP, WANTS, CONNECTED = "d", "u", "e", "r", "g", "w", "c"
RELAY_QUEUE_FRAMES = 10_000
# How soon a follower subscribes to the relay again after Redis failed it (and how soon the
# lease is looked at again).
_RESUBSCRIBE_S = 0.2
# A lease found gone this much before it could have lapsed vanished (a flush, a restart): its
# holder is probably alive. (Local and Redis clocks run at the same rate; this covers rounding.)
_EARLY_MARGIN_S = 0.1


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
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(RELAY_QUEUE_FRAMES)
        self._nudge = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis_failing = False
        self._tick_failed = False  # the last lease tick met a Redis error
        self._told: dict[str, list[str]] = {}  # the wants last written to Redis
        self._lost_since_ns: int | None = None  # the relay lost messages from then
        # Following: the lease cannot lapse before then (time.monotonic()), as last looked at.
        self._lapse_at: float | None = None
        # Following: the lease vanished early, or Redis failed: not taken before then.
        self._hold_until: float | None = None
        # Leading: what the connection was told to hold, and until when it keeps holding it
        # all (a lease taken back after a flush: the other instances' wants went with it).
        self._held: Wanted = {}
        self._keep_until = 0.0

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
        while True:
            self._nudge.clear()
            wait_s = await self._step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudge.wait(), wait_s)

    async def _step(self) -> float:
        """One tick of the lease loop; the time until the next (unless nudged)."""
        interval_s = self._lease_s / 3
        try:
            await self._tick()
        except REDIS_ERRORS as exc:
            self._tick_failed = True
            self._redis_fails(exc)
            # Again soon: a leader back within moments of Redis takes back a lease lost with it
            # well before a follower would (`_follow`).
            return min(interval_s, _RESUBSCRIBE_S)
        except Exception:
            # A bug must not end the lease loop: a dead loop keeps its upstream socket while
            # another instance takes the lapsed lease (two connections, 406s). Log, go on.
            logger.exception("stream lease loop for {} failed", self._hub.feed.name)
            return interval_s
        self._tick_failed = False
        self._redis_answers()
        return interval_s

    async def _tick(self) -> None:
        lease_ms = int(self._lease_s * 1000)
        local = _wire(self._local)
        wants = {"until": time.time() + 2 * self._lease_s, "wants": local}
        await self._redis.hset(self._wants_key, self._instance, json.dumps(wants))
        if local != self._told and not self._leading:
            self._relay(WANTS, b"")  # the leader (another instance) reads the wants now
        self._told = local
        if self._leading:
            await self._renew(lease_ms)
        else:
            await self._follow(lease_ms)
        if self._leading:
            wanted = await self._union()
            if time.monotonic() < self._keep_until:
                wanted = _merged(wanted, self._held)
            self._held = wanted
            self._upstream.want(wanted)

    async def _renew(self, lease_ms: int) -> None:
        if await self._redis.eval(_RENEW, 1, self._lease_key, self._instance, lease_ms):
            return
        # Not ours any more. Gone (Redis restarted empty, was flushed, failed over): take it
        # back, keeping the connection; the followers wait for this (`_follow`).
        if await self._redis.set(self._lease_key, self._instance, nx=True, px=lease_ms):
            # The other instances' wants may have gone with it: they write them again within
            # a third of the lease; until then the connection keeps holding what it held.
            self._keep_until = time.monotonic() + self._lease_s
            logger.bind(feed=self._hub.feed.name, instance=self._instance).warning(
                "stream {}: the lease was gone from Redis (restarted, flushed, failed over?);"
                " taken back, the connection kept",
                self._hub.feed.name,
            )
            return
        await self._stop_leading("another instance holds the lease")

    async def _follow(self, lease_ms: int) -> None:
        """Look at the lease; take it when its holder is gone (it lapsed), not when it merely
        vanished from Redis while its holder lives (a flush, a restart: the holder takes it
        back at its next renewal, and a second connection would only get Alpaca's 406)."""
        asked_at = time.monotonic()
        found = await self._redis.eval(_LOOK, 1, self._lease_key)
        now = time.monotonic()
        name = self._hub.feed.name
        if found:
            holder, left_ms = found
            self._leader = holder.decode() if isinstance(holder, bytes) else str(holder)
            # Redis counted `left_ms` after `asked_at`: the lease lapses no sooner than this.
            self._lapse_at = asked_at + int(left_ms) / 1000 if int(left_ms) >= 0 else None
            if self._hold_until is not None:
                self._hold_until = None
                logger.bind(feed=name, instance=self._instance).info(
                    "stream {}: the lease is held again (by {}); relaying its connection",
                    name,
                    self._leader,
                )
            return
        self._leader = None
        hold_s = self._lease_s / 2  # the holder's renewal interval (a third), and half that
        why = None
        if self._tick_failed:  # the first look since Redis failed it: from now, again
            why = "Redis was unavailable"  # restarted empty, perhaps: the leader lives on
        elif self._hold_until is not None:
            pass  # waiting already (once: a holder that never takes it back is gone)
        elif self._redis_failing:
            why = "Redis failed the relay"
        elif self._lapse_at is not None and now < self._lapse_at - min(
            _EARLY_MARGIN_S, self._lease_s / 10
        ):
            why = f"gone {self._lapse_at - now:.2f} s before it could lapse"
        if why is not None:
            self._hold_until = now + hold_s
            logger.bind(feed=name, instance=self._instance).warning(
                "stream {}: the lease is not in Redis ({}); waiting {:.1f} s for its holder"
                " to take it back before taking it",
                name,
                why,
                hold_s,
            )
        if self._hold_until is not None and now < self._hold_until:
            return
        if await self._redis.set(self._lease_key, self._instance, nx=True, px=lease_ms):
            self._start_leading()

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
        self._lapse_at = self._hold_until = None
        self._held, self._keep_until = {}, 0.0
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

    def on_error(
        self, element: Element, refused: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._hub.on_error(element, refused)
        if refused is None:
            self._relay(ERROR, join_msgpack([element.raw]))
        else:  # every instance tells only its clients that want a refused symbol
            self._relay(REFUSED, msgpack.packb([element.raw, dict(refused)]))

    def on_connected(self) -> None:
        self._hub.on_connected()
        self._relay(CONNECTED, b"")

    def on_gap(self, since_ns: int, until_ns: int) -> None:
        self._hub.on_gap(since_ns, until_ns)
        self._relay(GAP, f"{since_ns},{until_ns}".encode())

    def _relay(self, kind: str, payload: bytes) -> None:
        try:
            self._outbox.put_nowait((kind, msgpack.packb([self._instance, kind, payload])))
        except asyncio.QueueFull:
            if kind != WANTS:  # a lost WANTS only delays the leader: it reads them each tick
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
            messages = [message for _, message in batch]
            lost_since_ns, self._lost_since_ns = self._lost_since_ns, None
            if lost_since_ns is not None:
                gap = f"{lost_since_ns},{time.time_ns()}".encode()
                messages.insert(0, msgpack.packb([self._instance, GAP, gap]))
            try:
                # One pipeline: the frames reach Redis, and so every follower, in order.
                async with self._redis.pipeline(transaction=False) as pipe:
                    for message in messages:
                        pipe.publish(self._channel, message)
                    await pipe.execute()
            except REDIS_ERRORS as exc:
                self._redis_fails(exc)
                if lost_since_ns is not None:
                    # Still to announce, from the first loss (any since came after it).
                    self._lost_since_ns = lost_since_ns
                elif any(kind != WANTS for kind, _ in batch):
                    self._relay_lost()
                continue
            if lost_since_ns is not None:
                # Announced to every follower's clients (they count nothing): counted here.
                self._metrics.stream_gap(self._hub.feed.name)
                logger.bind(feed=self._hub.feed.name).warning(
                    "stream {}: relay to the other instances works again after {:.1f} s;"
                    " their clients told of the gap",
                    self._hub.feed.name,
                    (time.time_ns() - lost_since_ns) / 1e9,
                )

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
                            self._deaf_gap(deaf_since_ns)
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

    def _deaf_gap(self, since_ns: int) -> None:
        until_ns = time.time_ns()
        if holds_any(self._local):  # counted when some client of this instance listened
            self._metrics.stream_gap(self._hub.feed.name)
            logger.bind(feed=self._hub.feed.name).warning(
                "stream {}: hearing the relay again after {:.1f} s; clients told of the gap",
                self._hub.feed.name,
                (until_ns - since_ns) / 1e9,
            )
        self._hub.on_gap(since_ns, until_ns)

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
        elif kind == CONNECTED:
            self._hub.on_connected()
        elif kind == REFUSED:
            raw_error, refused = msgpack.unpackb(payload, raw=False)
            for element in split_frame(join_msgpack([raw_error])):
                self._hub.on_error(element, refused)
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


def _merged(wanted: Wanted, more: Wanted) -> Wanted:
    channels = wanted.keys() | more.keys()
    return {c: wanted.get(c, frozenset()) | more.get(c, frozenset()) for c in channels}


def leadership(
    redis: RedisClient, metrics: Metrics, *, namespace: str, instance: str, lease_s: float
) -> Callable[[FeedHub, UpstreamFeedFactory], Steering]:
    """The StreamHub's way to share each feed's connection with the other instances."""

    def lead(hub: FeedHub, upstream: UpstreamFeedFactory) -> Steering:
        return FeedLeadership(
            hub, upstream, redis, metrics, namespace=namespace, instance=instance, lease_s=lease_s
        )

    return lead
