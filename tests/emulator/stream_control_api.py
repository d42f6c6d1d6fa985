"""The control API of the streams (``/_emulator/stream``, no auth), beside ``control_api.py``.

| call | effect |
|---|---|
| ``POST /_emulator/stream/{feed}/messages[?per_frame=N]`` | push Alpaca wire messages |
| ``GET /_emulator/stream`` | attempts per path, open connections, taken slots |
| ``GET /_emulator/stream/sent[?feed=F]``, ``DELETE`` | frames written to clients |
| ``DELETE /_emulator/stream/slots`` | free the slots kept after unclean disconnects |

A body the emulator cannot use gets 400 ``{"error": ...}`` and nothing is sent.
"""

from __future__ import annotations

import time

from aiohttp import web

from .control_api import PREFIX, ControlError
from .responses import json_response
from .scenario_shapes import ScenarioError
from .stream_paths import BY_FEED, StreamFamily
from .stream_shapes import check_messages
from .streams import STREAMS_KEY, StreamHub
from .wire_json import Json, WireJsonError, loads

STREAM_PREFIX = f"{PREFIX}/stream"


def _hub(request: web.Request) -> StreamHub:
    return request.app[STREAMS_KEY]


def _per_frame(request: web.Request) -> int | None:
    text = request.query.get("per_frame")
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ControlError("per_frame must be a whole number >= 1")
    return int(text)


async def push_messages(request: web.Request) -> web.Response:
    """POST /_emulator/stream/{feed}/messages: a JSON array of Alpaca wire messages (relative
    times allowed), delivered in order to every authenticated client subscribed to their
    channel and symbol (errors to every client), in one frame each unless ``per_frame`` says
    how many a frame holds. Answers ``{"connections": [ids reached]}``."""
    feed = request.match_info["feed"]
    endpoint = BY_FEED.get(feed)
    if endpoint is None or endpoint.family is StreamFamily.TRADING:
        feeds = [name for name, e in BY_FEED.items() if e.family is not StreamFamily.TRADING]
        raise ControlError(f"unknown feed {feed!r}; feeds are {', '.join(feeds)}")
    per_frame = _per_frame(request)
    try:
        body: Json = loads(await request.text())
        messages = check_messages(body, endpoint.family, "messages", time.time_ns())
    except (WireJsonError, ScenarioError) as exc:
        raise ControlError(str(exc)) from exc
    reached: list[Json] = list(_hub(request).publish(endpoint, messages, per_frame))
    return json_response({"connections": reached})


async def get_streams(request: web.Request) -> web.Response:
    """GET /_emulator/stream: ``{"attempts": {path: n}, "connections": [...], "slots": {...}}``."""
    return json_response(_hub(request).to_wire())


async def get_sent(request: web.Request) -> web.Response:
    """GET /_emulator/stream/sent[?feed=iex]: the frames written to clients, oldest first
    (the last 10,000), each ``{"connection", "feed", "sent_at", "sent_ns", "frame"}``."""
    feed = request.query.get("feed")
    frames: list[Json] = [
        frame.to_wire() for frame in _hub(request).sent if feed is None or frame.feed == feed
    ]
    return json_response(frames)


async def clear_sent(request: web.Request) -> web.Response:
    """DELETE /_emulator/stream/sent: forget the frames sent so far."""
    _hub(request).sent.clear()
    return web.Response(status=204)


async def free_slots(request: web.Request) -> web.Response:
    """DELETE /_emulator/stream/slots: free the slots kept after unclean disconnects."""
    _hub(request).free_slots()
    return web.Response(status=204)


def add_stream_control_routes(app: web.Application) -> None:
    """Register the stream calls under ``/_emulator/stream``."""
    router = app.router
    router.add_get(STREAM_PREFIX, get_streams)
    router.add_post(f"{STREAM_PREFIX}/{{feed}}/messages", push_messages)
    router.add_get(f"{STREAM_PREFIX}/sent", get_sent)
    router.add_delete(f"{STREAM_PREFIX}/sent", clear_sent)
    router.add_delete(f"{STREAM_PREFIX}/slots", free_slots)
