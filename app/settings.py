"""Gateway settings, read once from the environment (and `config/.env`) by `load_settings()`.

Names come from the API contract; every setting is documented in `config/.env.example`.
Nothing here is read at import time: `create_app()` receives a `Settings` instance.
"""

from __future__ import annotations

import os
import socket
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ALPACA_DATA_URL = "https://data.alpaca.markets"
ALPACA_PAPER_URL = "https://paper-api.alpaca.markets"
ALPACA_LIVE_URL = "https://api.alpaca.markets"
STOCK_FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file="config/.env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # `DEFAULT_MAX_AGE_MS=` in config/.env means "unset", not an invalid number.
        env_ignore_empty=True,
    )

    # --- Alpaca credentials and hosts -------------------------------------------------------
    alpaca_api_key_id: SecretStr | None = None
    alpaca_api_secret_key: SecretStr | None = None
    alpaca_paper: bool = True
    alpaca_data_url: str | None = None
    alpaca_trading_url: str | None = None
    alpaca_stream_url: str | None = None
    alpaca_data_feed: str = "iex"
    alpaca_options_feed: str = Field(default="indicative", pattern=r"^(indicative|opra)$")
    upstream_source_name: str | None = None

    # --- Infrastructure ---------------------------------------------------------------------
    redis_url: SecretStr | None = None
    # REDIS_URL names one node of a Redis Cluster: keys go to the node owning their slot.
    redis_cluster: bool = False
    database_url: SecretStr | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    # The HTTP server `python -m app.serve` (make run, the container) starts, and its workers.
    gateway_server: Literal["granian", "uvicorn"] = "granian"
    gateway_workers: int = Field(default=1, ge=1, le=64)
    # Names this replica where several share Redis (logs, metrics, /ready, shared breakers);
    # empty: the host name. Each worker process adds its pid: each has its own breakers.
    gateway_instance: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,64}$")
    # --- Hostile clients: what the HTTP server and the request middleware bound ---------------
    # A connection must send a request's headers within this (counted from its opening, or
    # from the previous answer on a kept-alive connection), or it is closed.
    gateway_header_read_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # A request's line and headers together; larger ones are refused (431, or 400 on uvicorn).
    gateway_max_header_bytes: int = Field(default=16_384, ge=8_192, le=1_048_576)
    # Connections one worker serves at once (each a file descriptor); more wait (granian) or
    # get 503 (uvicorn).
    gateway_max_connections: int = Field(default=2_048, ge=16, le=100_000)
    # A request body must have fully arrived within this, counted from the request's start.
    gateway_body_read_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Origins allowed to call from a browser (comma-separated); empty: no CORS headers at all.
    cors_allow_origins: str = Field(default="", pattern=r"^[A-Za-z0-9.,:/*\- ]{0,2000}$")
    # Who may read /metrics and /ready's details: open (anyone), key (OPS_KEY as a bearer) or
    # internal (only on the listener at OPS_HOST:OPS_PORT).
    ops_access: Literal["open", "key", "internal"] = "open"
    ops_key: SecretStr | None = None
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=8001, ge=1, le=65_535)
    log_level: str = "INFO"
    log_json: bool = False
    max_body_bytes: int = Field(default=65_536, gt=0)
    embedded_db_path: str = "data/gateway.sqlite3"
    # prometheus-client's own variable: set (to an emptied directory) when running several
    # uvicorn workers, so /metrics merges every worker's values.
    prometheus_multiproc_dir: str | None = None
    metrics_watchlist: str = Field(default="", pattern=r"^[A-Za-z0-9.,\- ]{0,1000}$")
    clock_poll_interval_s: float = Field(default=60.0, ge=0)
    # /ready answers from dependency checks at most this old; each check waits at most this.
    ready_snapshot_max_age_s: float = Field(default=1.0, ge=0)
    ready_check_timeout_s: float = Field(default=1.0, gt=0)

    # --- API keys and quotas ---------------------------------------------------------------------
    gateway_anonymous_data: bool = False
    key_cache_ttl_s: float = Field(default=1.0, gt=0)
    key_miss_ttl_s: float = Field(default=1.0, gt=0)
    key_store_timeout_s: float = Field(default=0.2, gt=0)
    key_stale_grace_s: float = Field(default=3600.0, ge=0)
    key_quota_per_minute: int = Field(default=1200, ge=1)
    key_quota_burst: int = Field(default=100, ge=1)
    anonymous_quota_per_minute: int = Field(default=1200, ge=0)

    # --- Orders ----------------------------------------------------------------------------------
    order_reconcile_attempts: int = Field(default=4, ge=1, le=20)
    order_reconcile_first_wait_s: float = Field(default=0.25, gt=0)
    # The sweep that settles audit rows whose outcome was never learned (app/order_sweep.py).
    order_sweep_interval_s: float = Field(default=30.0, ge=0)
    order_sweep_min_age_s: float = Field(default=30.0, gt=0)
    order_sweep_never_placed_after_s: float = Field(default=120.0, gt=0)
    order_sweep_batch_size: int = Field(default=20, ge=1, le=1000)
    error_log_queue_size: int = Field(default=1000, ge=1)
    # error_logs keeps the newest ERROR_LOG_MAX_ROWS rows, none older than the retention.
    error_log_max_rows: int = Field(default=100_000, ge=1)
    error_log_retention_days: float = Field(default=7.0, gt=0)

    # --- Upstream timeouts (seconds): total bounds the whole call, body included ---------------
    data_timeout_s: float = Field(default=2.0, gt=0)
    data_connect_timeout_s: float = Field(default=0.5, gt=0)
    options_timeout_s: float = Field(default=3.0, gt=0)
    options_connect_timeout_s: float = Field(default=0.5, gt=0)
    trading_timeout_s: float = Field(default=5.0, gt=0)
    trading_connect_timeout_s: float = Field(default=1.0, gt=0)
    reference_timeout_s: float = Field(default=2.0, gt=0)
    reference_connect_timeout_s: float = Field(default=0.5, gt=0)

    # --- Circuit breakers (one per upstream, same defaults) -----------------------------------
    breaker_window_size: int = Field(default=20, ge=1)
    breaker_minimum_calls: int = Field(default=10, ge=1)
    breaker_failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    breaker_slow_call_duration_s: float = Field(default=1.5, gt=0)
    breaker_slow_call_rate_threshold: float = Field(default=1.0, gt=0, le=1)
    breaker_open_duration_s: float = Field(default=30.0, gt=0)
    breaker_half_open_calls: int = Field(default=3, ge=1)
    breaker_half_open_permit_ttl_s: float = Field(default=10.0, gt=0)
    # With REDIS_URL: one verdict for every instance (shared window, OPEN, trial permits); the
    # state is read back at least this often besides the notices Redis pushes.
    breaker_shared: bool = True
    breaker_sync_interval_s: float = Field(default=1.0, gt=0)

    # --- Cache TTLs (seconds) ------------------------------------------------------------------
    cache_quote_ttl_s: float = Field(default=1.0, gt=0)
    cache_trade_ttl_s: float = Field(default=1.0, gt=0)
    cache_snapshot_ttl_s: float = Field(default=1.0, gt=0)
    cache_closed_bars_ttl_s: float = Field(default=86_400.0, gt=0)
    cache_open_bars_ttl_s: float = Field(default=1.0, gt=0)
    cache_asset_ttl_s: float = Field(default=3_600.0, gt=0)
    cache_clock_ttl_s: float = Field(default=1.0, gt=0)
    cache_negative_ttl_s: float = Field(default=1.0, gt=0)
    cache_option_quote_ttl_s: float = Field(default=1.0, gt=0)
    cache_option_chain_ttl_s: float = Field(default=1.0, gt=0)
    cache_option_contracts_ttl_s: float = Field(default=60.0, gt=0)
    cache_stale_retention_s: float = Field(default=300.0, ge=0)
    # --- In-process bounds (every structure that grows with clients has one, and a gauge) ----
    cache_max_entries: int = Field(default=100_000, ge=1)
    cache_max_bytes: int = Field(default=32 * 2**20, ge=1)
    cache_near_max_entries: int = Field(default=10_000, ge=1)
    cache_near_max_bytes: int = Field(default=8 * 2**20, ge=1)
    flights_max_keys: int = Field(default=10_000, ge=1)
    key_cache_max_entries: int = Field(default=10_000, ge=1)
    # Closed bar ranges a later start may share (app/reads/bar_spans.py): spans remembered.
    cache_bar_spans_max_entries: int = Field(default=10_000, ge=1)
    redis_timeout_s: float = Field(default=0.1, gt=0)
    cache_namespace: str = Field(default="gw", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # --- One upstream call per key across instances (with Redis; app/shared_flights.py) ------
    shared_flights: bool = True
    shared_flight_lease_s: float = Field(default=2.0, gt=0, le=60)
    shared_flight_wait_s: float = Field(default=5.0, gt=0, le=300)
    shared_flight_poll_s: float = Field(default=0.1, gt=0, le=10)

    # --- Request policy ------------------------------------------------------------------------
    default_max_age_ms: int | None = Field(default=None, ge=0)
    clock_skew_tolerance_ms: int = Field(default=1000, ge=0, le=60_000)
    quotes_max_symbols: int = Field(default=100, ge=1, le=1000)
    data_symbols_per_call: int = Field(default=50, ge=1, le=1000)
    bars_max_pages: int = Field(default=20, ge=1)
    options_chain_max_pages: int = Field(default=10, ge=1)
    asset_lookups_per_minute: int = Field(default=60, ge=1)

    # --- Alpaca's rate budget (per account and host, shared by every instance via Redis) ---
    alpaca_data_budget_per_minute: int = Field(default=200, ge=2)
    alpaca_data_budget_burst: int = Field(default=20, ge=1)
    alpaca_trading_budget_per_minute: int = Field(default=200, ge=2)
    alpaca_trading_budget_burst: int = Field(default=20, ge=1)
    alpaca_order_budget_reserve: int = Field(default=10, ge=0)
    alpaca_order_budget_wait_s: float = Field(default=2.0, ge=0, le=60)
    # Replicas sharing the account; with Redis down each takes budget / (this x its workers).
    gateway_expected_instances: int = Field(default=1, ge=1, le=1000)

    # --- Real-time streams (app/streams): one upstream connection per Alpaca feed -------------
    stream_client_buffer_frames: int = Field(default=1000, ge=1, le=1_000_000)
    # ... and bytes: a client that stops reading holds at most this much of this process.
    stream_client_buffer_bytes: int = Field(default=8 * 2**20, ge=64 * 2**10, le=2**31)
    stream_auth_timeout_s: float = Field(default=10.0, gt=0)
    stream_max_symbols_per_client: int = Field(default=10_000, ge=1, le=1_000_000)
    # Stream connections one key may hold on this instance (past it: Alpaca's 406 at auth).
    stream_max_clients_per_key: int = Field(default=100, ge=1, le=100_000)
    # The largest message a client may send once authenticated (a 10,000-symbol subscribe is
    # about 250 KB); before auth the limit is a fixed 64 KiB.
    stream_max_message_bytes: int = Field(default=2**20, ge=64 * 2**10, le=64 * 2**20)
    # With nobody subscribed to anything, a feed's upstream connection is closed after this
    # long, freeing Alpaca's one slot for the account (0: kept open).
    stream_idle_close_s: float = Field(default=60.0, ge=0)
    stream_reconnect_min_s: float = Field(default=1.0, gt=0)
    stream_reconnect_max_s: float = Field(default=60.0, gt=0)
    # Alpaca keeps a dropped connection's slot about 90 s and answers 406 until then.
    stream_connection_limit_wait_s: float = Field(default=90.0, ge=0)
    stream_silence_s: float = Field(default=60.0, ge=0)
    # With REDIS_URL: the instance holding a feed's connection renews this lease; others relay.
    stream_leader_lease_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("alpaca_data_feed")
    @classmethod
    def _known_feed(cls, feed: str) -> str:
        if feed not in STOCK_FEEDS:
            raise ValueError(f"ALPACA_DATA_FEED must be one of {', '.join(STOCK_FEEDS)}")
        return feed

    @model_validator(mode="after")
    def _budget_bursts_fit(self) -> Settings:
        # No minute may hold more than the budget: the burst is carved out of it.
        lanes = (
            ("DATA", self.alpaca_data_budget_per_minute, self.alpaca_data_budget_burst),
            ("TRADING", self.alpaca_trading_budget_per_minute, self.alpaca_trading_budget_burst),
        )
        for lane, per_minute, burst in lanes:
            if burst >= per_minute:
                raise ValueError(
                    f"ALPACA_{lane}_BUDGET_BURST must be below ALPACA_{lane}_BUDGET_PER_MINUTE"
                )
        if self.alpaca_order_budget_reserve >= self.alpaca_trading_budget_burst:
            raise ValueError(
                "ALPACA_ORDER_BUDGET_RESERVE must be below ALPACA_TRADING_BUDGET_BURST (reads"
                " need a cell of the burst too)"
            )
        return self

    @model_validator(mode="after")
    def _never_placed_outlasts_a_submit(self) -> Settings:
        # Alpaca's "not found" proves an order was never placed only once no submit can still
        # be sending it: a shorter bound could mark as never placed an order then accepted.
        if self.order_sweep_never_placed_after_s <= self.order_submit_max_s:
            raise ValueError(
                "ORDER_SWEEP_NEVER_PLACED_AFTER_S must be longer than the longest submit"
                f" ({self.order_submit_max_s:g} s from TRADING_TIMEOUT_S and the reconcile"
                " settings)"
            )
        if self.order_sweep_never_placed_after_s < self.order_sweep_min_age_s:
            raise ValueError(
                "ORDER_SWEEP_NEVER_PLACED_AFTER_S must be at least ORDER_SWEEP_MIN_AGE_S"
            )
        return self

    @property
    def order_submit_max_s(self) -> float:
        """The longest one submit can take: a lookup of an earlier attempt, the POST, then
        every reconcile lookup (each bounded by TRADING_TIMEOUT_S, after waiting at most
        ALPACA_ORDER_BUDGET_WAIT_S for its cell of the budget) and the waits between them."""
        attempts = self.order_reconcile_attempts
        waits_s = self.order_reconcile_first_wait_s * ((1 << (attempts - 1)) - 1)
        per_call_s = self.trading_timeout_s + self.alpaca_order_budget_wait_s
        return per_call_s * (attempts + 2) + waits_s

    @property
    def instance_name(self) -> str:
        """This worker process among the replicas: `GATEWAY_INSTANCE` (or the host name) and
        the pid, computed on each call so a forked worker names itself, not its parent."""
        return f"{self.gateway_instance or socket.gethostname()}:{os.getpid()}"

    @model_validator(mode="after")
    def _ops_key_when_required(self) -> Settings:
        # A short key guarded by nothing else would be guessed; refuse to start instead.
        key = self.ops_key.get_secret_value() if self.ops_key else ""
        if self.ops_access == "key" and len(key) < 16:
            raise ValueError("OPS_ACCESS=key needs an OPS_KEY of at least 16 characters")
        if self.ops_access == "internal" and self.ops_port == self.gateway_port:
            raise ValueError("OPS_ACCESS=internal needs an OPS_PORT other than GATEWAY_PORT")
        return self

    @property
    def cors_origins(self) -> tuple[str, ...]:
        origins = (o.strip() for o in self.cors_allow_origins.split(","))
        return tuple(dict.fromkeys(o for o in origins if o))

    @property
    def watchlist(self) -> tuple[str, ...]:
        symbols = (s.strip().upper() for s in self.metrics_watchlist.split(","))
        return tuple(dict.fromkeys(s for s in symbols if s))[:50]

    @property
    def data_base_url(self) -> str:
        return (self.alpaca_data_url or ALPACA_DATA_URL).rstrip("/")

    @property
    def trading_base_url(self) -> str:
        default = ALPACA_PAPER_URL if self.alpaca_paper else ALPACA_LIVE_URL
        return (self.alpaca_trading_url or default).rstrip("/")

    @property
    def credentials_configured(self) -> bool:
        return bool(self.alpaca_api_key_id and self.alpaca_api_secret_key)

    @property
    def source_name(self) -> str:
        """What `provenance.source` says: never claims `alpaca` for an overridden upstream."""
        if self.upstream_source_name:
            return self.upstream_source_name
        if self.alpaca_data_url or self.alpaca_trading_url:
            return urlsplit(self.data_base_url).netloc or "custom"
        return "alpaca"

    @model_validator(mode="after")
    def _shared_flight_wait_outlasts_a_lease(self) -> Settings:
        # A waiter must outlive a dead holder's lease and one more poll, or it would give up
        # (UPSTREAM_TIMEOUT) on a value it could have fetched itself.
        if self.shared_flight_wait_s <= self.shared_flight_lease_s + self.shared_flight_poll_s:
            raise ValueError(
                "SHARED_FLIGHT_WAIT_S must be longer than SHARED_FLIGHT_LEASE_S plus"
                " SHARED_FLIGHT_POLL_S"
            )
        return self


def load_settings() -> Settings:
    return Settings()
