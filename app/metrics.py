"""Every Prometheus metric, on an explicit registry built per app (no global state).

Names follow Prometheus conventions: `gateway_` prefix, base units, `_total` counters. No label
takes a raw symbol, path or key: routes are templates and everything else is a closed set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.errors import ErrorCode

UPSTREAMS = ("data", "options", "trading", "reference")
UPSTREAM_OUTCOMES = (
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
)
CACHE_RESULTS = ("hit", "miss", "shared", "stale", "negative")
DATA_KINDS = (
    *("quote", "trade", "snapshot", "bar", "clock", "asset"),
    *("option_quote", "option_chain", "option_contracts", "option_contract"),
)
# Closed set of upstream operations per upstream (the `endpoint` label).
UPSTREAM_ENDPOINTS = {
    "data": ("quotes_latest", "trades_latest", "snapshots", "bars"),
    "options": ("option_quotes_latest", "option_chain"),
    "trading": (
        *("account", "positions", "orders", "order", "order_by_client_id"),
        *("submit_order", "cancel_order"),
    ),
    "reference": ("asset", "clock", "option_contracts", "option_contract"),
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
        self.http_requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests answered, by route template, method and status class",
            ["method", "route", "status_class"],
            registry=r,
        )
        self.http_duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_errors = Counter(
            "gateway_http_errors_total",
            "Problem responses by contract error code",
            ["code"],
            registry=r,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Calls to Alpaca (or short-circuited ones) by upstream, endpoint and outcome",
            ["upstream", "endpoint", "outcome"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Duration of calls that reached Alpaca",
            ["upstream", "endpoint"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.upstream_last_success = Gauge(
            "gateway_upstream_last_success_timestamp_seconds",
            "Unix time of the last successful call per upstream",
            ["upstream"],
            multiprocess_mode="max",
            registry=r,
        )
        self.upstream_budget_remaining = Gauge(
            "gateway_upstream_ratelimit_remaining",
            "Alpaca's X-RateLimit-Remaining on its latest answer",
            ["upstream"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_circuit_breaker_state",
            "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open",
            ["upstream"],
            multiprocess_mode="max",
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_circuit_breaker_transitions_total",
            "Circuit breaker state changes",
            ["upstream", "from_state", "to_state"],
            registry=r,
        )
        self.cache_requests = Counter(
            "gateway_cache_requests_total",
            "Cache lookups by data kind and result (hit, miss, shared, stale, negative)",
            ["kind", "result"],
            registry=r,
        )
        self.cache_backend_errors = Counter(
            "gateway_cache_backend_errors_total",
            "Cache backend operations that failed (the request went on without the cache)",
            ["backend"],
            registry=r,
        )
        self.market_open = Gauge(
            "gateway_market_open",
            "1 while Alpaca's market clock says the market is open, 0 otherwise",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.watchlist_observed = Gauge(
            "gateway_watchlist_last_observed_timestamp_seconds",
            "Unix time of the newest observed_at served for each METRICS_WATCHLIST symbol",
            ["symbol"],
            multiprocess_mode="max",
            registry=r,
        )
        self.error_log_dropped = Counter(
            "gateway_error_log_dropped_total",
            "Error-log entries dropped because the bounded queue was full or the store failed",
            registry=r,
        )
        self.dependency_up = Gauge(
            "gateway_dependency_up",
            "1 when a dependency answers, 0 when it is down",
            ["dependency"],
            multiprocess_mode="min",
            registry=r,
        )
        self.data_age = Histogram(
            "gateway_data_age_seconds",
            "Age (now - observed_at) of market values served, by kind and cache state",
            ["kind", "cache"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        # Children looked up once: `.labels()` hashes and locks on every call, and these two
        # are touched on every served value.
        self._cache_children: dict[tuple[str, str], Any] = {}
        self._age_children: dict[tuple[str, str], Any] = {}
        self._initialise_children()

    def _initialise_children(self) -> None:
        # An unset label child is not exported; dashboards would show "No data" instead of 0.
        for upstream in UPSTREAMS:
            self.breaker_state.labels(upstream).set(0)
            for endpoint in UPSTREAM_ENDPOINTS[upstream]:
                for outcome in UPSTREAM_OUTCOMES:
                    self.upstream_requests.labels(upstream, endpoint, outcome)
        for kind in DATA_KINDS:
            for result in CACHE_RESULTS:
                self.cache_requests.labels(kind, result)
        for code in ErrorCode:
            self.http_errors.labels(code.name)

    # --- recording helpers used by the transport, cache and API -------------------------------
    def cache_result(self, kind: str, result: str) -> None:
        child = self._cache_children.get((kind, result))
        if child is None:
            child = self._cache_children[kind, result] = self.cache_requests.labels(kind, result)
        child.inc()

    def served_age(self, kind: str, cache: str, age_s: float) -> None:
        child = self._age_children.get((kind, cache))
        if child is None:
            child = self._age_children[kind, cache] = self.data_age.labels(kind, cache)
        child.observe(age_s)

    def observed(self, symbol: str, observed_epoch: float) -> None:
        """Freshness of a watched symbol: the newest observation time ever served."""
        if symbol not in self._watchlist:
            return
        if observed_epoch > self._newest_observed.get(symbol, 0.0):
            self._newest_observed[symbol] = observed_epoch
            self.watchlist_observed.labels(symbol).set(observed_epoch)

    def upstream_call(self, upstream: str, endpoint: str, outcome: str, duration_s: float) -> None:
        self.upstream_requests.labels(upstream, endpoint, outcome).inc()
        self.upstream_duration.labels(upstream, endpoint).observe(duration_s)

    def upstream_outcome(self, upstream: str, endpoint: str, outcome: str) -> None:
        self.upstream_requests.labels(upstream, endpoint, outcome).inc()

    def upstream_success(self, upstream: str, unix_time: float) -> None:
        self.upstream_last_success.labels(upstream).set(unix_time)

    def upstream_budget(self, upstream: str, remaining: float) -> None:
        self.upstream_budget_remaining.labels(upstream).set(remaining)

    def exposition(self) -> bytes:
        if self._multiprocess:
            # Several workers: every worker writes its values to PROMETHEUS_MULTIPROC_DIR and any
            # of them answers the scrape with the merged view, built fresh each time.
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped in 0.26
            return generate_latest(merged)
        return generate_latest(self.registry)
