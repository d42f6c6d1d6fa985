"""Every Prometheus metric, on an explicit registry built per app (no global state).

Names follow Prometheus conventions: `gateway_` prefix, base units, `_total` counters. No label
takes a raw symbol, path or key: routes are templates and everything else is a closed set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.alpaca.budget import LANES, THROTTLE_REASONS, Lane, ThrottleReason
from app.errors import ErrorCode, Upstream

# Every label value is one of a closed set, typed: mypy refuses a value the set lacks, and the
# children of each set are created at start (exported as 0, not missing).
UpstreamOutcome = Literal[
    "ok",
    "no_data",
    "not_found",
    "timeout",
    "unavailable",
    "bad_response",
    "rate_limited",
    "auth_failed",
    "rejected",
    "circuit_open",
]
CacheResult = Literal["hit", "miss", "shared", "stale", "negative"]
DataKind = Literal[
    "quote",
    "trade",
    "snapshot",
    "bar",
    "clock",
    "asset",
    "option_quote",
    "option_trade",
    "option_chain",
    "option_contracts",
    "option_contract",
    # The Alpaca-compatible face keeps Alpaca's own objects (app/reads/alpaca.py).
    "alpaca_quote",
    "alpaca_trade",
    "alpaca_bar",
    "alpaca_snapshot",
    "alpaca_option_quote",
    "alpaca_option_trade",
    "alpaca_option_snapshot",
    "alpaca_page",
]
ServedAs = Literal["miss", "hit", "shared", "stale", "stream"]
Dependency = Literal["redis"]
Structure = Literal["value_cache", "near_cache", "flights", "key_cache", "bar_spans"]
# What the order sweep made of an unsettled audit row (app/order_sweep.py).
SweepResult = Literal["reconciled", "never_placed", "still_unknown"]
SWEEP_RESULTS: tuple[SweepResult, ...] = get_args(SweepResult)
# How a key this instance missed got its one upstream call across instances (app/shared_flights.py).
SharedFlightResult = Literal["led", "followed", "took_over", "timed_out", "unshared"]
SHARED_FLIGHT_RESULTS: tuple[SharedFlightResult, ...] = get_args(SharedFlightResult)
# Real-time streams (app/streams): the feeds, what an upstream connection attempt came to, and
# the upstream connection's state as a gauge value (app/streams/upstream.py UpstreamState).
StreamDirection = Literal["in", "out"]
# What became of a streamed quote or trade offered to the REST cache (app/streams/refresh.py).
StreamRefresh = Literal["stored", "kept_newer", "refused", "not_latest"]
StreamAttempt = Literal[
    "connected", "failed", "dropped", "connection_limit", "rate_limited", "refused"
]
STREAM_ATTEMPTS: tuple[StreamAttempt, ...] = get_args(StreamAttempt)
UPSTREAMS: tuple[Upstream, ...] = get_args(Upstream)
UPSTREAM_OUTCOMES: tuple[UpstreamOutcome, ...] = get_args(UpstreamOutcome)
CACHE_RESULTS: tuple[CacheResult, ...] = get_args(CacheResult)
DATA_KINDS: tuple[DataKind, ...] = get_args(DataKind)
# Closed set of upstream operations per upstream (the `endpoint` label).
UPSTREAM_ENDPOINTS = {
    "data": (
        "quotes_latest",
        "trades_latest",
        "bars_latest",
        "snapshots",
        "bars",
        "quotes",
        "trades",
    ),
    "options": (
        *("option_quotes_latest", "option_trades_latest", "option_snapshots", "option_chain"),
    ),
    "trading": (
        *("account", "positions", "position", "orders", "order", "order_by_client_id"),
        *("submit_order", "replace_order", "cancel_order", "cancel_orders"),
    ),
    "reference": ("asset", "assets", "clock", "calendar", "option_contracts", "option_contract"),
}

HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
AGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400, 604800)
# A stream frame's time inside the gateway, from 100 µs (fan-out on an idle instance) up to the
# seconds a client may lag before its buffer fills and it is disconnected.
STREAM_LAG_BUCKETS = (
    *(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
    *(0.25, 0.5, 1, 2.5, 5),
)


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        watchlist: Iterable[str] = (),
        multiprocess: bool = False,
    ) -> None:
        """`multiprocess`: PROMETHEUS_MULTIPROC_DIR is set (uvicorn --workers N); gauges then
        merge across workers by the mode each declares (max for breaker state, min for
        dependency up, ...)."""
        self._multiprocess = multiprocess
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # The only symbols that may become label values: a bounded list the operator chose.
        self._watchlist = frozenset(watchlist)
        self._newest_observed: dict[str, float] = {}
        self._http_requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests answered, by route template, method and status class",
            ["method", "route", "status_class"],
            registry=r,
        )
        self._http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self._http_errors = Counter(
            "gateway_http_errors_total",
            "Problem responses by contract error code",
            ["code"],
            registry=r,
        )
        self._upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Calls to Alpaca (or short-circuited ones) by upstream, endpoint and outcome",
            ["upstream", "endpoint", "outcome"],
            registry=r,
        )
        self._upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Duration of calls that reached Alpaca",
            ["upstream", "endpoint"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self._upstream_last_success = Gauge(
            "gateway_upstream_last_success_timestamp_seconds",
            "Unix time of the last successful call per upstream",
            ["upstream"],
            multiprocess_mode="max",
            registry=r,
        )
        self._upstream_budget_remaining = Gauge(
            "gateway_upstream_ratelimit_remaining",
            "Alpaca's X-RateLimit-Remaining on its latest answer",
            ["upstream"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        # The account's rate budget per lane (app/alpaca/budget.py), shared by the instances.
        self._budget_per_minute = Gauge(
            "gateway_upstream_budget_per_minute",
            "The Alpaca rate budget configured per lane (data: data and options; trading:"
            " trading and reference), calls per minute for the whole account",
            ["lane"],
            multiprocess_mode="max",
            registry=r,
        )
        self._budget_remaining = Gauge(
            "gateway_upstream_budget_remaining",
            "Calls the lane's budget would let an order-priority call make at once, as this"
            " instance last saw it (the shared budget, or its own share while Redis is away)",
            ["lane"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._budget_throttled = Counter(
            "gateway_upstream_throttled_total",
            "Calls held back before Alpaca by lane and reason: budget (the lane's budget is"
            " spent) or alpaca_block (Alpaca answered 429 or Remaining 0: no call until its"
            " reset, then one probe)",
            ["lane", "reason"],
            registry=r,
        )
        self._budget_fallback = Gauge(
            "gateway_upstream_budget_fallback",
            "1 while this instance spends its own share of the budget because Redis failed",
            ["lane"],
            multiprocess_mode="max",
            registry=r,
        )
        self._budget_wait = Histogram(
            "gateway_upstream_budget_wait_seconds",
            "How long order-priority calls waited for their cell of the budget",
            ["lane"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self._breaker_state = Gauge(
            "gateway_circuit_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            ["upstream"],
            multiprocess_mode="max",
            registry=r,
        )
        self._breaker_transitions = Counter(
            "gateway_circuit_breaker_transitions_total",
            "Circuit breaker state changes",
            ["upstream", "from_state", "to_state"],
            registry=r,
        )
        self._breaker_source = Gauge(
            "gateway_circuit_breaker_state_source",
            "1 for where each breaker's state comes from: shared (the fleet's, in Redis) or"
            " local (this instance alone: no Redis, or Redis not answering)",
            ["upstream", "source"],
            multiprocess_mode="max",
            registry=r,
        )
        self._breaker_opened_by = Gauge(
            "gateway_circuit_breaker_opened_by_info",
            "1 for the instance (GATEWAY_INSTANCE:pid) whose calls last opened each breaker;"
            " one series per upstream, replaced at each opening",
            ["upstream", "opened_by"],
            multiprocess_mode="max",
            registry=r,
        )
        self._breaker_redis_errors = Counter(
            "gateway_circuit_breaker_redis_errors_total",
            "Shared-breaker calls to Redis that failed (the breakers then decide locally)",
            registry=r,
        )
        self._opened_by: dict[str, str] = {}
        self._cache_requests = Counter(
            "gateway_cache_requests_total",
            "Cache lookups by data kind and result (hit, miss, shared, stale, negative)",
            ["kind", "result"],
            registry=r,
        )
        self._cache_backend_errors = Counter(
            "gateway_cache_backend_errors_total",
            "Cache backend operations that failed (the request went on without the cache)",
            ["backend"],
            registry=r,
        )
        self._market_open = Gauge(
            "gateway_market_open",
            "1 while Alpaca's market clock says the market is open, 0 otherwise",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._watchlist_observed = Gauge(
            "gateway_watchlist_last_observed_timestamp_seconds",
            "Unix time of the newest observed_at served for each METRICS_WATCHLIST symbol",
            ["symbol"],
            multiprocess_mode="max",
            registry=r,
        )
        self._error_log_dropped = Counter(
            "gateway_error_log_dropped_total",
            "Error-log entries dropped because the bounded queue was full or the store failed",
            registry=r,
        )
        self._dependency_up = Gauge(
            "gateway_dependency_up",
            "1 when a dependency answers, 0 when it is down",
            ["dependency"],
            multiprocess_mode="min",
            registry=r,
        )
        self._data_age = Histogram(
            "gateway_data_age_seconds",
            "Age (now - observed_at) of market values served, by kind and cache state",
            ["kind", "cache"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        # Children looked up once: `.labels()` hashes and locks on every call, and these two
        # are touched on every served value.
        self._cache_children: dict[tuple[str, str], Any] = {}
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._inprocess_entries = Gauge(
            "gateway_inprocess_entries",
            "Entries held by each bounded in-process structure (value_cache: quotes, errors and"
            " asset lookups; near_cache: the one in front of Redis; flights; key_cache;"
            " bar_spans: closed bar ranges a later start shares)",
            ["structure"],
            multiprocess_mode="max",
            registry=r,
        )
        self._inprocess_bytes = Gauge(
            "gateway_inprocess_bytes",
            "Encoded bytes held by each bounded in-process cache",
            ["structure"],
            multiprocess_mode="max",
            registry=r,
        )
        self._order_sweep_rows = Counter(
            "gateway_order_sweep_rows_total",
            "Unsettled order audit rows the sweep looked up at Alpaca, by result: reconciled"
            " (Alpaca holds the order), never_placed (Alpaca's own not-found, past"
            " ORDER_SWEEP_NEVER_PLACED_AFTER_S), still_unknown (left for the next sweep)",
            ["result"],
            registry=r,
        )
        self._order_audit_unsettled = Gauge(
            "gateway_order_audit_unsettled_rows",
            "Order audit rows still pending or unknown ORDER_SWEEP_MIN_AGE_S after they were"
            " recorded, counted at the end of each sweep",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._shared_flight_keys = Counter(
            "gateway_shared_flight_keys_total",
            "Keys this instance missed, by how the instances' one upstream call was arranged"
            " through Redis: led (this instance held the lease and called Alpaca), followed"
            " (another instance's call answered it), took_over (the lease came free during the"
            " wait: its holder released it without a value, or died and the lease lapsed; then"
            " this instance called), timed_out (SHARED_FLIGHT_WAIT_S ran out: UPSTREAM_TIMEOUT),"
            " unshared (Redis unavailable: called Alpaca without asking, as one instance does)",
            ["result"],
            registry=r,
        )
        self._shared_flight_wait = Histogram(
            "gateway_shared_flight_wait_seconds",
            "How long a key waited for another instance's upstream call, by how the wait ended"
            " (followed, took_over, timed_out)",
            ["result"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self._stream_clients = Gauge(
            "gateway_stream_clients",
            "Clients connected to the gateway's real-time stream of each Alpaca feed",
            ["feed"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self._stream_messages = Counter(
            "gateway_stream_messages_total",
            "Stream messages received from Alpaca (in) and written to clients (out, one per"
            " client), by feed",
            ["feed", "direction"],
            registry=r,
        )
        self._stream_delivery_lag = Histogram(
            "gateway_stream_delivery_lag_seconds",
            "Time from a stream frame's arrival at this instance (from Alpaca, or from the"
            " leader instance's relay) to its write to a client, one per client frame, by feed",
            ["feed"],
            buckets=STREAM_LAG_BUCKETS,
            registry=r,
        )
        self._stream_slow_clients = Counter(
            "gateway_stream_slow_client_disconnects_total",
            "Stream clients disconnected because their buffer (STREAM_CLIENT_BUFFER_FRAMES)"
            " filled: they were told (error 407 slow client), never fed a thinned stream",
            ["feed"],
            registry=r,
        )
        self._stream_upstream_state = Gauge(
            "gateway_stream_upstream_state",
            "This instance's connection to each Alpaca feed: 0 idle (no client asked yet),"
            " 1 connecting, 2 streaming, 3 backing off before reconnecting",
            ["feed"],
            multiprocess_mode="max",
            registry=r,
        )
        self._stream_leader = Gauge(
            "gateway_stream_leader",
            "1 while this instance holds the feed's one upstream connection for every instance"
            " (with Redis: holds the feed's lease; without: a client here asked for the feed)",
            ["feed"],
            multiprocess_mode="max",
            registry=r,
        )
        self._stream_upstream_attempts = Counter(
            "gateway_stream_upstream_attempts_total",
            "Connections to Alpaca's feeds by how each ended or began: connected, failed,"
            " dropped (lost or silent past STREAM_SILENCE_S), connection_limit (406),"
            " rate_limited (429 at the upgrade), refused (402 auth failed, 409 insufficient"
            " subscription)",
            ["feed", "outcome"],
            registry=r,
        )
        self._stream_gaps = Counter(
            "gateway_stream_gaps_total",
            "Times a feed's upstream connection was lost and re-established: Alpaca replays"
            " nothing, so clients were told (a `gap` message) that messages may be missing",
            ["feed"],
            registry=r,
        )
        self._stream_cache_refreshes = Counter(
            "gateway_stream_cache_refreshes_total",
            "Streamed quotes and trades offered to the REST cache, by cache kind and result:"
            " stored, kept_newer (the cache held a newer value), refused (unreadable, or"
            " observed ahead of the gateway's clock), not_latest (a trade whose conditions"
            " Alpaca's latest trade leaves out)",
            ["kind", "result"],
            registry=r,
        )
        self._sizes: dict[str, Callable[[], tuple[int, int | None]]] = {}
        # Every label set here comes from a closed set (codes, upstreams, endpoints, outcomes).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._age_children: dict[tuple[str, str], Any] = {}
        self._initialise_children()

    def _initialise_children(self) -> None:
        # An unset label child is not exported; dashboards would show "No data" instead of 0.
        for upstream in UPSTREAMS:
            self._breaker_state.labels(upstream).set(0)
            self._breaker_source.labels(upstream, "local").set(1)
            self._breaker_source.labels(upstream, "shared").set(0)
            for endpoint in UPSTREAM_ENDPOINTS[upstream]:
                for outcome in UPSTREAM_OUTCOMES:
                    self._upstream_requests.labels(upstream, endpoint, outcome)
        for kind in DATA_KINDS:
            for result in CACHE_RESULTS:
                self._cache_requests.labels(kind, result)
        for code in ErrorCode:
            self._http_errors.labels(code.name)
        self._cache_backend_errors.labels("redis")
        for lane in LANES:
            self._budget_fallback.labels(lane).set(0)
            for reason in THROTTLE_REASONS:
                self._budget_throttled.labels(lane, reason)
        for swept in SWEEP_RESULTS:
            self._order_sweep_rows.labels(swept)
        for shared in SHARED_FLIGHT_RESULTS:
            self._shared_flight_keys.labels(shared)

    # --- what the gateway records, one named method each ----------------------------------------
    def http_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        """`route` is the route template (or a fixed placeholder), never a raw path."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            # Label lookups hash and lock on every call; routes x statuses is a small set.
            children = (
                self._http_requests.labels(method, route, f"{status // 100}xx"),
                self._http_duration.labels(method, route),
            )
            self._http_children[key] = children
        children[0].inc()
        children[1].observe(duration_s)

    def http_error(self, code: ErrorCode) -> None:
        self._child(self._http_errors, code.name).inc()

    def cache_result(self, kind: DataKind, result: CacheResult) -> None:
        child = self._cache_children.get((kind, result))
        if child is None:
            child = self._cache_children[kind, result] = self._cache_requests.labels(kind, result)
        child.inc()

    def served_age(self, kind: DataKind, cache: ServedAs, age_s: float) -> None:
        child = self._age_children.get((kind, cache))
        if child is None:
            child = self._age_children[kind, cache] = self._data_age.labels(kind, cache)
        child.observe(age_s)

    def observed(self, symbol: str, observed_epoch: float) -> None:
        """Freshness of a watched symbol: the newest observation time ever served."""
        if symbol not in self._watchlist:
            return
        if observed_epoch > self._newest_observed.get(symbol, 0.0):
            self._newest_observed[symbol] = observed_epoch
            self._watchlist_observed.labels(symbol).set(observed_epoch)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once (`.labels()` hashes and locks per call)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def upstream_call(
        self, upstream: Upstream, endpoint: str, outcome: UpstreamOutcome, duration_s: float
    ) -> None:
        self._upstream_requests.labels(upstream, endpoint, outcome).inc()
        self._upstream_duration.labels(upstream, endpoint).observe(duration_s)

    def upstream_outcome(self, upstream: Upstream, endpoint: str, outcome: UpstreamOutcome) -> None:
        # Breaker-open and rate-limit answers land here once per refused request: cheap child.
        self._child(self._upstream_requests, upstream, endpoint, outcome).inc()

    def upstream_success(self, upstream: Upstream, unix_time: float) -> None:
        self._upstream_last_success.labels(upstream).set(unix_time)

    def upstream_budget(self, upstream: Upstream, remaining: float) -> None:
        self._upstream_budget_remaining.labels(upstream).set(remaining)

    def budget_configured(self, lane: Lane, per_minute: int) -> None:
        self._budget_per_minute.labels(lane).set(per_minute)

    def budget_remaining(self, lane: Lane, cells: float) -> None:
        self._child(self._budget_remaining, lane).set(cells)

    def budget_throttled(self, lane: Lane, reason: ThrottleReason) -> None:
        self._child(self._budget_throttled, lane, reason).inc()

    def budget_fallback(self, lane: Lane, *, active: bool) -> None:
        self._budget_fallback.labels(lane).set(1 if active else 0)

    def budget_waited(self, lane: Lane, wait_s: float) -> None:
        self._child(self._budget_wait, lane).observe(wait_s)

    def breaker_transition(self, upstream: str, before: str, after: str, state_value: int) -> None:
        self._breaker_state.labels(upstream).set(state_value)
        self._breaker_transitions.labels(upstream, before, after).inc()

    def breaker_source(self, upstream: str, source: str) -> None:
        """`source` is "shared" or "local"; the other one is set to 0."""
        for each in ("shared", "local"):
            self._breaker_source.labels(upstream, each).set(1 if each == source else 0)

    def breaker_opened_by(self, upstream: str, instance: str) -> None:
        """Instance names change with every restart: only the latest opener keeps a series."""
        previous = self._opened_by.get(upstream)
        if previous is not None and previous != instance:
            # A multiprocess file keeps what it was given; a removed child would stay at 1.
            self._breaker_opened_by.labels(upstream, previous).set(0)
            self._breaker_opened_by.remove(upstream, previous)
        self._opened_by[upstream] = instance
        self._breaker_opened_by.labels(upstream, instance).set(1)

    def breaker_redis_error(self) -> None:
        self._breaker_redis_errors.inc()

    def cache_backend_error(self) -> None:
        self._cache_backend_errors.labels("redis").inc()

    def dependency(self, dependency: Dependency, *, up: bool) -> None:
        self._dependency_up.labels(dependency).set(1 if up else 0)

    def market_open(self, is_open: bool) -> None:
        self._market_open.set(1 if is_open else 0)

    def error_log_dropped(self) -> None:
        self._error_log_dropped.inc()

    def order_swept(self, result: SweepResult) -> None:
        self._child(self._order_sweep_rows, result).inc()

    def order_audit_unsettled(self, rows: int) -> None:
        self._order_audit_unsettled.set(rows)

    def shared_flight(self, result: SharedFlightResult, *, waited_s: float | None = None) -> None:
        """One key's way through the instances' single flight; `waited_s` for keys that waited
        for another instance."""
        self._child(self._shared_flight_keys, result).inc()
        if waited_s is not None:
            self._child(self._shared_flight_wait, result).observe(waited_s)

    def stream_feed(self, feed: str) -> None:
        """Export the feed's series at zero before anything happens on it: a dashboard shows
        0 slow clients or gaps, not "No data"."""
        self._stream_upstream_state.labels(feed).set(0)
        self._stream_leader.labels(feed).set(0)
        self._stream_clients.labels(feed).inc(0)
        for direction in get_args(StreamDirection):
            self._child(self._stream_messages, feed, direction)
        self._child(self._stream_delivery_lag, feed)
        self._child(self._stream_slow_clients, feed)
        self._child(self._stream_gaps, feed)

    def stream_leader(self, feed: str, leading: bool) -> None:
        self._stream_leader.labels(feed).set(1 if leading else 0)

    def stream_clients(self, feed: str, change: int) -> None:
        self._stream_clients.labels(feed).inc(change)

    def stream_messages(self, feed: str, direction: StreamDirection, count: int) -> None:
        self._child(self._stream_messages, feed, direction).inc(count)

    def stream_delivery_lag_observer(self, feed: str) -> Callable[[float], None]:
        """The feed's lag histogram's `observe`, looked up once: it runs per client frame."""
        observe: Callable[[float], None] = self._child(self._stream_delivery_lag, feed).observe
        return observe

    def stream_slow_client(self, feed: str) -> None:
        self._child(self._stream_slow_clients, feed).inc()

    def stream_upstream_state(self, feed: str, state_value: int) -> None:
        self._stream_upstream_state.labels(feed).set(state_value)

    def stream_upstream_attempt(self, feed: str, outcome: StreamAttempt) -> None:
        self._child(self._stream_upstream_attempts, feed, outcome).inc()

    def stream_gap(self, feed: str) -> None:
        self._child(self._stream_gaps, feed).inc()

    def stream_cache_refresh(self, kind: DataKind, result: StreamRefresh) -> None:
        self._child(self._stream_cache_refreshes, kind, result).inc()

    def watch_size(self, structure: Structure, sizes: Callable[[], tuple[int, int | None]]) -> None:
        """Report an in-process structure's (entries, bytes or None) at every scrape, so a bound
        being reached is visible; nothing is done per request."""
        self._sizes[structure] = sizes

    def exposition(self) -> bytes:
        for structure, sizes in self._sizes.items():
            entries, held = sizes()
            self._inprocess_entries.labels(structure).set(entries)
            if held is not None:
                self._inprocess_bytes.labels(structure).set(held)
        if self._multiprocess:
            # Several workers: every worker writes its values to PROMETHEUS_MULTIPROC_DIR and any
            # of them answers the scrape with the merged view, built fresh each time.
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped in 0.26
            return generate_latest(merged)
        return generate_latest(self.registry)
