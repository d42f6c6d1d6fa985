"""The instance's feeds: each feed's hub and what holds its upstream connection, built when a
client first asks for the feed and closed (cleanly, so Alpaca frees the slots) at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from app.metrics import Metrics
from app.streams.fanout import FeedHub, KeySlots, Steering
from app.streams.feeds import BY_NAME, FEED_NAMES, FeedName
from app.streams.refresh import LatestRefresh
from app.streams.upstream import UpstreamFeedFactory, UpstreamReport, UpstreamState

LeadershipFactory = Callable[[FeedHub, UpstreamFeedFactory], Steering]
IDLE = UpstreamReport(UpstreamState.IDLE, 0.0)


@dataclass(frozen=True, slots=True)
class FeedReport:
    upstream: UpstreamReport
    clients: int  # on this instance


class StreamHub:
    """Every feed's hub on this instance, built when a client first asks for the feed."""

    def __init__(
        self,
        upstream: UpstreamFeedFactory | None,
        metrics: Metrics,
        *,
        buffer_frames: int,
        leadership: LeadershipFactory | None = None,
        refresh: LatestRefresh | None = None,
    ) -> None:
        """`upstream` None: no Alpaca credentials, so no feed can be opened; else it is closed
        last by `aclose()`, after every feed's connection. `leadership`: the feed's one
        connection is shared with the other instances (through Redis) instead of this instance
        holding its own. `refresh`, if given, is closed with the feeds."""
        self._upstream = upstream
        self._refresh = refresh
        self._leadership = leadership
        self._metrics = metrics
        self.buffer_frames = buffer_frames
        # The stream connections each key holds on this instance, over every feed.
        self.key_slots = KeySlots()
        self._hubs: dict[FeedName, FeedHub] = {}
        for name in FEED_NAMES:
            metrics.stream_feed(name)

    @property
    def configured(self) -> bool:
        return self._upstream is not None

    def feed(self, name: FeedName) -> FeedHub:
        if self._upstream is None:
            raise RuntimeError("streams need the gateway's Alpaca credentials")
        hub = self._hubs.get(name)
        if hub is None:
            hub = self._hubs[name] = FeedHub(BY_NAME[name], self._metrics)
            if self._leadership is not None:
                hub.steering = self._leadership(hub, self._upstream)
            else:
                hub.steering = self._upstream(hub.feed, hub)
                self._metrics.stream_leader(name, True)  # alone: this instance holds it
        return hub

    def report(self) -> dict[FeedName, FeedReport]:
        """Every feed's upstream connection and clients on this instance, for `/ready`; a feed
        no client asked for yet is idle (no I/O: read from what the feeds last saw)."""
        reports = {}
        for name in FEED_NAMES:
            hub = self._hubs.get(name)
            if hub is None or hub.steering is None:
                reports[name] = FeedReport(IDLE, clients=0)
            else:
                reports[name] = FeedReport(hub.steering.report(), clients=hub.clients)
        return reports

    async def aclose(self) -> None:
        steerings = [hub.steering for hub in self._hubs.values() if hub.steering is not None]
        await asyncio.gather(*(steering.aclose() for steering in steerings))
        if self._refresh is not None:
            await self._refresh.aclose()
        if self._upstream is not None:
            await self._upstream.aclose()
