"""Provenance: where a market value came from and how old it is."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CacheState = Literal["miss", "hit", "shared", "stale"]


class Provenance(BaseModel):
    """Attached to every market-data item so a client never has to trust the word "fresh"."""

    model_config = ConfigDict(frozen=True)

    source: str = Field(description="`alpaca`, or the configured upstream name (e.g. `emulator`)")
    feed: str | None = Field(
        description="Feed requested from Alpaca (`iex`, `sip`, ...); null for trading-API values"
    )
    observed_at: str = Field(description="The item's own timestamp, exactly as Alpaca sent it")
    fetched_at: str = Field(description="When the gateway received the item from Alpaca (UTC)")
    age_ms: int = Field(description="now - observed_at, computed when the response was sent")
    cache: CacheState = Field(description="miss, hit, shared (joined an in-flight call) or stale")
