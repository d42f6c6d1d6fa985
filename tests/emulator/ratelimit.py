"""Alpaca's per-key request budget: a fixed one-minute window per API key id.

Alpaca documents a per-minute limit and sends ``X-RateLimit-Limit``, ``-Remaining`` and
``-Reset`` (epoch seconds when the quota changes) on every answer; it does not document the
algorithm, so the simplest one that produces those headers is used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True)
class RateStatus:
    """What the X-RateLimit headers say after a request."""

    limit: int
    remaining: int
    reset_epoch_s: int

    def headers(self) -> dict[str, str]:
        """The three X-RateLimit headers."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_epoch_s),
        }


@dataclass
class _Window:
    started_at_s: float
    used: int = 0


class RateLimiter:
    """Counts requests per key id in fixed windows; ``clock`` returns epoch seconds."""

    def __init__(self, limit_per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self._limit = limit_per_minute
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def reconfigure(self, limit_per_minute: int) -> None:
        """Apply a new limit and start every key with a fresh budget."""
        self._limit = limit_per_minute
        self._windows.clear()

    def consume(self, key_id: str) -> tuple[bool, RateStatus]:
        """Spend one request; False (and remaining 0) when the window's budget is gone."""
        window = self._current(key_id)
        allowed = window.used < self._limit
        if allowed:
            window.used += 1
        return allowed, self._status(window)

    def peek(self, key_id: str) -> RateStatus:
        """The key's status without spending anything (for 401s and fault answers)."""
        return self._status(self._current(key_id))

    def _current(self, key_id: str) -> _Window:
        now = self._clock()
        window = self._windows.get(key_id)
        if window is None or now >= window.started_at_s + WINDOW_S:
            window = self._windows[key_id] = _Window(started_at_s=now)
        return window

    def _status(self, window: _Window) -> RateStatus:
        return RateStatus(
            limit=self._limit,
            remaining=max(self._limit - window.used, 0),
            reset_epoch_s=math.ceil(window.started_at_s + WINDOW_S),
        )
