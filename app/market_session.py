"""Whether the market is open, as Alpaca's market clock last said: the gauge the quote-age and
stream alerts read, and the stream's silence check (a quiet socket is only suspect while the
market is open)."""

from __future__ import annotations

from app.metrics import Metrics


class MarketSession:
    """Set wherever the gateway reads Alpaca's clock (the background poll, `/v1/clock`)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._is_open: bool | None = None

    def observed(self, is_open: bool) -> None:
        self._is_open = is_open
        self._metrics.market_open(is_open)

    def is_open(self) -> bool | None:
        """What the clock last said; None before it has answered (no credentials, or Alpaca's
        trading API not reached yet)."""
        return self._is_open
