"""`create_app(settings)` and the lifespan: the only place resources are built and closed.

`app.main:app` is what uvicorn serves. It is built on first access (module `__getattr__`), so
importing this module reads no settings and configures nothing; tests call `create_app`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from loguru import logger

from app.alpaca.breaker import BreakerConfig, BreakerState
from app.alpaca.breaker_sync import BreakerSync
from app.alpaca.budget import Budget, Lane, LaneConfig, LocalBudget, account_tag
from app.alpaca.market_data import StockDataClient
from app.alpaca.options import OptionContractsClient, OptionDataClient
from app.alpaca.shared_breaker import BreakerChange, SharedBreaker
from app.alpaca.shared_budget import SharedBudget, lane_key
from app.alpaca.trading import TradingAccountClient, TradingClient
from app.alpaca.transport import (
    AlpacaTransport,
    Credentials,
    Session,
    Timeouts,
    close_session,
    open_session,
)
from app.api import alpaca, clock, docs, options, stocks, system, trading
from app.api.hot import GatewayApp, HotRoute, HotRoutes, dispatch
from app.api.middleware import RequestContextMiddleware, cors_options
from app.api.openapi import operation_id, problem_openapi
from app.api.ops_listener import OpsListener, ops_app
from app.api.problems import add_exception_handlers, internal_response, problem_response
from app.cache import Cache, MemoryCache, RedisCache, RedisClient, fail_fast_redis
from app.keys import KeyRing
from app.logs import logger_level_no, setup_logging
from app.market_session import MarketSession
from app.metrics import UPSTREAMS, Metrics
from app.order_sweep import OrderSweep
from app.orders import OrderDesk
from app.quotas import MemoryQuotas, Quotas, RedisQuotas
from app.reads.alpaca import AlpacaReads
from app.reads.missing import MissingSymbols
from app.reads.options import OptionReads
from app.reads.read_through import ReadThrough, Served
from app.reads.stocks import StockReads
from app.settings import Settings, load_settings
from app.shared_flights import SharedFlights
from app.state import GatewayState
from app.storage import EmbeddedStore, ErrorLogRetention, ErrorLogWriter, PostgresStore, Store
from app.streams import open_stream_hub

VERSION = "0.1.0"


def _breaker_config(settings: Settings) -> BreakerConfig:
    return BreakerConfig(
        window_size=settings.breaker_window_size,
        minimum_calls=settings.breaker_minimum_calls,
        failure_rate_threshold=settings.breaker_failure_rate_threshold,
        slow_call_duration_s=settings.breaker_slow_call_duration_s,
        slow_call_rate_threshold=settings.breaker_slow_call_rate_threshold,
        open_duration_s=settings.breaker_open_duration_s,
        half_open_calls=settings.breaker_half_open_calls,
        half_open_permit_ttl_s=settings.breaker_half_open_permit_ttl_s,
    )


def _on_breaker_change(metrics: Metrics) -> Callable[[BreakerChange], None]:
    def change(event: BreakerChange) -> None:
        name, before, after = event.upstream, event.before, event.after
        metrics.breaker_source(name, event.source)
        if before is after:
            return  # the state source changed (Redis left or came back); breaker_sync logs it
        metrics.breaker_transition(name, before.value, after.value, after.gauge_value)
        if after is BreakerState.OPEN and event.by is not None:
            metrics.breaker_opened_by(name, event.by)
        log = logger.bind(
            upstream=name,
            from_state=before.value,
            to_state=after.value,
            breaker_source=event.source,
            by_instance=event.by,
        )
        (log.warning if after is BreakerState.OPEN else log.info)(
            "circuit breaker {} {} -> {} ({}{})",
            name,
            before.value,
            after.value,
            event.source,
            "" if event.by is None else f", by {event.by}",
        )

    return change


def _budgets(settings: Settings, metrics: Metrics, redis: RedisClient | None) -> dict[Lane, Budget]:
    """Each Alpaca host's lane of the account's rate budget: in Redis, shared by every instance
    (each falling back to its share while Redis is away), or without Redis this process's own
    (the whole budget, split among the server's workers)."""
    key_id = settings.alpaca_api_key_id
    account = account_tag(key_id.get_secret_value() if key_id else "")
    lanes: dict[Lane, tuple[LaneConfig, float]] = {
        "data": (
            LaneConfig(settings.alpaca_data_budget_per_minute, settings.alpaca_data_budget_burst),
            max(settings.data_timeout_s, settings.options_timeout_s),
        ),
        "trading": (
            LaneConfig(
                settings.alpaca_trading_budget_per_minute,
                settings.alpaca_trading_budget_burst,
                settings.alpaca_order_budget_reserve,
                settings.alpaca_order_budget_wait_s,
            ),
            max(settings.trading_timeout_s, settings.reference_timeout_s),
        ),
    }
    budgets: dict[Lane, Budget] = {}
    for lane, (config, probe_lease_s) in lanes.items():
        metrics.budget_configured(lane, config.per_minute)
        if redis is None:
            share = config.share(settings.gateway_workers)
            budgets[lane] = LocalBudget(lane, share, probe_lease_s=probe_lease_s)
            continue
        share = config.share(settings.gateway_expected_instances * settings.gateway_workers)
        budgets[lane] = SharedBudget(
            lane,
            config,
            redis,
            metrics,
            key=lane_key(settings.cache_namespace, account, lane),
            fallback=LocalBudget(lane, share, probe_lease_s=probe_lease_s),
            probe_lease_s=probe_lease_s,
            timeout_s=settings.redis_timeout_s,
        )
    return budgets


def _quotas(
    settings: Settings, metrics: Metrics, redis: RedisClient | None, per_minute: int
) -> Quotas:
    """Token buckets at `per_minute`, shared through Redis when there is one (each instance
    falling back to its own while Redis fails)."""
    local = MemoryQuotas(per_minute, settings.key_quota_burst)
    if redis is None:
        return local
    return RedisQuotas(
        redis,
        per_minute,
        settings.key_quota_burst,
        namespace=settings.cache_namespace,
        fallback=local,
        timeout_s=settings.redis_timeout_s,
        on_error=metrics.cache_backend_error,
    )


def _secrets(settings: Settings) -> list[str]:
    values = (
        settings.alpaca_api_key_id,
        settings.alpaca_api_secret_key,
        settings.redis_url,
        settings.database_url,
        settings.ops_key,
    )
    secrets = [v.get_secret_value() for v in values if v is not None]
    # A URL's password alone, too: a driver's message may quote it without the rest of the URL.
    for url in (settings.redis_url, settings.database_url):
        password = urlsplit(url.get_secret_value()).password if url is not None else None
        if password:
            secrets.extend({password, unquote(password)})
    return secrets


def create_app(settings: Settings, *, freeze_after_startup: bool = False) -> GatewayApp:
    """The gateway. `freeze_after_startup` is for the process that serves it (`app.main:app`):
    what start-up built then lives as long as the process and is moved out of the collector's
    way; a test building many apps in one process must not freeze each one's objects."""
    setup_logging(
        level=settings.log_level, json_lines=settings.log_json, secrets=_secrets(settings)
    )
    metrics = Metrics(
        watchlist=settings.watchlist, multiprocess=bool(settings.prometheus_multiproc_dir)
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            state = await _build_state(settings, metrics, stack)
            if settings.ops_access == "internal":
                # /metrics and /ready's details on a port the public network does not reach.
                listener = OpsListener(
                    ops_app(state),
                    settings.ops_host,
                    settings.ops_port,
                    settings.gateway_header_read_timeout_s,
                )
                await listener.start()
                stack.push_async_callback(listener.aclose)
            if freeze_after_startup:
                # Frozen, start-up's objects are not rescanned by every full collection, which
                # shortens GC pauses on the request path.
                gc.freeze()
            if settings.clock_poll_interval_s > 0 and settings.credentials_configured:
                poller = asyncio.create_task(
                    _watch_market_clock(state, settings.clock_poll_interval_s),
                    name="market-clock",
                )
                stack.callback(poller.cancel)
            logger.bind(source=state.source, cache=state.cache.backend).info(
                "gateway ready: upstream {}, cache {}", state.source, state.cache.backend
            )
            yield {"gateway": state}
            logger.info("gateway shutting down")

    app = GatewayApp(
        title="Alpaca real-data gateway",
        version=VERSION,
        description=(
            "A strict gateway in front of Alpaca: every value is Alpaca's, with provenance, "
            "or a typed problem+json error. Nothing is fabricated."
        ),
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks ask for the global providers on every request (4% of
        # a cached quote's CPU); the gateway's telemetry is its Prometheus metrics and logs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # /docs is served from the gateway's own assets (app/api/docs.py), not a CDN; no ReDoc
        # (it has no offline bundle here).
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        # A trailing slash is not our path: a typed 404, never a redirect (the framework built
        # the redirect's Location from the Host header, an open redirect).
        redirect_slashes=False,
    )
    add_exception_handlers(app)
    app.include_router(stocks.router)
    app.include_router(options.router)
    app.include_router(trading.router)
    app.include_router(clock.router)
    app.include_router(system.router)
    app.include_router(alpaca.router)
    app.include_router(docs.router)
    access_log = logger_level_no(settings.log_level) <= logger_level_no("INFO")
    cors = cors_options(settings.cors_origins) if settings.cors_origins else None
    if cors is not None:
        # Added first, so it runs inside the request middleware: a preflight answer gets the
        # request id and the security headers too.
        app.add_middleware(CORSMiddleware, **cors)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        on_unhandled=internal_response,
        on_error=problem_response,
        max_body_bytes=settings.max_body_bytes,
        body_read_timeout_s=settings.gateway_body_read_timeout_s,
        access_log=access_log,
    )
    app.hot_routes = HotRoutes(
        [
            HotRoute("/v1/stocks/{symbol}/quote", "symbol", stocks.latest_quote),
            HotRoute("/v1/stocks/{symbol}/trade", "symbol", stocks.latest_trade),
            HotRoute("/v1/options/{contract}/quote", "contract", options.option_quote),
        ]
    )
    app.hot_front = RequestContextMiddleware(
        dispatch if cors is None else CORSMiddleware(dispatch, **cors),
        metrics=metrics,
        on_unhandled=internal_response,
        on_error=problem_response,
        max_body_bytes=settings.max_body_bytes,
        access_log=access_log,
        reads_bodies=False,  # hot routes are GETs; their endpoints never read a body
    )
    app.openapi = problem_openapi(app, settings)  # type: ignore[method-assign]
    return app


async def _build_state(settings: Settings, metrics: Metrics, stack: AsyncExitStack) -> GatewayState:
    cache: Cache
    redis: RedisClient | None = None
    coordination: RedisClient | None = None
    shared_flights: SharedFlights | None = None
    if settings.redis_url is not None:
        # One client for the cache and the quotas, closed last of what uses it.
        redis = fail_fast_redis(
            settings.redis_url.get_secret_value(),
            timeout_s=settings.redis_timeout_s,
            cluster=settings.redis_cluster,
        )
        stack.push_async_callback(redis.aclose)
        # Another for what the instances arrange together (shared flights, the rate budget,
        # the breakers' verdicts):
        # in a cold burst a busy event loop reads Redis's answers late, past the cache's
        # fail-fast timeout, and coordination given up for that costs an extra call to Alpaca.
        # Each of them bounds its own calls (half a lease; the budget's own floor).
        coordination = fail_fast_redis(
            settings.redis_url.get_secret_value(),
            timeout_s=max(settings.redis_timeout_s, settings.shared_flight_lease_s / 2),
            cluster=settings.redis_cluster,
        )
        stack.push_async_callback(coordination.aclose)
        redis_cache = RedisCache(
            redis,
            metrics,
            timeout_s=settings.redis_timeout_s,
            namespace=settings.cache_namespace,
            near_max_entries=settings.cache_near_max_entries,
            near_max_bytes=settings.cache_near_max_bytes,
        )
        metrics.watch_size("near_cache", redis_cache.sizes)
        await redis_cache.ping()  # reports the state at start; failure is not fatal (fail open)
        cache = redis_cache
        if settings.shared_flights:
            shared_flights = SharedFlights(
                coordination,
                redis_cache,
                metrics,
                owner=settings.instance_name,
                lease_s=settings.shared_flight_lease_s,
                wait_s=settings.shared_flight_wait_s,
                poll_s=settings.shared_flight_poll_s,
                channel=f"{settings.cache_namespace}:landed",
            )
            shared_flights.start()  # listens for landing notices; stopped before Redis closes
            stack.push_async_callback(shared_flights.aclose)
    else:
        memory_cache = MemoryCache(settings.cache_max_entries, settings.cache_max_bytes)
        metrics.watch_size("value_cache", memory_cache.sizes)
        cache = memory_cache
    stack.push_async_callback(cache.close)

    config = _breaker_config(settings)
    instance = settings.instance_name
    breakers = {
        name: SharedBreaker(name, config, instance=instance, on_change=_on_breaker_change(metrics))
        for name in UPSTREAMS
    }
    if coordination is not None and settings.breaker_shared:
        # One verdict per upstream for all instances; stopped before the Redis client closes.
        # On the coordination client, each call bounded by half a sync interval: the requests
        # never wait on it (breakers decide in-process and the sync runs beside them), and a
        # call given up because a busy loop read Redis late would make this instance decide
        # alone for an interval.
        breaker_sync = BreakerSync(
            coordination,
            breakers.values(),
            config,
            namespace=settings.cache_namespace,
            instance=instance,
            interval_s=settings.breaker_sync_interval_s,
            timeout_s=max(settings.redis_timeout_s, settings.breaker_sync_interval_s / 2),
            on_error=metrics.breaker_redis_error,
        )
        await breaker_sync.start()
        stack.push_async_callback(breaker_sync.aclose)
    credentials = None
    # An empty value (ALPACA_API_KEY_ID= in config/.env) is "not configured", not a key.
    if settings.alpaca_api_key_id and settings.alpaca_api_secret_key:
        credentials = Credentials(
            settings.alpaca_api_key_id.get_secret_value(),
            settings.alpaca_api_secret_key.get_secret_value(),
        )

    def session(timeouts: Timeouts) -> Session | None:
        if credentials is None:
            return None
        opened = open_session(credentials, timeouts)
        stack.push_async_callback(close_session, opened)
        return opened

    data_timeouts = Timeouts(settings.data_timeout_s, settings.data_connect_timeout_s)
    trading_timeouts = Timeouts(settings.trading_timeout_s, settings.trading_connect_timeout_s)
    options_timeouts = Timeouts(settings.options_timeout_s, settings.options_connect_timeout_s)
    # One session per host: options data lives on the data host, behind its own breaker and
    # with its own timeouts.
    data_session = session(data_timeouts)
    trading_session = session(trading_timeouts)
    # Alpaca counts calls per account and host: each host's two upstreams spend one budget.
    budgets = _budgets(settings, metrics, coordination)
    data = AlpacaTransport(
        "data",
        settings.data_base_url,
        data_session,
        breakers["data"],
        metrics,
        budget=budgets["data"],
    )
    options = AlpacaTransport(
        "options",
        settings.data_base_url,
        data_session,
        breakers["options"],
        metrics,
        timeouts=options_timeouts,
        budget=budgets["data"],
    )
    trading = AlpacaTransport(
        "trading",
        settings.trading_base_url,
        trading_session,
        breakers["trading"],
        metrics,
        exact_numbers=True,
        budget=budgets["trading"],
    )
    # Reference data the read path consults (assets, contracts, clock) shares the trading host
    # but not its breaker: a flood of unknown symbols must not open the door orders go through.
    reference = AlpacaTransport(
        "reference",
        settings.trading_base_url,
        trading_session,
        breakers["reference"],
        metrics,
        timeouts=Timeouts(settings.reference_timeout_s, settings.reference_connect_timeout_s),
        exact_numbers=True,
        budget=budgets["trading"],
    )
    store = await _open_store(settings)
    stack.push_async_callback(store.close)
    error_log = ErrorLogWriter(
        store,
        max_queue=settings.error_log_queue_size,
        on_drop=metrics.error_log_dropped,
        retention=ErrorLogRetention(
            max_rows=settings.error_log_max_rows,
            max_age_s=settings.error_log_retention_days * 86_400,
        ),
    )
    error_log.start()
    stack.push_async_callback(error_log.aclose)
    keys = KeyRing(
        store,
        ttl_s=settings.key_cache_ttl_s,
        miss_ttl_s=settings.key_miss_ttl_s,
        store_timeout_s=settings.key_store_timeout_s,
        stale_grace_s=settings.key_stale_grace_s,
        max_entries=settings.key_cache_max_entries,
    )
    metrics.watch_size("key_cache", lambda: (keys.size(), None))
    stack.push_async_callback(keys.aclose)
    store.watch_revocations(keys.on_revoked)
    quotas = _quotas(settings, metrics, redis, settings.key_quota_per_minute)
    anonymous_quotas = (
        _quotas(settings, metrics, redis, settings.anonymous_quota_per_minute)
        if settings.anonymous_quota_per_minute > 0
        else None
    )
    trading_client = TradingAccountClient(trading)
    orders = OrderDesk(
        trading_client,
        store,
        reconcile_attempts=settings.order_reconcile_attempts,
        reconcile_first_wait_s=settings.order_reconcile_first_wait_s,
    )
    stack.push_async_callback(orders.aclose)  # runs before the sessions and store close
    if settings.order_sweep_interval_s > 0 and settings.credentials_configured:
        sweep = OrderSweep(
            orders,
            store,
            metrics,
            interval_s=settings.order_sweep_interval_s,
            min_age_s=settings.order_sweep_min_age_s,
            never_placed_after_s=settings.order_sweep_never_placed_after_s,
            batch_size=settings.order_sweep_batch_size,
        )
        sweep.start()  # its first pass runs now, beside start-up, not before it
        stack.push_async_callback(sweep.aclose)
    read_through = ReadThrough(
        cache,
        metrics,
        negative_ttl_s=settings.cache_negative_ttl_s,
        stale_retention_s=settings.cache_stale_retention_s,
        clock_skew_tolerance_s=settings.clock_skew_tolerance_ms / 1000,
        max_flight_keys=settings.flights_max_keys,
        shared=shared_flights,
    )
    metrics.watch_size("flights", lambda: (read_through.flights(), None))
    reference_assets = TradingClient(reference)
    option_contracts = OptionContractsClient(reference)
    lookups_per_minute = settings.asset_lookups_per_minute
    missing = MissingSymbols(
        reference_assets,
        option_contracts,
        read_through,
        budget=MemoryQuotas(lookups_per_minute, max(1, lookups_per_minute // 3)),
        asset_ttl_s=settings.cache_asset_ttl_s,
        contract_ttl_s=settings.cache_option_contracts_ttl_s,
    )
    reads = StockReads(StockDataClient(data), reference_assets, missing, read_through, settings)
    metrics.watch_size("bar_spans", lambda: (reads.bar_spans(), None))
    option_reads = OptionReads(
        OptionDataClient(options), option_contracts, missing, read_through, settings
    )
    # Closed first at shutdown (pushed last): clients and upstream connections end cleanly.
    market = MarketSession(metrics)
    streams = open_stream_hub(settings, metrics, credentials, cache, market, redis)
    stack.push_async_callback(streams.aclose)
    return GatewayState(
        settings=settings,
        metrics=metrics,
        cache=cache,
        breakers=breakers,
        stocks=reads,
        alpaca=AlpacaReads(data, options, read_through, settings),
        transports={"data": data, "options": options, "trading": trading, "reference": reference},
        options=option_reads,
        trading=trading_client,
        orders=orders,
        store=store,
        keys=keys,
        quotas=quotas,
        anonymous_quotas=anonymous_quotas,
        error_log=error_log,
        source=settings.source_name,
        streams=streams,
        market=market,
    )


async def _watch_market_clock(state: GatewayState, interval_s: float) -> None:
    """Keep `gateway_market_open` current whether or not clients ask for the clock: the
    quote-age alert only applies while the market is open."""
    while True:
        try:
            outcome = await state.stocks.clock()
        except Exception:  # a bug must not silently stop the gauge: log it, keep polling
            logger.exception("market clock poll failed")
        else:
            if isinstance(outcome, Served):
                state.market.observed(outcome.value["is_open"])
        await asyncio.sleep(interval_s)


async def _open_store(settings: Settings) -> Store:
    """PostgreSQL when DATABASE_URL is set, else the embedded SQLite file; migrated at start."""
    store: Store
    if settings.database_url is not None:
        store = await PostgresStore.open(settings.database_url.get_secret_value())
    else:
        store = await EmbeddedStore.open(settings.embedded_db_path)
    try:
        applied = await store.migrate()
    except BaseException:
        await store.close()
        raise
    if applied:
        logger.bind(dependency=store.dependency).info("store migrated: {}", applied)
    return store


def __getattr__(name: str) -> FastAPI:
    if name == "app":
        application = create_app(load_settings(), freeze_after_startup=True)
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
