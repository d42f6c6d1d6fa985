"""Alpaca's websocket endpoints that the emulator serves on its one host.

Alpaca serves market-data streams on ``stream.data.alpaca.markets`` (stocks ``/v2/{feed}``,
options ``/v1beta1/{feed}``) and trade updates on ``{paper-}api.alpaca.markets/stream``. The
emulator serves all of them beside its REST paths, so a client's ``url_override`` is
``ws://HOST:PORT/v2/iex``. This module has no dependencies: ``middleware.py`` reads it to let
these paths past the REST pipeline (a stream authenticates itself, by message or headers).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class StreamFamily(Enum):
    """What a stream carries, which decides its messages and channels."""

    STOCKS = "stocks"
    OPTIONS = "options"
    TRADING = "trading"


@dataclass(frozen=True)
class StreamEndpoint:
    """One websocket endpoint. ``feed`` names it in the control API (``trading`` is /stream);
    ``paid`` feeds answer 409 ``insufficient subscription`` on the ``free`` plan."""

    feed: str
    path: str
    family: StreamFamily
    paid: bool = False


ENDPOINTS: tuple[StreamEndpoint, ...] = (
    StreamEndpoint("iex", "/v2/iex", StreamFamily.STOCKS),
    StreamEndpoint("sip", "/v2/sip", StreamFamily.STOCKS, paid=True),
    StreamEndpoint("delayed_sip", "/v2/delayed_sip", StreamFamily.STOCKS),
    StreamEndpoint("test", "/v2/test", StreamFamily.STOCKS),
    StreamEndpoint("indicative", "/v1beta1/indicative", StreamFamily.OPTIONS),
    StreamEndpoint("opra", "/v1beta1/opra", StreamFamily.OPTIONS, paid=True),
    StreamEndpoint("trading", "/stream", StreamFamily.TRADING),
)
BY_PATH = {endpoint.path: endpoint for endpoint in ENDPOINTS}
BY_FEED = {endpoint.feed: endpoint for endpoint in ENDPOINTS}


def is_stream_path(path: str) -> bool:
    """Whether ``path`` is one of the websocket endpoints."""
    return path in BY_PATH
