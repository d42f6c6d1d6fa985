"""The served gateway in front of the emulator's streams, for tests/integration/test_streams_*:
a gateway key split the way alpaca-py's stream clients carry it, alpaca-py's run loop as a
task, a raw websocket client, and Alpaca-shaped ticks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgpack
from alpaca.data.live.websocket import DataStream
from alpaca.trading.stream import TradingStream
from websockets.asyncio.client import ClientConnection, connect

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


def create_key(env: Mapping[str, str], scopes: str) -> str:
    """A key made as an operator makes one (the CLI prints it as its last line)."""
    create = [sys.executable, "-m", "app.cli", "keys", "create", "--name", "stream-test"]
    made = subprocess.run(
        [*create, "--scopes", scopes], cwd=REPO_ROOT, env=dict(env), capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    return made.stdout.strip().splitlines()[-1]


@asynccontextmanager
async def running(stream: DataStream | TradingStream) -> AsyncIterator[None]:
    """alpaca-py's own run loop (`_run_forever`) as a task of the test's event loop."""
    task = asyncio.create_task(stream._run_forever())
    try:
        yield
    finally:
        await stream.stop_ws()
        await stream.close()
        await asyncio.wait_for(task, WAIT_S)


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


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
    """A plain websocket client: JSON text, or MessagePack with `use_msgpack`."""

    def __init__(self, ws: ClientConnection, *, use_msgpack: bool) -> None:
        self.ws = ws
        self.msgpack = use_msgpack

    async def send(self, value: object) -> None:
        await self.ws.send(msgpack.packb(value) if self.msgpack else json.dumps(value))

    async def auth_reply(self, key: str, secret: str) -> Any:
        await self.send({"action": "auth", "key": key, "secret": secret})
        return await self.recv()

    async def recv(self, timeout_s: float = WAIT_S) -> Any:
        frame = await asyncio.wait_for(self.ws.recv(), timeout_s)
        if self.msgpack:
            assert isinstance(frame, bytes)
            return msgpack.unpackb(frame, timestamp=0)
        assert isinstance(frame, str), "JSON clients get text frames"
        return json.loads(frame)


@asynccontextmanager
async def raw(
    url: str,
    *,
    use_msgpack: bool = False,
    headers: Mapping[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[Raw]:
    """A raw connection; the `connected` welcome is read and checked."""
    sent = {**(MSGPACK if use_msgpack else {}), **(headers or {})}
    async with connect(
        url, additional_headers=sent, proxy=None,
        ping_interval=None, open_timeout=WAIT_S, close_timeout=1, **options,
    ) as ws:  # fmt: skip
        client = Raw(ws, use_msgpack=use_msgpack)
        assert await client.recv() == [{"T": "success", "msg": "connected"}]
        yield client
