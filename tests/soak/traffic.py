"""The soak's mixed traffic: what a crowd of bots, some careless and some hostile, sends.

Every request is drawn from a seeded generator (the same run sends the same sequence): single
quotes for tens of thousands of distinct symbols of which only a few hundred exist, known
quotes, batches mixing both, snapshots and trades, bar ranges that differ on every request,
option chains, trading reads, new orders and replays of earlier ones, and bad input of every
kind (invalid symbols and parameters, unknown routes, unknown or malformed keys, wrong methods,
bodies over the limit). Breaker trips come from `trips` in run.py, not from here.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from datetime import date, timedelta

from tests.chaos.load import Request

ORDER = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
DEMO_SYMBOLS = ("AAPL", "MSFT", "SPY")
BAR_SYMBOLS = DEMO_SYMBOLS
BAR_DAYS = 500  # daily bars the emulator holds for each of BAR_SYMBOLS
OPTION_UNDERLYINGS = ("AAPL", "SPY")


def symbol_name(prefix: str, n: int) -> str:
    """A valid, distinct symbol for each n: the prefix, then n in base 26 (letters only)."""
    letters = ""
    while True:
        n, digit = divmod(n, 26)
        letters = string.ascii_uppercase[digit] + letters
        if n == 0:
            return prefix + letters


class Mix:
    """`next(n)` is the n-th request; the kinds are drawn by weight from a seeded generator."""

    def __init__(
        self,
        key: str,
        *,
        known: tuple[str, ...],
        unknown_pool: int,
        max_body_bytes: int,
        seed: int = 13,
    ) -> None:
        self._auth = {"Authorization": f"Bearer {key}"}
        self._known = known
        self._unknown_pool = unknown_pool
        self._body = b"{" + b" " * (max_body_bytes + 1) + b"}"
        self._rng = random.Random(seed)
        self._orders_placed = 0
        self._run = f"soak{seed}"
        # Every symbol, path segment and key id the traffic made up: none may ever become a
        # label value (a series per request is how /metrics grows without bound).
        self.sent: set[str] = set(known)
        kinds: dict[Callable[[], Request], int] = {
            self._unknown_quote: 30,
            self._known_quote: 18,
            self._batch: 8,
            self._snapshot_or_trade: 5,
            self._bars: 6,
            self._options: 2,
            self._trading_read: 3,
            self._new_order: 3,
            self._order_replay: 1,
            self._bad_symbol: 5,
            self._bad_parameter: 3,
            self._unknown_route: 3,
            self._bad_key: 4,
            self._wrong_method: 1,
            self._too_large: 1,
            self._ready: 1,
        }
        self._kinds = list(kinds)
        self._weights = list(kinds.values())

    def next(self, _n: int) -> Request:
        return self._rng.choices(self._kinds, self._weights)[0]()

    # --- market data --------------------------------------------------------------------------
    def _unknown(self) -> str:
        symbol = symbol_name("Z", self._rng.randrange(self._unknown_pool))
        self.sent.add(symbol)
        return symbol

    def invented(self, label_value: str) -> bool:
        """Whether a label value could only have come from a request's own text."""
        return label_value in self.sent or "/v1/nothing/" in label_value

    def _get(self, path: str) -> Request:
        return Request("GET", path, self._auth)

    def _unknown_quote(self) -> Request:
        return self._get(f"/v1/stocks/{self._unknown()}/quote")

    def _known_quote(self) -> Request:
        return self._get(f"/v1/stocks/{self._rng.choice(self._known)}/quote")

    def _batch(self) -> Request:
        symbols = [self._unknown() for _ in range(10)]
        symbols += [*self._rng.sample(self._known, 5), "bad..sym"]
        self._rng.shuffle(symbols)
        return self._get("/v1/stocks/quotes?symbols=" + ",".join(symbols))

    def _snapshot_or_trade(self) -> Request:
        what = self._rng.choice(("snapshot", "trade"))
        return self._get(f"/v1/stocks/{self._rng.choice(DEMO_SYMBOLS)}/{what}")

    def _bars(self) -> Request:
        # A closed range that differs on every request: each spelling is a cache entry of its
        # own, cached for a day, so only the cache's byte bound keeps this from growing.
        first = date.today() - timedelta(days=BAR_DAYS * 7 // 5)
        start = first + timedelta(days=self._rng.randrange(BAR_DAYS))
        end = start + timedelta(days=self._rng.randrange(5, 120))
        symbol = self._rng.choice(BAR_SYMBOLS)
        return self._get(f"/v1/stocks/{symbol}/bars?timeframe=1Day&start={start}&end={end}")

    def _options(self) -> Request:
        return self._get(f"/v1/options/chain/{self._rng.choice(OPTION_UNDERLYINGS)}")

    # --- trading -------------------------------------------------------------------------------
    def _trading_read(self) -> Request:
        return self._get(self._rng.choice(("/v1/account", "/v1/positions", "/v1/orders")))

    def _order(self, n: int) -> Request:
        key = f"{self._run}-{n}"
        headers = {**self._auth, "Idempotency-Key": key}
        return Request("POST", "/v1/orders", headers, ORDER, key)

    def _new_order(self) -> Request:
        self._orders_placed += 1
        return self._order(self._orders_placed)

    def _order_replay(self) -> Request:
        return self._order(self._rng.randint(1, max(1, self._orders_placed)))

    # --- bad input -------------------------------------------------------------------------------
    def _bad_symbol(self) -> Request:
        # "\u017fpy" starts with a long s (U+017F), which upper-cases to S: a spoofed "SPY".
        bad = self._rng.choice(
            ("toolongsymbolname", "A..B", "\u017fpy", "A%20B", "-AB", "AB.", "1ABC", "A_B")
        )
        bad += str(self._rng.randrange(1000))
        self.sent.add(bad)
        return self._get(f"/v1/stocks/{bad}/quote")

    def _bad_parameter(self) -> Request:
        junk = self._rng.choice(("max_age_ms=abc", "feed=nope", "max_age_ms=-1", "feed=%FF"))
        return self._get(f"/v1/stocks/{self._rng.choice(self._known)}/quote?{junk}")

    def _unknown_route(self) -> Request:
        segment = f"{self._rng.getrandbits(64):x}"
        self.sent.add(segment)
        return self._get(f"/v1/nothing/{segment}")

    def _bad_key(self) -> Request:
        # Well-formed keys nobody issued (each a new key id), and malformed headers.
        key_id = f"{self._rng.getrandbits(48):012x}"
        secret = f"{self._rng.getrandbits(128):032x}"
        self.sent.update((key_id, secret))
        header = self._rng.choice(
            (f"Bearer gw_{key_id}_{secret}", f"Bearer {secret}", "Basic dXNlcjpwYXNz", "Bearer")
        )
        return Request(
            "GET", f"/v1/stocks/{self._rng.choice(self._known)}/quote", {"Authorization": header}
        )

    def _wrong_method(self) -> Request:
        return Request("PUT", "/v1/stocks/AAPL/quote", self._auth)

    def _too_large(self) -> Request:
        headers = {**self._auth, "Idempotency-Key": "too-large", "Content-Type": "application/json"}
        return Request("POST", "/v1/orders", headers, body=self._body, key="too-large")

    def _ready(self) -> Request:
        return Request("GET", self._rng.choice(("/ready", "/health")))
