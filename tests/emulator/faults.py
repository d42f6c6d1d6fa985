"""Injected faults: what they are, how they match a path, and how they run out.

Faults sit in front of the emulated Alpaca like a broken network or proxy: the first fault
whose fnmatch pattern matches the request path (in insertion order) decides the answer.
A fault with a count is spent by each request it matches and disappears at zero.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from .wire_json import Json, JsonObject

DEFAULT_RETRY_AFTER_S = 60


class FaultKind(StrEnum):
    """The failure modes a test can inject."""

    LATENCY = "latency"  # sleep delay_ms, then answer normally
    HANG = "hang"  # answer only once faults are cleared or the client gives up
    STATUS_500 = "status_500"  # Alpaca's own JSON 500
    STATUS_502_HTML = "status_502_html"  # edge proxy HTML page
    STATUS_503 = "status_503"  # proxy plain text
    STATUS_504 = "status_504"  # proxy HTML page
    RESET = "reset"  # TCP RST, no HTTP answer at all
    MALFORMED_JSON = "malformed_json"  # 200 application/json, truncated text
    SCHEMA_MISSING_T = "schema_missing_t"  # 200, items lack their timestamp
    SCHEMA_WRONG_TYPE = "schema_wrong_type"  # 200, prices are strings
    RATE_LIMITED = "rate_limited"  # 429 with Remaining 0 and Reset = now + retry_after_s
    # The request reaches Alpaca and is processed in full (an order IS created), then the
    # answer is lost: the connection is reset, held until faults are cleared, or a 500.
    ACCEPT_THEN_RESET = "accept_then_reset"
    ACCEPT_THEN_HANG = "accept_then_hang"
    ACCEPT_THEN_500 = "accept_then_500"
    # Streams only (see streams.py). The next auth of a matched connection fails with Alpaca's
    # error: 402 auth failed, 406 connection limit exceeded, 409 insufficient subscription.
    STREAM_AUTH_FAILED = "stream_auth_failed"
    STREAM_CONNECTION_LIMIT = "stream_connection_limit"
    STREAM_INSUFFICIENT_SUBSCRIPTION = "stream_insufficient_subscription"
    # The connection goes mute (sends nothing more; pings still answered), mute and deaf to
    # pings and close frames, or is dropped without a close frame (TCP FIN) or with a TCP RST.
    # They strike the open connections the path matches when added, then new ones once their
    # first subscription (or listen) is answered; delay_ms waits first.
    STREAM_MUTE = "stream_mute"
    STREAM_MUTE_NO_PONG = "stream_mute_no_pong"
    STREAM_DISCONNECT = "stream_disconnect"
    STREAM_RESET = "stream_reset"

    @property
    def after_processing(self) -> bool:
        """Whether the fault strikes after the request was processed (accept_then_*)."""
        return self.value.startswith("accept_then_")

    @property
    def stream_only(self) -> bool:
        """Whether only stream connections take it (REST requests pass it by)."""
        return self.value.startswith("stream_")


@dataclass
class Fault:
    """One injected fault; ``remaining`` None means it lasts until cleared."""

    id: str
    path: str
    kind: FaultKind
    remaining: int | None
    delay_ms: int
    retry_after_s: int

    def to_wire(self) -> JsonObject:
        """The control API's view of the fault."""
        return {
            "id": self.id,
            "path": self.path,
            "kind": self.kind.value,
            "count": self.remaining,
            "delay_ms": self.delay_ms,
            "retry_after_s": self.retry_after_s,
        }


def _optional_int(body: dict[str, Json], name: str, minimum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or null")
    return value


def parse_fault(body: Json, fault_id: str) -> Fault:
    """A fault from its control-API body (``path``, ``kind``, ``count``, ``delay_ms``,
    ``retry_after_s``); ValueError explains a bad body. Other members are ignored here."""
    if not isinstance(body, dict):
        raise ValueError("fault body must be a JSON object")
    path, kind = body.get("path"), body.get("kind")
    if not isinstance(path, str) or not path.startswith(("/", "*")):
        raise ValueError("path must be an fnmatch pattern on the request path, e.g. /v2/*")
    if kind not in {k.value for k in FaultKind}:
        raise ValueError(f"kind must be one of {sorted(k.value for k in FaultKind)}")
    fault_kind = FaultKind(str(kind))
    delay_ms = _optional_int(body, "delay_ms", 0)
    if fault_kind is FaultKind.LATENCY and delay_ms is None:
        raise ValueError("latency faults need delay_ms")
    retry_after_s = _optional_int(body, "retry_after_s", 0)
    return Fault(
        id=fault_id,
        path=path,
        kind=fault_kind,
        remaining=_optional_int(body, "count", 1),
        delay_ms=delay_ms or 0,
        retry_after_s=DEFAULT_RETRY_AFTER_S if retry_after_s is None else retry_after_s,
    )


class FaultRegistry:
    """The ordered list of active faults, plus the gate that hung requests wait on."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._released = asyncio.Event()
        self._added: list[Callable[[Fault], None]] = []

    def on_add(self, callback: Callable[[Fault], None]) -> None:
        """Call ``callback`` with every fault added from now on (streams apply theirs to the
        connections already open)."""
        self._added.append(callback)

    def add_from_wire(self, body: Json) -> Fault:
        """Validate a control-API fault body and append it; ValueError explains a bad body."""
        fault = parse_fault(body, "")
        fault.id = f"fault-{next(self._ids)}"  # numbered only once valid
        self._faults.append(fault)
        for callback in self._added:
            callback(fault)
        return fault

    def take(self, path: str, kinds: Collection[FaultKind] | None = None) -> Fault | None:
        """The first fault matching ``path``, spending one of its uses. Only faults of
        ``kinds`` are considered; by default every kind but the stream-only ones."""
        for fault in self._faults:
            wanted = not fault.kind.stream_only if kinds is None else fault.kind in kinds
            if wanted and fnmatchcase(path, fault.path):
                self.spend(fault)
                return fault
        return None

    def spend(self, fault: Fault) -> bool:
        """Use up one of the fault's uses (it goes at zero); False if it was gone already."""
        if fault not in self._faults:
            return False
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        return True

    def active(self) -> list[Fault]:
        """Faults still in force, in matching order."""
        return list(self._faults)

    def remove(self, fault_id: str) -> bool:
        """Drop one fault by id; False if there is none."""
        for fault in self._faults:
            if fault.id == fault_id:
                self._faults.remove(fault)
                return True
        return False

    def clear(self) -> None:
        """Drop every fault and let every hung request go on."""
        self._faults.clear()
        self.release_hung()

    def release_hung(self) -> None:
        """Wake the requests held by ``hang`` faults (also done at shutdown)."""
        self._released.set()
        self._released = asyncio.Event()

    async def wait_for_release(self) -> None:
        """Block a hung request until :meth:`release_hung` is called."""
        await self._released.wait()
