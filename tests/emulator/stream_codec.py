"""Frames as Alpaca's streams write them: JSON text, or MessagePack when the client asks.

A client asks for MessagePack with ``Content-Type: application/msgpack`` on the websocket
handshake (alpaca-py and Alpaca's Go client always do); anything else gets JSON. In MessagePack
a market-data ``t`` is a Timestamp extension (type -1, nanoseconds kept), which alpaca-py
turns into a datetime with ``t.to_datetime()``; prices are float64 and sizes integers, as
Alpaca's Go server packs them. JSON keeps every number's own text (:mod:`wire_json`).

msgpack is imported where it is used, not at the top: it comes with alpaca-py (and is pinned in
requirements-dev.txt), while the emulator's container images install only requirements.txt;
there the emulator still starts and serves JSON streams.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal

from .timestamps import rfc3339_ns
from .wire_json import Json, dumps

Encoding = Literal["json", "msgpack"]
MSGPACK_CONTENT_TYPE = "application/msgpack"
_NS_PER_S = 1_000_000_000


def encoding_of(content_type: str | None) -> Encoding:
    """The encoding a handshake's Content-Type asks for."""
    return "msgpack" if content_type and "msgpack" in content_type.lower() else "json"


def encode(value: Json, encoding: Encoding, *, timestamps: bool) -> str | bytes:
    """One frame. ``timestamps``: pack market-data ``t`` strings as Timestamp extensions."""
    if encoding == "json":
        return dumps(value)
    import msgpack  # type: ignore[import-untyped]  # here, not at the top: see the docstring

    packed: bytes = msgpack.packb(_packable(value, timestamps, msgpack), use_bin_type=True)
    return packed


def _packable(value: Json, timestamps: bool, msgpack: Any, key: str | None = None) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {name: _packable(item, timestamps, msgpack, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_packable(item, timestamps, msgpack) for item in value]
    if timestamps and key == "t" and isinstance(value, str):
        seconds, nanoseconds = divmod(rfc3339_ns(value), _NS_PER_S)
        return msgpack.Timestamp(seconds, nanoseconds)
    return value


def decode(data: str | bytes) -> object:
    """A client's frame: JSON text, or a binary frame holding MessagePack (or JSON bytes).
    ValueError if it is neither."""
    if isinstance(data, str):
        return json.loads(data)
    import msgpack  # here, not at the top: see the docstring

    try:
        value: object = msgpack.unpackb(data, raw=False)
    except ValueError:  # msgpack's own errors are ValueErrors
        return json.loads(data)  # a JSON client writing binary frames
    return value
