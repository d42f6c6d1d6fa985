"""What a follower hears through the relay: the gap when it lost its relay subscription, once it
is back; a refused subscribe with the symbols Alpaca refused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgpack

from app.streams.leader import FeedLeadership
from app.streams.wire import Element, split_frame
from tests.support.deaf_redis import DeafRedis


@dataclass
class Hub:
    feed: Any = field(default_factory=lambda: SimpleNamespace(name="iex"))
    gaps: list[tuple[int, int]] = field(default_factory=list)
    connected: int = 0

    def on_gap(self, since_ns: int, until_ns: int) -> None:
        self.gaps.append((since_ns, until_ns))

    def on_connected(self) -> None:
        self.connected += 1


async def test_a_follower_resubscribed_after_a_failure_announces_the_gap() -> None:
    hub, redis = Hub(), DeafRedis(failures=1, error=TimeoutError)  # a busy loop read it late
    leadership = FeedLeadership(
        hub,  # type: ignore[arg-type]
        lambda feed, owner: SimpleNamespace(),  # type: ignore[arg-type,return-value]
        redis,  # type: ignore[arg-type]
        SimpleNamespace(),  # type: ignore[arg-type]
        namespace="gw",
        instance="gw-b:2",
        lease_s=10.0,
    )
    listening = asyncio.create_task(leadership._listen())
    try:
        for _ in range(100):
            if hub.gaps:
                break
            await asyncio.sleep(0.01)
    finally:
        listening.cancel()

    assert redis.subscribes == 2  # again within moments, not a third of the lease (3.3 s)
    [(since_ns, until_ns)] = hub.gaps
    assert since_ns <= until_ns


@dataclass
class ErrorHub(Hub):
    errors: list[tuple[dict[str, Any], Any]] = field(default_factory=list)

    def on_error(self, element: Element, refused: Any = None) -> None:
        self.errors.append((dict(element.value), refused))


def leader_and_follower() -> tuple[FeedLeadership, ErrorHub, FeedLeadership, ErrorHub]:
    """Two instances' leaderships on one feed (no Redis: the relay is handed over by hand)."""
    hubs = ErrorHub(), ErrorHub()
    leader, follower = (
        FeedLeadership(
            hub,  # type: ignore[arg-type]
            lambda feed, owner: SimpleNamespace(),  # type: ignore[arg-type,return-value]
            DeafRedis(),  # type: ignore[arg-type]
            SimpleNamespace(),  # type: ignore[arg-type]
            namespace="gw",
            instance=name,
            lease_s=10.0,
        )
        for hub, name in zip(hubs, ("gw-a:1", "gw-b:1"), strict=True)
    )
    return leader, hubs[0], follower, hubs[1]


def relay(leader: FeedLeadership, follower: FeedLeadership) -> None:
    while not leader._outbox.empty():
        follower._received(leader._outbox.get_nowait()[1])


def test_a_refused_subscribe_relayed_reaches_only_the_clients_that_want_its_symbols() -> None:
    # The leader tells every instance which symbols Alpaca refused, so each one tells only its
    # own clients that asked for them (the error alone would go to all of them).
    leader, leader_hub, follower, follower_hub = leader_and_follower()
    error = {"T": "error", "code": 405, "msg": "symbol limit exceeded"}
    [element] = split_frame(msgpack.packb([error]))

    leader.on_error(element, {"quotes": ["IBM"]})
    relay(leader, follower)

    assert leader_hub.errors == [(error, {"quotes": ["IBM"]})]
    assert follower_hub.errors == [(error, {"quotes": ["IBM"]})]


def test_alpaca_accepting_the_connection_is_relayed_so_a_409_is_forgotten_everywhere() -> None:
    leader, leader_hub, follower, follower_hub = leader_and_follower()

    leader.on_connected()
    relay(leader, follower)

    assert (leader_hub.connected, follower_hub.connected) == (1, 1)
