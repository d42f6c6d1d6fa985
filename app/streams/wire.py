"""Alpaca's stream framing, as pure functions: split a MessagePack frame into its messages
without re-encoding them, join them again per client, and speak JSON to JSON clients.

The upstream market-data connection always speaks MessagePack (the option feeds speak nothing
else), so a MessagePack client gets every message as the exact bytes Alpaca sent; only a
frame's array header is new when its messages are split between clients. A JSON client gets
each message converted once: numbers are the same float64 or integer (Python writes a float's
shortest round-trip digits), strings and field order unchanged, and the Timestamp `t` becomes
Alpaca's JSON form, RFC 3339 with the nanoseconds it carries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]  # ships no type information

Encoding = Literal["msgpack", "json"]
MSGPACK_CONTENT_TYPE = "application/msgpack"


class WireError(ValueError):
    """A frame that is not what Alpaca's protocol sends (not an array of maps)."""


@dataclass(frozen=True, slots=True)
class Element:
    """One message of a market-data frame: its bytes as received and what routing needs."""

    raw: bytes
    type: str | None  # `T`
    symbol: str | None  # `S`
    value: Mapping[str, Any]


def encoding_of(content_type: str | None) -> Encoding:
    """Alpaca answers MessagePack when the handshake asks for it, JSON otherwise."""
    if content_type is not None and content_type.split(";")[0].strip() == MSGPACK_CONTENT_TYPE:
        return "msgpack"
    return "json"


def split_frame(frame: bytes) -> list[Element]:
    """A MessagePack frame (an array of maps) -> its elements, each with its own bytes."""
    unpacker = msgpack.Unpacker(raw=False, timestamp=0, strict_map_key=False)
    unpacker.feed(frame)
    try:
        count = unpacker.read_array_header()
        elements = []
        for _ in range(count):
            start = unpacker.tell()
            value = unpacker.unpack()
            if not isinstance(value, dict):
                raise WireError("a stream frame holds maps")
            kind, symbol = value.get("T"), value.get("S")
            elements.append(
                Element(
                    frame[start : unpacker.tell()],
                    kind if isinstance(kind, str) else None,
                    symbol if isinstance(symbol, str) else None,
                    value,
                )
            )
    except (msgpack.UnpackException, ValueError) as exc:
        raise WireError(f"unreadable MessagePack frame: {exc}") from exc
    return elements


def join_msgpack(raws: Sequence[bytes]) -> bytes:
    """Messages (their own bytes) -> one MessagePack array frame."""
    header: bytes = msgpack.Packer().pack_array_header(len(raws))
    return header + b"".join(raws)


def element_json(value: Mapping[str, Any]) -> str:
    """One message as Alpaca's JSON streams write it."""
    return json.dumps(value, default=_json_value, separators=(",", ":"), allow_nan=False)


def join_json(texts: Sequence[str]) -> str:
    return "[" + ",".join(texts) + "]"


def _json_value(value: object) -> str:
    if isinstance(value, msgpack.Timestamp):
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} has no JSON form on Alpaca's streams")


def rfc3339(stamp: msgpack.Timestamp) -> str:
    """A Timestamp as Go's RFC3339Nano writes it (Alpaca's JSON): trailing zeros dropped."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp.seconds))
    fraction = f"{stamp.nanoseconds:09d}".rstrip("0")
    return f"{seconds}.{fraction}Z" if fraction else f"{seconds}Z"


def encode(value: object, encoding: Encoding) -> bytes | str:
    """A message the gateway writes itself (control messages): MessagePack bytes or JSON."""
    if encoding == "msgpack":
        packed: bytes = msgpack.packb(value)
        return packed
    return json.dumps(value, separators=(",", ":"))


def longer_than(data: bytes | str, limit: int) -> bool:
    """Whether a client's message is longer than `limit` bytes (text counted as the UTF-8 it
    arrived as), without decoding it, nor encoding text whose length alone answers."""
    if isinstance(data, bytes) or len(data) > limit:  # a character is at least one byte...
        return len(data) > limit
    if len(data) * 4 <= limit:  # ... and at most four
        return False
    return len(data.encode("utf-8", "surrogatepass")) > limit


def decode_client(data: bytes | str) -> object:
    """A client's frame: JSON text, or a binary frame holding MessagePack (alpaca-py) or JSON.
    WireError if it is neither, or nested too deeply to decode (JSON's decoder recurses:
    RecursionError; MessagePack's stops at its own depth), or declares more than it holds."""
    try:
        if isinstance(data, str):
            return json.loads(data)
        try:
            return msgpack.unpackb(data, raw=False, timestamp=0)
        except (msgpack.UnpackException, ValueError, RecursionError):
            return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError("unreadable client frame") from exc


def decode_trading(data: bytes | str) -> Mapping[str, Any]:
    """A trade-updates frame (one JSON object, or MessagePack on request)."""
    value = decode_client(data)
    if not isinstance(value, dict):
        raise WireError("a trade-updates frame holds one object")
    return value
