"""Several gateway instances on one Alpaca account: one upstream connection per feed between
them (a leader holds a lease in Redis and relays through it), the union of every instance's
subscriptions, and when the leader is killed, exactly one new connection within the lease while
the other instance's clients keep receiving, told of the gap."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_streams_faults import authed, bot
from tests.support.streams import eventually, quote, raw, running, stream_gateway

pytestmark = pytest.mark.integration

LEASE_S = 2.0


async def test_two_instances_share_one_connection_and_survive_the_leaders_death(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # Alpaca keeps a killed connection's slot ~90 s; the emulator, 1 s here.
    await emulator.streams.configure(slot_release_ms=1000)
    namespace = f"test-{uuid.uuid4().hex}"
    # uvicorn with one worker is one process: kill -9 takes the whole instance down.
    shared = {"CACHE_NAMESPACE": namespace, "STREAM_LEADER_LEASE_S": str(LEASE_S),
              "GATEWAY_SERVER": "uvicorn"}  # fmt: skip
    with (
        stream_gateway(emulator_process, redis_url, tmp_path / "a", GATEWAY_INSTANCE="gw-a",
                       **shared) as first,
        stream_gateway(emulator_process, redis_url, tmp_path / "b", GATEWAY_INSTANCE="gw-b",
                       **shared) as second,
    ):  # fmt: skip
        got_first: list[dict[str, Any]] = []
        got_second: list[dict[str, Any]] = []
        async with running(bot(first, got_first, "AAPL")):
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
            async with (
                running(bot(second, got_second, "MSFT")),
                raw(second.ws_url("/v2/iex"), use_msgpack=True) as watcher,
            ):
                await authed(second, watcher, quotes=["MSFT"])
                # The second instance's wants reach the leader: one connection holds both.
                await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
                [connection] = await emulator.streams.connections("iex")
                assert connection["subscriptions"]["quotes"] == ["AAPL", "MSFT"]
                await emulator.streams.push("iex", [quote("AAPL", "1.5"), quote("MSFT", "2.5")])
                await eventually(lambda: len(got_first) == len(got_second) == 1, "both bots")
                assert (await watcher.recv())[0]["S"] == "MSFT"

                leader = leader_of(redis_url, namespace)
                assert leader.startswith("gw-a:"), "the first instance to want the feed leads"
                first.served.kill()  # the server and its worker: no goodbye, no release

                [gap] = await watcher.recv(timeout_s=4 * LEASE_S + 5)
                assert gap["T"] == "gap"
                await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
                await emulator.streams.push("iex", [quote("MSFT", "2.75", 1)])
                await eventually(lambda: len(got_second) == 2, "the survivor's bot, again")
                assert leader_of(redis_url, namespace).startswith("gw-b:")
                assert len(await emulator.streams.connections("iex")) == 1
    assert [m["bp"] for m in got_second] == [2.5, 2.75]
    # The first connection, then the survivor's: one more, perhaps after one 406 while the
    # killed connection's slot was still taken; never a storm.
    assert 2 <= await emulator.streams.attempts("iex") <= 3


def leader_of(redis_url: str, namespace: str) -> str:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        holder = client.get(f"{namespace}:stream:{{iex}}:leader")
    finally:
        client.close()
    assert isinstance(holder, str), "no instance holds the iex lease"
    return holder
