"""Typed calls to the emulator's stream control API: ``EmulatorControl(...).streams``.

```python
async with EmulatorControl(emulator.base_url) as control:
    await control.streams.wait_for_subscriber("iex", "quotes", "AAPL")
    await control.streams.push("iex", [{"T": "q", "S": "AAPL", ..., "t": "now"}])
    attempts = await control.streams.attempts("iex")
```

Fault kinds for streams go through ``EmulatorControl.add_fault`` like the others
(``stream_mute``, ``stream_disconnect``, ... and ``rate_limited`` for a 429 at the upgrade).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from types import EllipsisType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .stream_paths import BY_FEED

if TYPE_CHECKING:
    from .control import EmulatorControl

WireMessage = Mapping[str, Any]
POLL_S = 0.02


class StreamWaitTimeout(AssertionError):
    """What a test waited for on the emulator's streams did not happen in time."""


class StreamControl:
    """The ``/_emulator/stream`` calls of one :class:`EmulatorControl`."""

    def __init__(self, control: EmulatorControl) -> None:
        self._control = control

    async def push(
        self, feed: str, messages: Sequence[WireMessage], *, per_frame: int | None = None
    ) -> list[str]:
        """Push Alpaca wire messages onto ``feed`` (``iex``, ``sip``, ``delayed_sip``,
        ``test``, ``indicative``, ``opra``), in order, to every client subscribed to their
        channel and symbol; the ids of the connections reached."""
        query = "" if per_frame is None else f"?per_frame={per_frame}"
        path = f"/_emulator/stream/{quote(feed, safe='')}/messages{query}"
        answer = await self._control._send("POST", path, list(messages))
        reached: list[str] = answer.json()["connections"]
        return reached

    async def configure(
        self,
        *,
        slot_release_ms: int | None = None,
        auth_timeout_ms: int | None = None,
        symbol_limit: int | EllipsisType | None = ...,
    ) -> None:
        """Change the stream settings of ``PUT /_emulator/config`` (left out: unchanged):
        how long a feed's slot stays taken after an unclean disconnect, the time a new
        connection has to authenticate, and the trades+quotes symbols one connection may hold
        (None: no limit)."""
        changes: dict[str, object] = {}
        if slot_release_ms is not None:
            changes["stream_slot_release_ms"] = slot_release_ms
        if auth_timeout_ms is not None:
            changes["stream_auth_timeout_ms"] = auth_timeout_ms
        if not isinstance(symbol_limit, EllipsisType):
            changes["stream_symbol_limit"] = symbol_limit
        await self._control._send("PUT", "/_emulator/config", changes)

    async def state(self) -> dict[str, Any]:
        """``{"attempts": {path: n}, "connections": [...], "slots": {path: ...}}``."""
        answer: dict[str, Any] = (await self._control._send("GET", "/_emulator/stream")).json()
        return answer

    async def connections(self, feed: str | None = None) -> list[dict[str, Any]]:
        """The open connections (of one feed), each with its subscriptions and counters."""
        found: list[dict[str, Any]] = (await self.state())["connections"]
        return [conn for conn in found if feed is None or conn["feed"] == feed]

    async def attempts(self, feed: str) -> int:
        """Connection attempts (websocket upgrades, refused ones too) on a feed since the
        last reset; ``trading`` is the trade updates stream."""
        by_path: dict[str, int] = (await self.state())["attempts"]
        return by_path.get(BY_FEED[feed].path, 0)

    async def sent(self, feed: str | None = None) -> list[dict[str, Any]]:
        """The frames written to clients (of one feed), oldest first."""
        query = "" if feed is None else f"?feed={quote(feed, safe='')}"
        answer = await self._control._send("GET", f"/_emulator/stream/sent{query}")
        frames: list[dict[str, Any]] = answer.json()
        return frames

    async def clear_sent(self) -> None:
        """Forget the frames sent so far."""
        await self._control._send("DELETE", "/_emulator/stream/sent")

    async def free_slots(self) -> None:
        """Free the feed slots kept after unclean disconnects."""
        await self._control._send("DELETE", "/_emulator/stream/slots")

    async def wait_for_subscriber(
        self, feed: str, channel: str, symbol: str, *, timeout_s: float = 5.0
    ) -> str:
        """Wait until a connection on ``feed`` is subscribed to ``symbol`` on ``channel`` (or
        listens to trade updates, for ``trading``); its id."""
        deadline = time.monotonic() + timeout_s
        while True:
            for conn in await self.connections(feed):
                if channel in conn.get("subscriptions", {}):
                    if symbol in conn["subscriptions"][channel]:
                        return str(conn["id"])
                elif channel in conn.get("streams", ()):
                    return str(conn["id"])
            if time.monotonic() > deadline:
                raise StreamWaitTimeout(f"no {feed} connection subscribed to {channel} {symbol}")
            await asyncio.sleep(POLL_S)

    async def wait_for_connections(self, feed: str, count: int, *, timeout_s: float = 5.0) -> None:
        """Wait until exactly ``count`` connections are open on ``feed``."""
        deadline = time.monotonic() + timeout_s
        while len(await self.connections(feed)) != count:
            if time.monotonic() > deadline:
                raise StreamWaitTimeout(f"{feed} never had {count} open connections")
            await asyncio.sleep(POLL_S)
