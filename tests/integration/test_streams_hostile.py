"""Stream clients that try to take more of the gateway than their share: one that asks and
asks and never reads is cut off (Alpaca's 407) within its buffer's bytes while the others keep
receiving; a key holds at most STREAM_MAX_CLIENTS_PER_KEY connections (Alpaca's 406 past it); a
message larger than a client may send is never read (closed 1009, nothing sent upstream); a
deeply nested one is invalid syntax (400), never a traceback; and a failed re-auth on trade
updates ends the authorization it replaces."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Order
from alpaca.trading.requests import LimitOrderRequest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.support.streams import (
    WAIT_S,
    Raw,
    StreamGateway,
    eventually,
    quote,
    raw,
    stalled_client,
    stream_gateway,
)

pytestmark = pytest.mark.integration

BUFFER_BYTES = 256 * 2**10
PER_KEY = 100  # STREAM_MAX_CLIENTS_PER_KEY's default
PRE_AUTH_BYTES = 64 * 2**10  # the fixed limit before auth
MAX_MESSAGE_BYTES = 2**20  # STREAM_MAX_MESSAGE_BYTES's default
AUTHENTICATED = [{"T": "success", "msg": "authenticated"}]
# 2,000 three-letter symbols on quotes and trades: a `subscription` answer of about 50 KB (trades
# are listed thrice: trades, corrections, cancelErrors).
SYMBOLS = ["".join(s) for s in itertools.product(string.ascii_uppercase, repeat=3)][:2000]


@pytest.fixture(scope="module", params=["granian", "uvicorn"])
def gateway(
    request: pytest.FixtureRequest,
    emulator_process: EmulatorProcess,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StreamGateway]:
    """On both servers: each has its own way with a client that sends too much, or never reads.
    A frame bound no client reaches here: whatever cuts a client off is its bytes."""
    tmp_path: Path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    settings = {
        "GATEWAY_SERVER": request.param,
        "STREAM_CLIENT_BUFFER_FRAMES": "100000",
        "STREAM_CLIENT_BUFFER_BYTES": str(BUFFER_BYTES),
    }
    with stream_gateway(emulator_process, redis_url, tmp_path, **settings) as served:
        yield served


def error(code: int, msg: str) -> list[dict[str, object]]:
    return [{"T": "error", "code": code, "msg": msg}]


async def authed(gateway: StreamGateway, client: Raw, **subscribe: list[str]) -> None:
    assert await client.auth_reply(gateway.key_id, gateway.secret) == AUTHENTICATED
    if subscribe:
        await client.send({"action": "subscribe", **subscribe})
        [answer] = await client.recv()
        assert answer["T"] == "subscription"


def slow_disconnects(gateway: StreamGateway) -> float:
    return gateway.metric("gateway_stream_slow_client_disconnects_total", feed="iex")


async def closed_with(ws: ClientConnection, wait_s: float = WAIT_S) -> tuple[list[Any], int | None]:
    """Every message left (gap notices left out: an emulator reset drops the gateway's
    connection to it), then the close code the gateway sent (None: no close frame, or still
    open after `wait_s` without a frame)."""
    messages: list[Any] = []
    try:
        while True:
            frame = await asyncio.wait_for(ws.recv(), wait_s)
            decoded = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)
            messages.extend(m for m in decoded if m.get("T") != "gap")
    except TimeoutError:
        return messages, None
    except ConnectionClosed as closed:
        return messages, None if closed.rcvd is None else closed.rcvd.code


async def test_a_client_that_asks_and_never_reads_is_cut_off_within_its_bytes(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    got: list[dict[str, Any]] = []

    async def read(client: Raw) -> None:
        while True:
            got.extend(m for m in await client.recv(timeout_s=60) if m.get("T") == "q")

    pushed = 0
    async with (
        raw(gateway.ws_url("/v2/iex"), use_msgpack=True) as reader,
        stalled_client(gateway) as spammer,
        contextlib.AsyncExitStack() as stack,
    ):
        await authed(gateway, reader, quotes=["AAPL"])
        reading = asyncio.create_task(read(reader))
        stack.callback(reading.cancel)
        await authed(gateway, spammer, quotes=SYMBOLS, trades=SYMBOLS)
        await emulator.streams.wait_for_subscriber("iex", "quotes", "AAPL", timeout_s=WAIT_S)
        before = slow_disconnects(gateway)
        asked = 0
        # Each empty subscribe is answered with the whole subscription (~50 KB), which the
        # spammer never reads: the sockets' buffers fill (a few MB: 60-70 answers), then its
        # buffer here (256 KiB: 5 answers), and it is cut off.
        while slow_disconnects(gateway) == before:
            # The frame bound (100,000 answers) alone would let it hold gigabytes.
            assert asked < 600, "the unread answers were never bounded"
            for _ in range(10):
                await spammer.send({"action": "subscribe"})
            asked += 10
            await emulator.streams.push("iex", [quote("AAPL", f"{1 + pushed / 100:.2f}", pushed)])
            pushed += 1
        await emulator.streams.push("iex", [quote("AAPL", "9.99", pushed)])
        pushed += 1
        await eventually(lambda: len(got) == pushed, "every quote for the client that reads")
        messages, code = await closed_with(spammer.ws)
    assert messages[-1:] == error(407, "slow client")
    assert code == 1008
    assert all(message["T"] == "subscription" for message in messages[:-1])
    bids = [float(f"{1 + n / 100:.2f}") for n in range(pushed - 1)]
    assert [m["bp"] for m in got] == [*bids, 9.99]  # the other client missed nothing
    assert slow_disconnects(gateway) == before + 1


async def test_a_key_holds_at_most_its_connections_and_an_ended_one_frees_its_slot(
    gateway: StreamGateway,
) -> None:
    prefix, key_hex, secret = gateway.create_key("data:read,trading:read").split("_", 2)
    key_id = f"{prefix}_{key_hex}"
    url = gateway.ws_url("/v2/iex")
    async with contextlib.AsyncExitStack() as stack:
        # Connections that have not authenticated, or failed to, count for nothing.
        for _ in range(3):
            await stack.enter_async_context(raw(url))
        failed = await stack.enter_async_context(raw(url))
        assert await failed.auth_reply(key_id, "wrong") == error(402, "auth failed")
        held: list[Raw] = []
        for _ in range(PER_KEY):
            client = await stack.enter_async_context(raw(url, use_msgpack=True))
            assert await client.auth_reply(key_id, secret) == AUTHENTICATED
            held.append(client)

        extra = await stack.enter_async_context(raw(url))
        assert await extra.auth_reply(key_id, secret) == error(406, "connection limit exceeded")
        trading = await stack.enter_async_context(trade_updates(gateway))
        assert await authenticate(trading, key_id, secret) == authorization("unauthorized")
        other = await stack.enter_async_context(raw(url))  # another key: its own slots
        assert await other.auth_reply(gateway.key_id, gateway.secret) == AUTHENTICATED

        await held[0].send({"action": "subscribe", "quotes": ["AAPL"]})  # the first still works
        [answer] = await held[0].recv()
        assert (answer["T"], answer["quotes"]) == ("subscription", ["AAPL"])

        # A clean close frees a slot: the refused connection, still open, may try again.
        await held.pop().ws.close()
        await retried(lambda: extra.auth_reply(key_id, secret), AUTHENTICATED)
        # So does a connection dropped without a close frame.
        held.pop().ws.transport.abort()
        await retried(lambda: authenticate(trading, key_id, secret), authorization("authorized"))


async def retried(attempt: Callable[[], Awaitable[object]], wanted: object) -> None:
    """`attempt()` again until it answers `wanted` (a slot is freed once the gateway has seen
    the connection end)."""
    deadline = time.monotonic() + WAIT_S
    while (answer := await attempt()) != wanted:
        assert time.monotonic() < deadline, f"still {answer}"
        await asyncio.sleep(0.05)


def padded(message: dict[str, Any], size: int, *, use_msgpack: bool) -> bytes | str:
    """`message` made exactly `size` bytes long: JSON with trailing blanks, or MessagePack with
    a `pad` field (a channel no feed has, which the gateway ignores)."""
    if not use_msgpack:
        text = json.dumps(message)
        return text + " " * (size - len(text))
    fill = size - len(msgpack.packb({**message, "pad": ""}))
    packed: bytes = msgpack.packb({**message, "pad": "x" * fill})
    while len(packed) > size:  # the string's own header grows with it
        fill -= 1
        packed = msgpack.packb({**message, "pad": "x" * fill})
    assert len(packed) == size
    return packed


@pytest.mark.parametrize("use_msgpack", [False, True], ids=["json", "msgpack"])
async def test_a_message_larger_than_allowed_before_auth_is_never_read(
    gateway: StreamGateway, use_msgpack: bool
) -> None:
    auth = {"action": "auth", "key": gateway.key_id, "secret": gateway.secret}
    url = gateway.ws_url("/v2/iex")
    async with raw(url, use_msgpack=use_msgpack) as client:  # at the limit: read
        await client.ws.send(padded(auth, PRE_AUTH_BYTES, use_msgpack=use_msgpack))
        assert await client.recv() == AUTHENTICATED
    async with raw(url, use_msgpack=use_msgpack) as client:
        await client.ws.send(padded(auth, PRE_AUTH_BYTES + 1, use_msgpack=use_msgpack))
        assert await closed_with(client.ws, 2) == ([], 1009)  # never authenticated


@pytest.mark.parametrize("use_msgpack", [False, True], ids=["json", "msgpack"])
async def test_a_message_larger_than_allowed_after_auth_is_never_read_nor_sent_upstream(
    gateway: StreamGateway, emulator: EmulatorControl, use_msgpack: bool
) -> None:
    url = gateway.ws_url("/v2/iex")
    async with raw(url, use_msgpack=use_msgpack) as client:
        await authed(gateway, client)
        near = {"action": "subscribe", "quotes": ["NEAR"]}
        await client.ws.send(padded(near, MAX_MESSAGE_BYTES, use_msgpack=use_msgpack))
        [answer] = await client.recv()
        assert answer["quotes"] == ["NEAR"]  # at the limit: read
        await emulator.streams.wait_for_subscriber("iex", "quotes", "NEAR", timeout_s=WAIT_S)
        over = {"action": "subscribe", "quotes": ["OVER"]}
        await client.ws.send(padded(over, MAX_MESSAGE_BYTES + 1, use_msgpack=use_msgpack))
        assert await closed_with(client.ws, 2) == ([], 1009)
    # Upstream subscriptions follow one another in order: once a later one is there, the
    # oversized one would have been sent before it.
    async with raw(url) as later:
        await authed(gateway, later, quotes=["LATER"])
        await emulator.streams.wait_for_subscriber("iex", "quotes", "LATER", timeout_s=WAIT_S)
    answered = [
        symbol
        for sent in await emulator.streams.sent("iex")
        for message in sent["frame"]
        if isinstance(message, dict) and message.get("T") == "subscription"
        for symbol in message.get("quotes", [])
    ]
    assert "NEAR" in answered
    assert "LATER" in answered
    assert "OVER" not in answered


async def test_deeply_nested_messages_are_invalid_syntax_and_never_a_traceback(
    gateway: StreamGateway,
) -> None:
    invalid = error(400, "invalid syntax")
    async with raw(gateway.ws_url("/v2/iex")) as client:
        for hostile in (
            "[" * 60_000,  # before auth: within its 64 KiB
            b"[" * 60_000,  # binary: neither MessagePack nor readable JSON
            b"\x91" * 60_000,  # MessagePack arrays in arrays
            b"\xdd\xff\xff\xff\xff",  # a MessagePack array of 4 Gi elements, in 5 bytes
            b"\xdf\xff\xff\xff\xff",  # ... a map
            b"\xdb\xff\xff\xff\xff",  # ... a 4 GiB string
        ):
            await client.ws.send(hostile)
            assert await client.recv() == invalid
        await authed(gateway, client)
        await client.ws.send("[" * 200_000)  # after auth: within its 1 MiB
        assert await client.recv() == invalid
        await client.send({"action": "subscribe", "quotes": ["AAPL"]})  # still served
        [answer] = await client.recv()
        assert answer["quotes"] == ["AAPL"]
    async with trade_updates(gateway) as trading:
        await trading.send("[" * 60_000)  # Alpaca documents no answer to an unreadable frame
        assert await authenticate(trading, gateway.key_id, gateway.secret) == authorization(
            "authorized"
        )
    await asyncio.sleep(0.2)  # what the sessions' ends would log
    log = gateway.served.log_path.read_text()
    assert "Traceback" not in log
    assert "RecursionError" not in log


# --- trade updates -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def trade_updates(gateway: StreamGateway) -> AsyncIterator[ClientConnection]:
    async with connect(
        gateway.ws_url("/stream"), proxy=None, ping_interval=None, open_timeout=WAIT_S,
        close_timeout=1,
    ) as ws:  # fmt: skip
        yield ws


def authorization(status: str, action: str = "authenticate") -> dict[str, object]:
    return {"stream": "authorization", "data": {"status": status, "action": action}}


LISTENING = {"stream": "listening", "data": {"streams": ["trade_updates"]}}


async def next_message(ws: ClientConnection, timeout_s: float = WAIT_S) -> dict[str, Any]:
    """The next frame, gap notices (an emulator reset drops the gateway's connection) left out."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
        if message.get("stream") != "gap":
            return message


async def authenticate(ws: ClientConnection, key_id: str, secret: str) -> dict[str, Any]:
    auth = {"action": "authenticate", "data": {"key_id": key_id, "secret_key": secret}}
    await ws.send(json.dumps(auth))
    return await next_message(ws)


async def listen(ws: ClientConnection) -> dict[str, Any]:
    await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    return await next_message(ws)


async def nothing_but_gaps(ws: ClientConnection, for_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await next_message(ws, for_s)
        return False
    return True


async def test_a_failed_reauth_on_trade_updates_ends_the_authorization(
    gateway: StreamGateway, emulator: EmulatorControl
) -> None:
    await emulator.set_state(assets=["AAPL"])
    trading = TradingClient(
        gateway.key_id, gateway.secret, paper=True, url_override=gateway.face_url
    )

    async def order() -> str:
        request = LimitOrderRequest(
            symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=150
        )
        submitted = await asyncio.to_thread(trading.submit_order, request)
        assert isinstance(submitted, Order)
        return str(submitted.id)

    key_id, secret = gateway.key_id, gateway.secret
    async with trade_updates(gateway) as watcher, trade_updates(gateway) as client:
        for ws in (watcher, client):
            assert await authenticate(ws, key_id, secret) == authorization("authorized")
            assert await listen(ws) == LISTENING
        await emulator.streams.wait_for_subscriber("trading", "trade_updates", "")
        first = await order()
        for ws in (watcher, client):
            assert (await next_message(ws))["data"]["order"]["id"] == first

        assert await authenticate(client, key_id, "wrong") == authorization("unauthorized")
        await emulator.set_order_status(first, "filled", filled_avg_price="149.75")
        assert (await next_message(watcher))["data"]["event"] == "fill"
        assert await nothing_but_gaps(client, 0.5)  # no longer authorized: nothing
        assert await listen(client) == authorization("unauthorized", "listen")

        assert await authenticate(client, key_id, secret) == authorization("authorized")
        assert await listen(client) == LISTENING
        second = await order()
        assert (await next_message(client))["data"]["order"]["id"] == second
