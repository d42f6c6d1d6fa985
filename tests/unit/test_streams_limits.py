"""What one stream client can hold of the gateway (app/streams): its buffer is bounded in bytes
as well as frames, the gateway's answers to it included; a message is never decoded past the
size a client may send, and a nested or lying one is an unreadable message, never an exception;
a key holds at most so many connections, and gives each back however it ends; a failed auth on
trade updates ends the authorization."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from app.metrics import Metrics
from app.streams.fanout import CONTROL_HEADROOM, FeedHub, Frame, KeySlots, StreamClient
from app.streams.feeds import BY_NAME, FeedName
from app.streams.session import (
    CLOSE_TOO_BIG,
    PRE_AUTH_MAX_MESSAGE_BYTES,
    Admission,
    ClientSession,
    Verdict,
)
from app.streams.wire import WireError, decode_client, longer_than

IEX, TRADING = BY_NAME["iex"], BY_NAME["trade_updates"]
KEY, SECRET = "gw_0123", "right"
SLOW = [{"T": "error", "code": 407, "msg": "slow client"}]


# --- the buffer's bytes ------------------------------------------------------------------------


def test_a_buffer_refuses_a_frame_past_its_bytes_and_frees_them_as_frames_are_taken() -> None:
    client = StreamClient(IEX, "msgpack", 1000, buffer_bytes=1000)
    assert client.offer(b"x" * 600)
    assert client.offer(b"x" * 400)  # exactly the bound
    assert not client.offer(b"x")
    assert client.buffered_bytes == 1000

    async def take() -> None:
        frame, _ = await client.next_frame()
        assert frame == b"x" * 600

    asyncio.run(take())
    assert client.buffered_bytes == 400
    assert client.offer("y" * 600)  # text: ASCII JSON, a character a byte
    assert not client.offer(b"x")


def test_one_frame_larger_than_the_bound_is_taken_when_nothing_else_waits() -> None:
    client = StreamClient(IEX, "msgpack", 1000, buffer_bytes=1000)
    assert client.offer(b"x" * 5000)
    assert not client.offer(b"x")


def test_the_frame_bound_still_holds_and_answers_have_frames_of_headroom_not_bytes() -> None:
    client = StreamClient(IEX, "msgpack", 2, buffer_bytes=1000)
    assert client.offer(b"a")
    assert client.offer(b"b")
    assert not client.offer(b"c")
    assert client.offer(b"c", headroom=1)
    assert not client.offer(b"x" * 998, headroom=CONTROL_HEADROOM)  # 1001 bytes


def test_a_client_that_keeps_asking_and_never_reads_is_slow_within_its_bytes() -> None:
    metrics = Metrics()
    hub = FeedHub(IEX, metrics)
    client = StreamClient(IEX, "json", 100_000, buffer_bytes=64 * 2**10)
    hub.join(client)
    answer = [{"T": "subscription", "quotes": [f"S{n:04d}" for n in range(1000)]}]
    size = len(json.dumps(answer, separators=(",", ":")))  # about 8 KB
    asked = 0
    while not client.ended.is_set():
        assert asked < 100, "the answers were never bounded"
        hub.answer(client, answer)
        asked += 1
    assert asked == 64 * 2**10 // size + 1  # the first answer past the bound
    assert client.slow
    assert hub.clients == 0
    assert client.buffered_bytes == len('[{"T":"error","code":407,"msg":"slow client"}]')
    slow = metrics.registry.get_sample_value(
        "gateway_stream_slow_client_disconnects_total", {"feed": "iex"}
    )
    assert slow == 1


# --- what a client sends -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "[" * 200_000,
        b"[" * 200_000,  # a binary frame: not MessagePack, then JSON
        '{"action":"auth","key":' + "[" * 100_000 + "]" * 100_000 + "}",
        b"\x91" * 100_000,  # MessagePack arrays in arrays
        b"\xdd\xff\xff\xff\xff\x01",  # an array of 4 Gi elements, in 6 bytes
        b"\xdf\xff\xff\xff\xff\x01",  # a map of as many pairs
        b"\xdb\xff\xff\xff\xff\x01",  # a 4 GiB string
        b"\xc9\xff\xff\xff\xff\x01\x02",  # a 4 GiB extension
        b"\xff\xfe",  # neither MessagePack nor UTF-8
        "1" * 50_000,  # a number Python will not convert
    ],
    ids=lambda data: repr(data[:12]),
)
def test_a_nested_or_lying_message_is_unreadable_never_an_exception(data: bytes | str) -> None:
    with pytest.raises(WireError):
        decode_client(data)


def test_readable_messages_still_decode() -> None:
    message = {"action": "subscribe", "quotes": ["AAPL"]}
    assert decode_client(json.dumps(message)) == message
    assert decode_client(json.dumps(message).encode()) == message
    assert decode_client(msgpack.packb(message)) == message


def test_a_message_is_measured_in_the_bytes_it_arrived_as() -> None:
    assert not longer_than(b"x" * 10, 10)
    assert longer_than(b"x" * 11, 10)
    assert not longer_than("x" * 10, 10)
    assert longer_than("x" * 11, 10)
    assert not longer_than("é" * 5, 10)
    assert longer_than("é" * 6, 10)
    assert longer_than("€" * 4, 10)  # three bytes each: 12
    assert not longer_than("𝄞" * 2, 10)  # four bytes each: 8


# --- the key's connections --------------------------------------------------------------------


def test_a_key_holds_at_most_its_slots_and_each_release_frees_one() -> None:
    slots = KeySlots()
    assert slots.claim("a", 2)
    assert slots.claim("a", 2)
    assert not slots.claim("a", 2)
    assert slots.claim("b", 2)  # every key its own
    slots.release("a")
    assert slots.held("a") == 1
    assert slots.claim("a", 2)
    for _ in range(3):
        slots.release("a")
    assert slots.held("a") == 0
    assert slots.claim("a", 1)


# --- sessions ----------------------------------------------------------------------------------


@dataclass
class Socket:
    """A client as the session sees it: what it sends, then (None) it goes, unless it stays."""

    incoming: asyncio.Queue[bytes | str | None] = field(default_factory=asyncio.Queue)
    sent: list[Any] = field(default_factory=list)
    closed: int | None = None

    async def receive(self) -> bytes | str | None:
        return await self.incoming.get()

    async def send(self, frame: Frame) -> None:
        self.sent.append(json.loads(frame))

    async def close(self, code: int, reason: str) -> None:
        self.closed = code

    async def answer(self, count: int = 1) -> list[Any]:
        """The next `count` messages sent."""
        for _ in range(200):
            if len(self.sent) >= count:
                break
            await asyncio.sleep(0.005)
        answers, self.sent[:count] = self.sent[:count], []
        return answers

    async def close_code(self) -> int | None:
        """The code the session closed the connection with (None: still open after a second)."""
        for _ in range(200):
            if self.closed is not None:
                break
            await asyncio.sleep(0.005)
        return self.closed


@dataclass
class Authenticator:
    calls: int = 0

    async def __call__(self, key: str, secret: str) -> Verdict:
        self.calls += 1
        if key == KEY and secret == SECRET:
            return Verdict(Admission.ADMITTED, KEY)
        return Verdict(Admission.REFUSED)


@asynccontextmanager
async def session(
    feed: FeedName = "iex", *, slots: KeySlots | None = None, per_key: int = 100
) -> AsyncIterator[tuple[Socket, ClientSession, FeedHub, Authenticator]]:
    hub = FeedHub(BY_NAME[feed], Metrics())
    socket, authenticate = Socket(), Authenticator()
    serving = ClientSession(
        socket,
        hub,
        StreamClient(hub.feed, "json", 100),
        authenticate,
        auth_timeout_s=5.0,
        max_message_bytes=100_000,
        key_slots=slots,
        max_clients_per_key=per_key,
    )
    running = asyncio.create_task(serving.run())
    try:
        yield socket, serving, hub, authenticate
    finally:
        socket.incoming.put_nowait(None)
        await asyncio.wait_for(running, 5)


def auth(secret: str = SECRET) -> str:
    return json.dumps({"action": "auth", "key": KEY, "secret": secret})


def authenticate(secret: str = SECRET) -> str:
    return json.dumps({"action": "authenticate", "data": {"key_id": KEY, "secret_key": secret}})


LISTEN = json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}})


def authorization(status: str, action: str = "authenticate") -> dict[str, object]:
    return {"stream": "authorization", "data": {"status": status, "action": action}}


async def test_a_message_past_the_limit_is_never_read_and_closes_1009() -> None:
    async with session() as (socket, _, _, authenticator):
        await socket.answer()  # connected
        socket.incoming.put_nowait(auth() + " " * (PRE_AUTH_MAX_MESSAGE_BYTES - len(auth()) + 1))
        assert await socket.close_code() == CLOSE_TOO_BIG
        assert authenticator.calls == 0
        assert socket.sent == []

    async with session() as (socket, _, _, authenticator):
        await socket.answer()
        socket.incoming.put_nowait(auth() + " " * (PRE_AUTH_MAX_MESSAGE_BYTES - len(auth())))
        assert await socket.answer() == [[{"T": "success", "msg": "authenticated"}]]
        subscribe = json.dumps({"action": "subscribe", "quotes": ["AAPL"]})
        socket.incoming.put_nowait(subscribe + " " * (100_000 - len(subscribe)))  # the limit
        [[answer]] = await socket.answer()
        assert answer["quotes"] == ["AAPL"]
        socket.incoming.put_nowait(subscribe + " " * (100_001 - len(subscribe)))
        assert await socket.close_code() == CLOSE_TOO_BIG
        assert socket.sent == []


async def test_past_its_slots_a_key_is_refused_406_and_an_ended_session_frees_its_slot() -> None:
    slots = KeySlots()
    async with session(slots=slots, per_key=1) as (first, _, _, _):
        await first.answer()
        first.incoming.put_nowait(auth())
        assert await first.answer() == [[{"T": "success", "msg": "authenticated"}]]
        async with session(slots=slots, per_key=1) as (second, _, _, _):
            await second.answer()
            second.incoming.put_nowait(auth("wrong"))  # a failed auth holds nothing
            assert await second.answer() == [[{"T": "error", "code": 402, "msg": "auth failed"}]]
            second.incoming.put_nowait(auth())
            refused = [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
            assert await second.answer() == [refused]
            assert slots.held(KEY) == 1
    assert slots.held(KEY) == 0  # both ended: the authenticated one gave its slot back

    async with session(slots=slots, per_key=1) as (third, _, _, _):
        await third.answer()
        third.incoming.put_nowait(auth())
        assert await third.answer() == [[{"T": "success", "msg": "authenticated"}]]
        third.incoming.put_nowait("x" * (100_001))  # ended by the client's own message
        assert await third.close_code() == CLOSE_TOO_BIG
    assert slots.held(KEY) == 0


async def test_a_trade_updates_key_past_its_slots_is_unauthorized() -> None:
    slots = KeySlots()
    slots.claim(KEY, 1)
    async with session("trade_updates", slots=slots, per_key=1) as (socket, _, _, _):
        socket.incoming.put_nowait(authenticate())
        assert await socket.answer() == [authorization("unauthorized")]
        slots.release(KEY)
        socket.incoming.put_nowait(authenticate())
        assert await socket.answer() == [authorization("authorized")]
        assert slots.held(KEY) == 1
    assert slots.held(KEY) == 0


async def test_a_failed_reauth_on_trade_updates_ends_the_authorization() -> None:
    slots = KeySlots()
    async with session("trade_updates", slots=slots) as (socket, _, hub, _):
        socket.incoming.put_nowait(authenticate())
        socket.incoming.put_nowait(LISTEN)
        listening = {"stream": "listening", "data": {"streams": ["trade_updates"]}}
        assert await socket.answer(2) == [authorization("authorized"), listening]
        assert hub.clients == 1
        assert slots.held(KEY) == 1

        socket.incoming.put_nowait(authenticate("wrong"))
        assert await socket.answer() == [authorization("unauthorized")]
        assert hub.clients == 0
        assert slots.held(KEY) == 0
        hub.on_trade_update(b'{"stream":"trade_updates"}', 0.0)
        socket.incoming.put_nowait(LISTEN)
        assert await socket.answer() == [authorization("unauthorized", "listen")]

        socket.incoming.put_nowait(authenticate())
        socket.incoming.put_nowait(LISTEN)
        assert await socket.answer(2) == [authorization("authorized"), listening]
        assert hub.clients == 1
        assert slots.held(KEY) == 1
