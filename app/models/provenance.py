"""Provenance: where a market value came from and how old it is."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict

CacheState = Literal["miss", "hit", "shared", "stale", "stream"]


@with_config(ConfigDict(extra="forbid"))
class Provenance(TypedDict):
    """Attached to every market-data item so a client never has to trust the word "fresh"."""

    source: Annotated[
        str, Field(description="`alpaca`, or the configured upstream name (e.g. `emulator`)")
    ]
    feed: Annotated[
        str | None,
        Field(
            description="Feed requested from Alpaca (`iex`, `sip`, ...); null for trading-API"
            " values"
        ),
    ]
    observed_at: Annotated[
        str, Field(description="The item's own timestamp, exactly as Alpaca sent it")
    ]
    fetched_at: Annotated[
        str, Field(description="When the gateway received the item from Alpaca (UTC)")
    ]
    age_ms: Annotated[
        int, Field(description="now - observed_at, computed when the response was sent")
    ]
    cache: Annotated[
        CacheState,
        Field(
            description="miss, hit, shared (joined an in-flight call), stale, or stream (a"
            " value Alpaca's real-time stream pushed to the gateway: no REST call was made;"
            " `fetched_at` is when the stream delivered it)"
        ),
    ]
