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
ServedAs = Literal["miss", "hit", "shared", "stale"]
Dependency = Literal["redis"]
Structure = Literal["value_cache", "near_cache", "flights", "key_cache"]
# What the order sweep made of an unsettled audit row (app/order_sweep.py).
SweepResult = Literal["reconciled", "never_placed", "still_unknown"]
SWEEP_RESULTS: tuple[SweepResult, ...] = get_args(SweepResult)
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
            " asset lookups; near_cache: the one in front of Redis; flights; key_cache)",
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
        self._sizes: dict[str, Callable[[], tuple[int, int | None]]] = {}
        # Every label set here comes from a closed set (codes, upstreams, endpoints, outcomes).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._age_children: dict[tuple[str, str], Any] = {}
        self._initialise_children()

    def _initialise_children(self) -> None:
        # An unset label child is not exported; dashboards would show "No data" instead of 0.
        for upstream in UPSTREAMS:
            self._breaker_state.labels(upstream).set(0)
            for endpoint in UPSTREAM_ENDPOINTS[upstream]:
                for outcome in UPSTREAM_OUTCOMES:
                    self._upstream_requests.labels(upstream, endpoint, outcome)
        for kind in DATA_KINDS:
            for result in CACHE_RESULTS:
                self._cache_requests.labels(kind, result)
        for code in ErrorCode:
            self._http_errors.labels(code.name)
        self._cache_backend_errors.labels("redis")
        for swept in SWEEP_RESULTS:
            self._order_sweep_rows.labels(swept)

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

    def breaker_transition(self, upstream: str, before: str, after: str, state_value: int) -> None:
        self._breaker_state.labels(upstream).set(state_value)
        self._breaker_transitions.labels(upstream, before, after).inc()

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
