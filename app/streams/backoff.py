"""How long an upstream feed waits before it connects again, as Alpaca asks.

Alpaca rejects reconnect storms at the upgrade (429) and keeps a dropped session's slot for
about 90 s, answering 406 `connection limit exceeded` until then; reconnecting faster only
makes the wait longer. Pure: the random source is a parameter.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum


class Setback(Enum):
    """Why a connection attempt (or a connection) ended."""

    DROPPED = "dropped"  # connected and streaming, then lost (or found silent)
    FAILED = "failed"  # the connection or the handshake failed
    CONNECTION_LIMIT = "connection_limit"  # 406: another session holds the feed's slot
    RATE_LIMITED = "rate_limited"  # 429 at the upgrade
    REFUSED = "refused"  # 402 auth failed / 409 insufficient subscription: needs an operator


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    min_s: float
    max_s: float
    connection_limit_s: float  # the least wait after a 406


def reconnect_delay_s(
    policy: BackoffPolicy,
    failures: int,
    setback: Setback,
    *,
    retry_after_s: float | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """The wait before attempt `failures + 1`: exponential from `min_s` up to `max_s` with
    equal jitter (half fixed, half random, so clients of many gateways do not line up), never
    shorter than a 429's Retry-After, and at least `connection_limit_s` (plus jitter) after a
    406. A connection that streamed and dropped (`failures` 1) comes back after `min_s`-ish."""
    exponent = min(max(failures - 1, 0), 30)
    ceiling = min(policy.max_s, policy.min_s * (2**exponent))
    if setback is Setback.REFUSED:
        ceiling = policy.max_s  # credentials or plan: retrying fast cannot help
    delay: float = ceiling / 2 + uniform(0, ceiling / 2)
    if setback is Setback.CONNECTION_LIMIT:
        delay = max(delay, policy.connection_limit_s + uniform(0, policy.min_s))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def retry_after_s(headers: Mapping[str, str] | None, now_s: float) -> float | None:
    """How long a 429 asks us to wait: `Retry-After` (delta seconds) or Alpaca's REST form,
    `X-RateLimit-Reset` (Unix seconds) less `now_s`; None if neither says."""
    if headers is None:
        return None
    delta = _seconds(headers.get("Retry-After"))
    if delta is not None:
        return delta
    reset = _seconds(headers.get("X-RateLimit-Reset"))
    return None if reset is None else max(reset - now_s, 0.0)


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(text.strip())
    except ValueError:
        return None  # an HTTP date, or garbage: the backoff alone decides
    return seconds if seconds >= 0 else None
