"""What the lifespan builds and the routes use: passed explicitly, never imported as a global."""

from __future__ import annotations

from dataclasses import dataclass

from app.alpaca.shared_breaker import SharedBreaker
from app.alpaca.trading import TradingAccountClient
from app.alpaca.transport import AlpacaTransport
from app.cache import Cache
from app.errors import Upstream
from app.keys import KeyRing
from app.market_session import MarketSession
from app.metrics import Metrics
from app.orders import OrderDesk
from app.quotas import Quotas
from app.reads.alpaca import AlpacaReads
from app.reads.options import OptionReads
from app.reads.stocks import StockReads
from app.settings import Settings
from app.storage.error_log import ErrorLogWriter
from app.storage.store import Store
from app.streams import StreamHub


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    metrics: Metrics
    cache: Cache
    breakers: dict[Upstream, SharedBreaker]
    stocks: StockReads
    # The Alpaca-compatible face: Alpaca's own objects through the same cache and breakers, and
    # the transports its pass-through trading calls use (one per upstream, as everywhere).
    alpaca: AlpacaReads
    transports: dict[Upstream, AlpacaTransport]
    options: OptionReads
    trading: TradingAccountClient
    orders: OrderDesk
    store: Store
    keys: KeyRing
    quotas: Quotas
    # The one bucket anonymous callers share (GATEWAY_ANONYMOUS_DATA); None: no quota for them.
    anonymous_quotas: Quotas | None
    error_log: ErrorLogWriter
    source: str
    # Real-time streams: one upstream connection per Alpaca feed, fanned out (app/streams).
    streams: StreamHub
    # Whether the market is open, as Alpaca's clock last said.
    market: MarketSession
