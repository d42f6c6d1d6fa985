"""The gateway's one connection per feed when Alpaca misbehaves, and clients that do: a 406
is waited out (no reconnect storm), a 429 at the upgrade is honoured, a dropped or mute socket
is replaced and clients are told a gap happened, and a client that stops reading is told and
disconnected while the others keep receiving everything."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alpaca.data.live.stock import StockDataStream
from websockets.exceptions import ConnectionClosed

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.support.streams import (
    WAIT_S,
    Listener,
    Raw,
    StreamGateway,
    eventually,
    gateway,
    listen,
    percentile,
    quote,
    raw,
    running,
    same_values,
    stalled_client,
    stream_gateway,
)

pytestmark = pytest.mark.integration
__all__ = ["gateway"]  # the fixture, imported for this module's tests


def bot(gateway: StreamGateway, got: list[dict[str, Any]], *symbols: str) -> StockDataStream:
    async def keep(message: dict[str, Any]) -> None:
        got.append(message)

    stream = StockDataStream(
        gateway.key_id, gateway.secret, raw_data=True, url_override=gateway.ws_url("/v2/iex")
    )
    stream.subscribe_quotes(keep, *symbols)
    return stream


async def authed(gateway: StreamGateway, client: Raw, **subscribe: list[str]) -> None:
    await client.send({"action": "auth", "key": gateway.key_id, "secret": gateway.secret})
    assert await client.recv() == [{"T": "success", "msg": "authenticated"}]
    await client.send({"action": "subscribe", **subscribe})
    [answer] = await client.recv()
    assert answer["T"] == "subscription"


async def test_a_406_is_waited_out_without_a_reconnect_storm(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    await emulator.add_fault("/v2/iex", "stream_connection_limit", count=2)
    got: list[dict[str, Any]] = []
    async with running(bot(gateway, got, "AAPL")):
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
        await emulator.streams.push("iex", [quote("AAPL", "229.85")])
        await eventually(lambda: len(got) == 1, "the quote after the 406s")
        settled = await emulator.streams.attempts("iex")
        await asyncio.sleep(1.5)  # longer than the 406 wait: a storm would show more attempts
        assert await emulator.streams.attempts("iex") == settled
    # Two refused (each followed by STREAM_CONNECTION_LIMIT_WAIT_S), then the one that streams.
    assert settled == 3
    assert same_values(got[0], quote("AAPL", "229.85"))
    limited = gateway.metric(
        "gateway_stream_upstream_attempts_total", feed="iex", outcome="connection_limit"
    )
    assert limited == 2


async def test_symbols_alpaca_refused_at_its_limit_are_asked_for_again_once_there_is_room(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    await emulator.streams.configure(symbol_limit=2)
    refused = [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
    async with raw(gateway.ws_url("/v2/iex")) as first, raw(gateway.ws_url("/v2/iex")) as second:
        await authed(gateway, first, quotes=["AAPL", "MSFT"])
        await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
        await authed(gateway, second, quotes=["IBM"])
        # The one connection would hold 3 > 2: Alpaca refuses, and the bot that wants IBM
        # hears it; the other has nothing to do with it.
        assert await second.recv() == refused
        assert await first.quiet(0.5)

        await first.send({"action": "unsubscribe", "quotes": ["MSFT"]})
        [answer] = await first.recv()
        assert answer["quotes"] == ["AAPL"]
        # MSFT's slot is free: IBM, still wanted, is asked for again and streams.
        await emulator.streams.wait_for_subscriber("iex", "quotes", "IBM")
        await emulator.streams.push("iex", [quote("IBM", "181.5")])
        [tick] = await second.recv()
        [connection] = await emulator.streams.connections("iex")
    assert (tick["S"], tick["bp"]) == ("IBM", 181.5)
    assert sorted(connection["subscriptions"]["quotes"]) == ["AAPL", "IBM"]


async def test_a_refused_symbol_is_not_asked_again_at_every_lease_tick_nor_blocks_others(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # The leader re-reads every instance's wants three times a lease: a refused subscribe must
    # not be sent again each time (each one a 405 for every bot), and a symbol that fits on its
    # own must not be refused for riding along with it.
    await emulator.streams.configure(symbol_limit=3)
    refused = [{"T": "error", "code": 405, "msg": "symbol limit exceeded"}]
    with stream_gateway(emulator_process, redis_url, tmp_path, STREAM_LEADER_LEASE_S="0.6") as gw:
        async with raw(gw.ws_url("/v2/iex")) as first, raw(gw.ws_url("/v2/iex")) as second:
            await authed(gw, first, quotes=["AAPL", "MSFT"])
            await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
            await authed(gw, second, quotes=["IBM", "TSLA"])  # 4 > 3
            assert await second.recv() == refused
            assert await second.quiet(1.5), "asked again (and refused again) at a lease tick"
            assert await first.quiet(0.1), "told of a refusal of symbols it never asked for"

            await second.send({"action": "subscribe", "quotes": ["NVDA"]})
            await second.recv()  # its own subscription
            await emulator.streams.wait_for_subscriber("iex", "quotes", "NVDA")
            [connection] = await emulator.streams.connections("iex")
    assert sorted(connection["subscriptions"]["quotes"]) == ["AAPL", "MSFT", "NVDA"]


async def test_a_feed_nobody_wants_is_closed_after_the_idle_setting_and_reopened_on_demand(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # Alpaca's one slot per feed is the account's: a feed nobody streams must give it back.
    with stream_gateway(emulator_process, redis_url, tmp_path, STREAM_IDLE_CLOSE_S="0.5") as gw:
        async with raw(gw.ws_url("/v2/iex")) as client:
            await authed(gw, client, quotes=["AAPL"])
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL")
        await eventually_async(
            lambda: emulator.streams.connections("iex"), lambda conns: conns == [], "closed"
        )
        async with raw(gw.ws_url("/v2/iex")) as client:
            await authed(gw, client, quotes=["MSFT"])
            await emulator.streams.wait_for_subscriber("iex", "quotes", "MSFT")
            await emulator.streams.push("iex", [quote("MSFT", "420.5")])
            [tick] = await client.recv()  # the quote, and no gap: nobody was listening
        attempts = (await emulator.streams.state())["attempts"]["/v2/iex"]
        gaps = gw.metric("gateway_stream_gaps_total", feed="iex")
    assert (tick["S"], tick["bp"]) == ("MSFT", 420.5)
    assert attempts == 2
    assert gaps == 0


async def eventually_async(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str
) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done(await read()):
        assert time.monotonic() < deadline, f"never {what}"
        await asyncio.sleep(0.05)


async def test_a_feed_outside_the_plan_is_refused_at_auth_as_alpaca_does_so_alpaca_py_stops(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # Alpaca says 409 insufficient subscription at auth, and alpaca-py stops on it there. The
    # gateway authenticates bots itself: once Alpaca has refused the feed, it says so at auth
    # too, and stops saying it once Alpaca accepts the connection (the plan was upgraded).
    await emulator.configure(plan="free")
    insufficient = [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
    with stream_gateway(emulator_process, redis_url, tmp_path, STREAM_RECONNECT_MAX_S="1") as gw:
        async with raw(gw.ws_url("/v2/sip")) as first:
            await authed(gw, first, quotes=["AAPL"])  # nothing known yet: admitted
            assert await first.recv() == insufficient  # Alpaca's answer, passed on
        sdk = StockDataStream(gw.key_id, gw.secret, url_override=gw.ws_url("/v2/sip"))
        sdk.subscribe_quotes(_ignore, "AAPL")
        await asyncio.wait_for(sdk._run_forever(), WAIT_S)  # returns: the SDK gave up, cleanly

        await emulator.configure(plan="unlimited")
        deadline = time.monotonic() + WAIT_S
        async with raw(gw.ws_url("/v2/sip")) as later:
            # Refused (the connection stays open) until the gateway's next try is accepted.
            while True:
                await later.send({"action": "auth", "key": gw.key_id, "secret": gw.secret})
                answer = await later.recv()
                if answer == [{"T": "success", "msg": "authenticated"}]:
                    break
                assert answer == insufficient
                assert time.monotonic() < deadline, "still refused after the upgrade"
                await asyncio.sleep(0.1)
        assert await emulator.streams.attempts("sip") >= 2


async def _ignore(message: object) -> None:
    return None


async def test_a_429_at_the_upgrade_is_honoured(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    await emulator.add_fault("/v2/iex", "rate_limited", count=1, retry_after_s=1)
    got: list[dict[str, Any]] = []
    async with running(bot(gateway, got, "AAPL")):
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
        await emulator.streams.push("iex", [quote("AAPL", "229.85")])
        await eventually(lambda: len(got) == 1, "the quote after the 429")
    assert await emulator.streams.attempts("iex") == 2
    assert (
        gateway.metric("gateway_stream_upstream_attempts_total", feed="iex", outcome="rate_limited")
        == 1
    )


async def test_a_dropped_connection_is_replaced_and_clients_are_told_of_the_gap(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    # Alpaca keeps an uncleanly dropped connection's slot ~90 s; the emulator, 1.5 s here.
    await emulator.streams.configure(slot_release_ms=1500)
    got: list[dict[str, Any]] = []
    async with (
        running(bot(gateway, got, "AAPL")),
        raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as watcher,
    ):
        await authed(gateway, watcher, quotes=["AAPL"])
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
        await emulator.streams.push("iex", [quote("AAPL", "1.25")])
        await eventually(lambda: len(got) == 1, "the quote before the drop")
        assert (await watcher.recv())[0]["bp"] == 1.25
        await emulator.add_fault("/v2/iex", "stream_disconnect", count=1)
        [gap] = await watcher.recv()
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
        await emulator.streams.push("iex", [quote("AAPL", "1.5", 1)])
        await eventually(lambda: len(got) == 2, "the quote after the reconnect")
        assert (await watcher.recv())[0]["bp"] == 1.5
    assert gap["T"] == "gap"
    assert gap["from"] <= gap["to"]
    assert "may be missing" in gap["msg"]
    assert [m["bp"] for m in got] == [1.25, 1.5]  # alpaca-py ignored the gap message
    assert gateway.metric("gateway_stream_gaps_total", feed="iex") == 1


async def test_a_mute_socket_is_treated_as_dead_after_the_silence_setting(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    with stream_gateway(emulator_process, redis_url, tmp_path, STREAM_SILENCE_S="1") as gateway:
        got: list[dict[str, Any]] = []
        async with running(bot(gateway, got, "AAPL")):
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
            first = (await emulator.streams.connections("iex"))[0]["id"]
            await emulator.add_fault("/v2/iex", "stream_mute", count=1)

            async def replaced() -> bool:
                conns = await emulator.streams.connections("iex")
                return (
                    bool(conns)
                    and conns[0]["id"] != first
                    and bool(conns[0]["subscriptions"]["quotes"])
                )

            deadline = time.monotonic() + WAIT_S
            while not await replaced():
                assert time.monotonic() < deadline, "the mute connection was never replaced"
                await asyncio.sleep(0.05)
            await emulator.streams.push("iex", [quote("AAPL", "2.5")])
            await eventually(lambda: len(got) == 1, "the quote on the new connection")
        dropped = gateway.metric(
            "gateway_stream_upstream_attempts_total", feed="iex", outcome="dropped"
        )
    assert dropped >= 1
    assert got[0]["bp"] == 2.5


async def test_a_quiet_socket_is_not_suspect_while_the_market_is_closed(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # Overnight a subscribed feed may be silent for hours: replacing it every STREAM_SILENCE_S
    # would tell bots of gaps that are none. Once Alpaca's clock says open, silence counts.
    clock = {
        "timestamp": "2025-06-24T20:15:22-04:00",
        "is_open": False,
        "next_open": "2025-06-25T09:30:00-04:00",
        "next_close": "2025-06-25T16:00:00-04:00",
    }
    await emulator.set_clock(clock)
    settings = {"STREAM_SILENCE_S": "0.5", "CLOCK_POLL_INTERVAL_S": "0.2"}
    with stream_gateway(emulator_process, redis_url, tmp_path, **settings) as gateway:
        got: list[dict[str, Any]] = []
        async with running(bot(gateway, got, "AAPL")):
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
            first = (await emulator.streams.connections("iex"))[0]["id"]
            await emulator.add_fault("/v2/iex", "stream_mute", count=1)
            await asyncio.sleep(2.5)  # five silences
            assert [c["id"] for c in await emulator.streams.connections("iex")] == [first]

            await emulator.set_clock({**clock, "is_open": True})
            deadline = time.monotonic() + WAIT_S
            while [c["id"] for c in await emulator.streams.connections("iex")] in ([first], []):
                assert time.monotonic() < deadline, "the mute connection was never replaced"
                await asyncio.sleep(0.05)
        dropped = gateway.metric(
            "gateway_stream_upstream_attempts_total", feed="iex", outcome="dropped"
        )
    assert dropped == 1


async def test_a_client_that_stops_reading_is_told_and_dropped_while_others_get_everything(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # Each push below is one frame from Alpaca, hence one frame per client: a client that
    # reads has at most a frame or two waiting, one that stopped fills its 8.
    settings = {"STREAM_CLIENT_BUFFER_FRAMES": "8"}
    with stream_gateway(emulator_process, redis_url, tmp_path, **settings) as gateway:
        got: list[dict[str, Any]] = []
        async with running(bot(gateway, got, "AAPL")), stalled_client(gateway) as stalled:
            await authed(gateway, stalled, quotes=["AAPL"])
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
            await eventually(lambda: gateway_clients(gateway) == 2, "both clients")
            pushed = 0
            # The stalled client reads nothing more: the sockets' buffers fill (a few MB),
            # then its buffer in the gateway, then it is dropped.
            while gateway.metric("gateway_stream_slow_client_disconnects_total", feed="iex") == 0:
                assert pushed < 100_000, "the stalled client was never disconnected"
                batch = [quote("AAPL", f"{100 + (pushed + n) / 100:.2f}", pushed + n)
                         for n in range(200)]  # fmt: skip
                await emulator.streams.push("iex", batch)
                pushed += len(batch)
            await emulator.streams.push("iex", [quote("AAPL", "9.99", pushed)])
            pushed += 1
            await eventually(lambda: len(got) == pushed, "every quote for the reading bot")
            told = await drain(stalled)
        assert told[-1] == [{"T": "error", "code": 407, "msg": "slow client"}]
        # The bot that kept reading got every quote, in order, none thinned out.
        assert [m["t"].to_unix_nano() for m in got] == sorted(m["t"].to_unix_nano() for m in got)
        assert got[-1]["bp"] == 9.99
        assert gateway_clients(gateway) == 0


READERS = 10  # well-behaved MessagePack clients whose delivery latency is measured
BATCHES = 80  # pushes per run, enough for a stalled client's buffers to fill (see below)
WARMUP = 5  # first pushes of each run, not measured
PER_BATCH = 400
ROUNDS = 3  # the best p99 of three: a loaded full run once lost two rounds in a row


async def test_a_client_that_stops_reading_does_not_raise_the_others_delivery_latency(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path, emulator: EmulatorControl
) -> None:
    # The same run twice on one gateway: READERS clients and one JSON client, which reads in
    # the first run and stops reading in the second. Latency: the emulator's push (just before
    # the test asks for it) to the frame's arrival at a reader, both on this machine's
    # monotonic clock, for every frame of every reader.
    settings = {"STREAM_CLIENT_BUFFER_FRAMES": "16", "LOG_LEVEL": "WARNING"}
    # ROUNDS rounds, alternating, the best p99 of each kind kept: one hiccup of a busy machine
    # (this test, the gateway and the emulator share two cores) is not the stalled client's.
    p99s: dict[str, list[float]] = {"calm": [], "stalled": []}
    told: list[list[Any]] = []
    with stream_gateway(emulator_process, redis_url, tmp_path, **settings) as gateway:
        for _ in range(ROUNDS):
            calm = await delivery_latencies(gateway, emulator)
            p99s["calm"].append(percentile(calm, 0.99))
            assert slow_disconnects(gateway) == len(told), "a reading client was dropped"
            async with stalled_client(gateway) as stalled:
                with_stalled = await delivery_latencies(gateway, emulator, stalled)
                p99s["stalled"].append(percentile(with_stalled, 0.99))
                told.append(await drain(stalled))
            sys.stdout.write(
                f"\ndelivery latency, {READERS} reading clients x {BATCHES - WARMUP} frames of"
                f" {PER_BATCH} quotes: p50 {percentile(calm, 0.5) * 1000:.1f} ms, p99"
                f" {p99s['calm'][-1] * 1000:.1f} ms with every client reading; p50"
                f" {percentile(with_stalled, 0.5) * 1000:.1f} ms, p99"
                f" {p99s['stalled'][-1] * 1000:.1f} ms with one client stalled (and dropped)\n"
            )
        dropped = slow_disconnects(gateway)
    assert all(frames[-1] == [{"T": "error", "code": 407, "msg": "slow client"}] for frames in told)
    assert dropped == ROUNDS
    # Generous: a gateway that waited on the stalled client would hold every frame behind it
    # for as long as the client stalls (here, until it is dropped).
    assert min(p99s["stalled"]) <= 2 * min(p99s["calm"]) + 0.1


def slow_disconnects(gateway: StreamGateway) -> float:
    return gateway.metric("gateway_stream_slow_client_disconnects_total", feed="iex")


async def delivery_latencies(
    gateway: StreamGateway, emulator: EmulatorControl, stalled: Raw | None = None
) -> list[float]:
    """Push BATCHES frames of PER_BATCH quotes (each batch's number in `bs`) to READERS
    MessagePack clients and one JSON client (`stalled`, which reads nothing after subscribing,
    or one that reads everything); each reader frame's latency in seconds, warm-up left out.
    With a stalled client, pushes on (unmeasured) until it was dropped."""
    readers = [Listener(first_only=True) for _ in range(READERS)]
    tasks = [asyncio.create_task(listen(gateway, r, quotes=["AAPL"])) for r in readers]
    try:
        async with contextlib.AsyncExitStack() as stack:
            if stalled is None:
                json_client = await stack.enter_async_context(raw(gateway.ws_url("/v2/iex")))
                await authed(gateway, json_client, quotes=["AAPL"])
                reading = asyncio.create_task(count_frames(json_client))
            else:
                await authed(gateway, stalled, quotes=["AAPL"])
            await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), WAIT_S)
            await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
            dropped_before = await asyncio.to_thread(slow_disconnects, gateway)
            sent_at: dict[int, float] = {}
            template = quote("AAPL", "1.25")
            for batch in range(BATCHES):
                quotes = [{**template, "bs": batch}] * PER_BATCH
                sent_at[batch] = time.monotonic()
                await emulator.streams.push("iex", quotes)
                await asyncio.sleep(0.005)
            await eventually(lambda: all(len(r.messages) == BATCHES for r in readers),
                             "every frame at every reader")  # fmt: skip
            extra = 0
            while stalled is not None and await asyncio.to_thread(
                slow_disconnects, gateway
            ) == dropped_before:  # fmt: skip
                assert extra < 1000, "the stalled client was never disconnected"
                more = [{**template, "bs": BATCHES}] * PER_BATCH
                await emulator.streams.push("iex", more)
                extra += 1
            if stalled is None:
                await json_client.ws.close()
                assert await reading >= BATCHES, "the reading JSON client got everything"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [
        arrived - sent_at[message["bs"]]
        for reader in readers
        for message, arrived in zip(reader.messages, reader.arrived, strict=True)
        if WARMUP <= message["bs"] < BATCHES
    ]


def gateway_clients(gateway: StreamGateway) -> float:
    return gateway.metric("gateway_stream_clients", feed="iex")


async def count_frames(client: Raw) -> int:
    """Read (not decode) every frame until the connection closes; how many."""
    frames = 0
    try:
        while True:
            await client.ws.recv()
            frames += 1
    except ConnectionClosed:
        return frames


async def drain(client: Raw) -> list[Any]:
    """Every frame left until the gateway closes the connection."""
    frames = []
    try:
        while True:
            frames.append(await client.recv())
    except ConnectionClosed:
        return frames
