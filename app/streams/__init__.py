"""Real-time streams: one upstream connection per Alpaca feed, fanned out to every client.

upstream.py  the one connection per feed (backoff, silence, gaps); the stream's transport,
             the only module here that knows aiohttp
fanout.py    clients and their bounded buffers; the hub per feed and per instance
session.py   Alpaca's stream protocol as one client sees it
wire.py      framing (MessagePack elements kept as received, JSON for JSON clients)
leader.py    one connection per feed across instances (a Redis lease, a pub/sub relay)
refresh.py   streamed quotes and trades refresh the REST cache
"""

from __future__ import annotations

from app.alpaca.transport import Credentials
from app.cache import Cache, RedisClient
from app.market_session import MarketSession
from app.metrics import Metrics
from app.settings import Settings
from app.streams.backoff import BackoffPolicy
from app.streams.feeds import ALPACA_STREAM_URL, as_websocket_url
from app.streams.hub import StreamHub
from app.streams.leader import leadership
from app.streams.refresh import LatestRefresh, streamed_kinds
from app.streams.upstream import UpstreamFeedFactory

# Alpaca gives a client 10 s to authenticate; its own answers come well within that.
UPSTREAM_HANDSHAKE_TIMEOUT_S = 10.0


def market_data_stream_url(settings: Settings) -> str:
    """ALPACA_STREAM_URL, else the overridden data host (the emulator serves both), else
    Alpaca's stream host."""
    if settings.alpaca_stream_url:
        return as_websocket_url(settings.alpaca_stream_url)
    if settings.alpaca_data_url:
        return as_websocket_url(settings.alpaca_data_url)
    return ALPACA_STREAM_URL


def open_stream_hub(
    settings: Settings,
    metrics: Metrics,
    credentials: Credentials | None,
    cache: Cache,
    market: MarketSession,
    redis: RedisClient | None = None,
) -> StreamHub:
    """The instance's stream hub; its `aclose()` closes every upstream connection (with a
    close frame: Alpaca frees the feed's slot at once) and the session they used. With
    `redis`, each feed's one connection is shared by every instance (app/streams/leader.py);
    without, this instance holds its own. Call it inside the running loop (the lifespan): the
    upstream factory opens its session."""
    if credentials is None:
        return StreamHub(None, metrics, buffer_frames=settings.stream_client_buffer_frames)
    policy = BackoffPolicy(
        min_s=settings.stream_reconnect_min_s,
        max_s=settings.stream_reconnect_max_s,
        connection_limit_s=settings.stream_connection_limit_wait_s,
    )
    # Streamed quotes and trades refresh the REST cache, with the REST path's own lifetimes.
    refresh = LatestRefresh(
        cache,
        metrics,
        kinds=streamed_kinds(
            quote_ttl_s=settings.cache_quote_ttl_s,
            trade_ttl_s=settings.cache_trade_ttl_s,
            option_quote_ttl_s=settings.cache_option_quote_ttl_s,
        ),
        stale_retention_s=settings.cache_stale_retention_s,
        clock_skew_tolerance_s=settings.clock_skew_tolerance_ms / 1000,
    )
    upstream = UpstreamFeedFactory(
        credentials=credentials,
        market_data_url=market_data_stream_url(settings),
        trading_url=settings.trading_base_url,
        policy=policy,
        silence_s=settings.stream_silence_s,
        market_open=market.is_open,
        idle_close_s=settings.stream_idle_close_s,
        handshake_timeout_s=UPSTREAM_HANDSHAKE_TIMEOUT_S,
        metrics=metrics,
        tap=refresh.note,
    )
    shared = None
    if redis is not None:
        shared = leadership(
            redis,
            metrics,
            namespace=settings.cache_namespace,
            instance=settings.instance_name,
            lease_s=settings.stream_leader_lease_s,
        )
    return StreamHub(
        upstream,
        metrics,
        buffer_frames=settings.stream_client_buffer_frames,
        leadership=shared,
        refresh=refresh,
    )


__all__ = ["StreamHub", "open_stream_hub"]
