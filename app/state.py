"""What the lifespan builds and the routes use: passed explicitly, never imported as a global."""

from __future__ import annotations

from dataclasses import dataclass

from app.alpaca.breaker import CircuitBreaker
from app.cache import Cache
from app.market_data import StockReads
from app.metrics import Metrics
from app.options import OptionReads
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    metrics: Metrics
    cache: Cache
    breakers: dict[str, CircuitBreaker]
    stocks: StockReads
    options: OptionReads
    source: str
