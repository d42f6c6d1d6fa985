"""The served gateway in front of the emulator's streams, for tests/integration/test_streams_*:
a gateway key split the way alpaca-py's stream clients carry it, alpaca-py's run loop as a
task, a raw websocket client, and Alpaca-shaped ticks."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgpack
import pytest
from alpaca.data.live.websocket import DataStream
from alpaca.trading.stream import TradingStream
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.emulator.process import EmulatorProcess
from tests.emulator.timestamps import rfc3339_ns
from tests.served import REPO_ROOT, ServedGateway, emulator_env

WAIT_S = 10.0
MSGPACK = {"Content-Type": "application/msgpack"}
OCC = "AAPL270115C00230000"
QUOTE = {"T": "q", "S": "AAPL", "bx": "V", "bp": Decimal("229.85"), "bs": 2, "ax": "V",
         "ap": Decimal("229.90"), "as": 1, "c": ["R"], "z": "C",
         "t": "2024-07-24T13:56:53.639713735Z"}  # fmt: skip
TRADE = {"T": "t", "S": "AAPL", "i": 52983525029461, "x": "V", "p": Decimal("229.87"), "s": 100,
         "c": ["@"], "z": "C", "t": "2024-07-24T13:56:54.000000001Z"}  # fmt: skip
OPTION_QUOTE = {"T": "q", "S": OCC, "bx": "C", "bp": Decimal("31.2"), "bs": 12, "ax": "X",
                "ap": Decimal("31.65"), "as": 9, "c": "A",
                "t": "2024-07-24T13:56:53.1Z"}  # fmt: skip
OPTION_TRADE = {"T": "t", "S": OCC, "x": "C", "p": Decimal("31.4"), "s": 2, "c": "I",
                "t": "2024-07-24T13:56:55.123456789Z"}  # fmt: skip


@dataclass
class StreamGateway:
    served: ServedGateway
    key: str  # gw_<id>_<secret>, holding every scope

    @property
    def face_url(self) -> str:
        """The Alpaca-compatible face's REST base (alpaca-py's `url_override`)."""
        return self.served.base_url + "/alpaca"

    def create_key(self, scopes: str) -> str:
        return create_key(self.served.env, scopes)

    @property
    def key_id(self) -> str:
        """What alpaca-py sends as `key`: the key's public part, `gw_<id>`."""
        prefix, key_hex, _ = self.key.split("_", 2)
        return f"{prefix}_{key_hex}"

    @property
    def secret(self) -> str:
        return self.key.split("_", 2)[2]  # the secret may hold underscores itself

    def ws_url(self, path: str) -> str:
        return self.served.base_url.replace("http://", "ws://") + "/alpaca" + path

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 when absent); labels in any order."""
        text = httpx.get(self.served.base_url + "/metrics", timeout=5).text
        wanted = {f'{k}="{v}"' for k, v in labels.items()}
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric == name and set(filter(None, label_text.rstrip("}").split(","))) == wanted:
                return float(value)
        return 0.0


@contextmanager
def stream_gateway(
    emulator: EmulatorProcess, redis_url: str, tmp_path: Path, **settings: str
) -> Iterator[StreamGateway]:
    """`python -m app.serve` in front of the emulator, with a key made by the CLI."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    defaults = {
        "REDIS_URL": redis_url,
        "CACHE_NAMESPACE": f"test-{uuid.uuid4().hex}",
        "EMBEDDED_DB_PATH": str(tmp_path / "gateway.sqlite3"),
        "LOG_LEVEL": "INFO",
        "STREAM_RECONNECT_MIN_S": "0.2",
        "STREAM_RECONNECT_MAX_S": "2",
        "STREAM_CONNECTION_LIMIT_WAIT_S": "1",
    }
    env = emulator_env(emulator, **{**defaults, **settings})
    key = create_key(env, "data:read,trading:read,trading:write")
    with ServedGateway(env, tmp_path / "gateway.log") as served:
        yield StreamGateway(served, key)


@pytest.fixture
def gateway(
    emulator_process: EmulatorProcess, redis_url: str, tmp_path: Path
) -> Iterator[StreamGateway]:
    """`stream_gateway` with its defaults, for a test module that imports it (and names it in
    `__all__`)."""
    with stream_gateway(emulator_process, redis_url, tmp_path) as served:
        yield served


def create_key(env: Mapping[str, str], scopes: str) -> str:
    """A key made as an operator makes one (the CLI prints it as its last line)."""
    create = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "stream-test"]
    made = subprocess.run(
        [*create, "--scopes", scopes], cwd=REPO_ROOT, env=dict(env), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    return made.stdout.strip().splitlines()[-1]


@asynccontextmanager
async def running(
    stream: DataStream | TradingStream, wait_s: float = WAIT_S
) -> AsyncIterator[None]:
    """alpaca-py's own run loop (`_run_forever`) as a task of the test's event loop; it has
    `wait_s` to end once stopped."""
    task = asyncio.create_task(stream._run_forever())
    try:
        yield
    finally:
        await stream.stop_ws()
        await stream.close()
        await asyncio.wait_for(task, wait_s)


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def collector() -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Awaitable[None]]]:
    """A list, and a raw-data handler for alpaca-py that appends each message to it."""
    got: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        got.append(message)

    return got, keep


