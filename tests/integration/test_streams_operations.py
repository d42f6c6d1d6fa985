"""What the stream side shows an operator: the time each relayed frame spent in the gateway
before its write to a client (gateway_stream_delivery_lag_seconds), one per client frame; and
each feed's upstream connection in `/ready` (state, time left before a reconnect, the leader
instance, clients)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_streams_faults import authed
from tests.support.streams import StreamGateway, eventually, gateway, quote, raw, stream_gateway

pytestmark = pytest.mark.integration
__all__ = ["gateway"]  # the fixture, imported for this module's tests
LAG = "gateway_stream_delivery_lag_seconds"
FEEDS = {"iex", "sip", "delayed_sip", "test", "indicative", "opra", "trade_updates"}
IDLE = {"state": "idle", "reconnect_in_s": 0, "leader": None, "clients": 0}


async def test_delivery_lag_is_measured_once_per_relayed_frame_and_client(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    msgpack_client = raw(gateway.ws_url("/v2/iex"), use_msgpack=True)
    async with msgpack_client as first, raw(gateway.ws_url("/v2/iex")) as second:
        for client in (first, second):
            authed = await client.auth_reply(gateway.key_id, gateway.secret)
            assert authed == [{"T": "success", "msg": "authenticated"}]
            await client.send({"action": "subscribe", "quotes": ["AAPL"]})
            await client.recv()
        # The gateway's own answers (connected, authenticated, subscription) are not relayed
        # frames: nothing measured yet.
        assert gateway.metric(LAG + "_count", feed="iex") == 0
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        ticks = [quote("AAPL", bid, n) for n, bid in enumerate(("1.5", "1.6", "1.7"))]
        await emulator.streams.push("iex", ticks, per_frame=1)
        received: dict[int, list[Any]] = {0: [], 1: []}
        for n, client in enumerate((first, second)):
            while len(received[n]) < len(ticks):
                received[n] += await client.recv()
    # Three frames to each of two clients (observed just after each write returns, so
    # possibly a moment after the client read it); `sum` is a time, only checked to be one.
    await eventually(lambda: gateway.metric(LAG + "_count", feed="iex") >= 6, "six writes")
    assert gateway.metric(LAG + "_count", feed="iex") == 6
    assert gateway.metric(LAG + "_bucket", feed="iex", le="+Inf") == 6
    assert gateway.metric(LAG + "_sum", feed="iex") > 0
    assert gateway.metric(LAG + "_count", feed="sip") == 0


def stream_feeds(gateway: StreamGateway) -> dict[str, dict[str, Any]]:
    ready = httpx.get(gateway.served.base_url + "/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    feeds: dict[str, dict[str, Any]] = ready.json()["streams"]
    return feeds


async def test_ready_shows_each_feed_idle_until_a_client_asks_then_streaming_and_its_leader(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    with stream_gateway(
        emulator_process, redis_url, tmp_path, GATEWAY_INSTANCE="gw-ready"
    ) as gateway:
        assert stream_feeds(gateway) == dict.fromkeys(FEEDS, IDLE)
        async with raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as client:
            await authed(gateway, client, quotes=["AAPL"])
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
            await eventually(
                lambda: stream_feeds(gateway)["iex"]["leader"] is not None, "the lease taken"
            )
            feeds = stream_feeds(gateway)
    iex = feeds.pop("iex")
    assert iex["state"] == "streaming"
    assert (iex["reconnect_in_s"], iex["clients"]) == (0, 1)
    assert iex["leader"].startswith("gw-ready:")
    assert feeds == dict.fromkeys(FEEDS - {"iex"}, IDLE)


async def test_ready_shows_a_feed_backing_off_after_a_406_with_the_time_left(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    await emulator.add_fault("/v2/iex", "stream_connection_limit", count=1)
    with stream_gateway(
        emulator_process, redis_url, tmp_path, STREAM_CONNECTION_LIMIT_WAIT_S="30"
    ) as gateway:
        async with raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as client:
            await authed(gateway, client, quotes=["AAPL"])
            await eventually(
                lambda: stream_feeds(gateway)["iex"]["state"] == "backing_off", "the backoff"
            )
            iex = stream_feeds(gateway)["iex"]
    # At least STREAM_CONNECTION_LIMIT_WAIT_S after a 406, plus up to STREAM_RECONNECT_MIN_S
    # (0.2 s) of jitter, counting down.
    assert 0 < iex["reconnect_in_s"] <= 30.2
    assert iex["clients"] == 1


async def test_ready_on_a_follower_names_the_leader_instance(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    shared = {"CACHE_NAMESPACE": f"test-{uuid.uuid4().hex}", "STREAM_LEADER_LEASE_S": "2"}
    with (
        stream_gateway(emulator_process, redis_url, tmp_path / "a", GATEWAY_INSTANCE="gw-a",
                       **shared) as first,
        stream_gateway(emulator_process, redis_url, tmp_path / "b", GATEWAY_INSTANCE="gw-b",
                       **shared) as second,
    ):  # fmt: skip
        async with raw(first.ws_url("/v2/iex"), use_msgpack=True) as leader_client:
            await authed(first, leader_client, quotes=["AAPL"])
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
            async with raw(second.ws_url("/v2/iex"), use_msgpack=True) as follower_client:
                await authed(second, follower_client, quotes=["MSFT"])
                await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
                await eventually(
                    lambda: stream_feeds(second)["iex"]["leader"] is not None, "a leader seen"
                )
                on_leader, on_follower = stream_feeds(first)["iex"], stream_feeds(second)["iex"]
                assert len(await emulator.streams.connections("iex")) == 1
    assert on_leader["state"] == "streaming"
    assert on_leader["leader"].startswith("gw-a:")
    # The follower holds no connection of its own: it relays the leader's.
    assert on_follower["state"] == "idle"
    assert on_follower["leader"] == on_leader["leader"]
    assert on_follower["clients"] == 1