def same_values(received: Mapping[str, Any], pushed: Mapping[str, Any]) -> bool:
    """A message received over MessagePack equals the pushed one: floats equal the decimals,
    `t` is a Timestamp with the same nanosecond, same fields in the same order."""
    if list(received) != list(pushed):
        return False
    for name, value in pushed.items():
        got = received[name]
        if name == "t":
            if not isinstance(got, msgpack.Timestamp) or got.to_unix_nano() != rfc3339_ns(value):
                return False
        elif isinstance(value, Decimal):
            if not isinstance(got, float) or got != float(value):
                return False
        elif got != value:
            return False
    return True


def quote(symbol: str, bid: str, ns_later: int = 0) -> dict[str, Any]:
    seconds, nanos = divmod(rfc3339_ns(str(QUOTE["t"])) + ns_later, 1_000_000_000)
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
    return {**QUOTE, "S": symbol, "bp": Decimal(bid), "t": t}


class Raw:
    """A plain websocket client: JSON text (read with `decode`), or MessagePack with
    `use_msgpack`; a receive waits `wait_s` unless told otherwise."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        use_msgpack: bool,
        decode: Callable[[str], Any] = json.loads,
        wait_s: float = WAIT_S,
    ) -> None:
        self.ws = ws
        self.msgpack = use_msgpack
        self.decode = decode
        self.wait_s = wait_s

    async def send(self, value: object) -> None:
        await self.ws.send(msgpack.packb(value) if self.msgpack else json.dumps(value))

    async def auth_reply(self, key: str, secret: str) -> Any:
        await self.send({"action": "auth", "key": key, "secret": secret})
        return await self.recv()

    async def recv(self, timeout_s: float | None = None) -> Any:
        wait_s = self.wait_s if timeout_s is None else timeout_s
        frame = await asyncio.wait_for(self.ws.recv(), wait_s)
        if self.msgpack:
            assert isinstance(frame, bytes)
            return msgpack.unpackb(frame, timestamp=0)
        assert isinstance(frame, str), "JSON clients get text frames"
        return self.decode(frame)

    async def quiet(self, for_s: float = 0.3) -> bool:
        """True if nothing arrives for `for_s`."""
        try:
            await asyncio.wait_for(self.ws.recv(), for_s)
        except TimeoutError:
            return True
        return False


@asynccontextmanager
async def raw(
    url: str,
    *,
    use_msgpack: bool = False,
    headers: Mapping[str, str] | None = None,
    connected: bool = True,
    decode: Callable[[str], Any] = json.loads,
    wait_s: float = WAIT_S,
    **options: Any,
) -> AsyncIterator[Raw]:
    """A raw connection; with `connected` the `connected` welcome is read and checked."""
    sent = {**(MSGPACK if use_msgpack else {}), **(headers or {})}
    async with connect(
        url, additional_headers=sent, proxy=None,
        ping_interval=None, open_timeout=wait_s, close_timeout=1, **options,
    ) as ws:  # fmt: skip
        client = Raw(ws, use_msgpack=use_msgpack, decode=decode, wait_s=wait_s)
        if connected:
            assert await client.recv() == [{"T": "success", "msg": "connected"}]
        yield client


@dataclass
class Listener:
    """A lightweight MessagePack client on the gateway (no alpaca-py): authenticated and
    subscribed by `listen`, then every message it reads, each with the monotonic time its frame
    arrived; `closed` once the gateway (or its death) ended the connection."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    first_only: bool = False  # keep only each frame's first message (long runs, big frames)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("T") == kind]


async def listen(
    gateway: StreamGateway, listener: Listener, path: str = "/v2/iex", **subscribe: list[str]
) -> None:
    """Run `listener` until cancelled or closed: connect, authenticate with the gateway's key,
    subscribe, then read (a task per client; a thousand of them are cheap)."""
    try:
        async with raw(gateway.ws_url(path), use_msgpack=True, wait_s=60) as client:
            for _ in range(5):  # many first auths at once may outwait the key store: retry
                reply = await client.auth_reply(gateway.key_id, gateway.secret)
                if reply == [{"T": "success", "msg": "authenticated"}]:
                    break
            else:
                raise AssertionError(f"auth answered {reply}")
            await client.send({"action": "subscribe", **subscribe})
            [answer] = await client.recv()
            assert answer["T"] == "subscription", answer
            listener.ready.set()
            while True:
                frame = await client.ws.recv()
                now = time.monotonic()
                if listener.first_only:  # read no further than the first message
                    unpacker = msgpack.Unpacker(timestamp=0)
                    unpacker.feed(frame)
                    unpacker.read_array_header()
                    messages = [unpacker.unpack()]
                else:
                    messages = msgpack.unpackb(frame, timestamp=0)
                for message in messages:
                    listener.messages.append(message)
                    listener.arrived.append(now)
    except ConnectionClosed:
        listener.closed = True


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@asynccontextmanager
async def stalled_client(gateway: StreamGateway) -> AsyncIterator[Raw]:
    """A JSON client whose socket takes almost nothing unless asked: a tiny receive buffer, a
    websocket client that stops reading the socket after one queued frame, no compression."""
    url = gateway.ws_url("/v2/iex")
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
    async with connect(
        url, sock=sock, proxy=None, ping_interval=None, max_queue=1,
        compression=None,  # compressed, a million similar quotes fit in the buffers
        open_timeout=WAIT_S, close_timeout=1,
    ) as ws:  # fmt: skip
        client = Raw(ws, use_msgpack=False)
        assert await client.recv() == [{"T": "success", "msg": "connected"}]
        yield client
