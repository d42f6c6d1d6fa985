"""Turning served values into JSON with provenance, computed at the moment of sending."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from app.alpaca.wire import epoch_seconds
from app.api.problems import problem_response
from app.errors import ErrorCode, GatewayError
from app.metrics import DataKind, Metrics
from app.models.provenance import Provenance
from app.reads.read_through import Served
from app.state import GatewayState


@lru_cache(maxsize=65_536)
def _observed_epoch(observed_at: str) -> float:
    # Hot symbols repeat the same timestamp text on every cache hit; parse it once.
    return epoch_seconds(observed_at)


@lru_cache(maxsize=4096)
def rfc3339(epoch_s: float) -> str:
    # A cached value is served many times with the same fetch time; format it once.
    return (
        datetime.fromtimestamp(epoch_s, UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def age_ms(observed_at: str, now: float) -> int:
    """Milliseconds since Alpaca observed the value; 0 for a time just ahead of our clock
    (within CLOCK_SKEW_TOLERANCE_MS: the read path refuses values further ahead)."""
    return max(0, int((now - _observed_epoch(observed_at)) * 1000))


def provenance(
    observed_at: str, served: Served[Any], *, feed: str | None, source: str, now: float
) -> Provenance:
    return Provenance(
        source=source,
        feed=feed,
        observed_at=observed_at,
        fetched_at=rfc3339(served.fetched_at),
        age_ms=age_ms(observed_at, now),
        cache=served.cache,
    )


def with_provenance(
    item: Mapping[str, Any],
    served: Served[Any],
    *,
    kind: DataKind,
    feed: str | None,
    source: str,
    now: float,
    metrics: Metrics,
) -> dict[str, Any]:
    observed_at = item["timestamp"]
    body = dict(item)
    body["provenance"] = provenance(observed_at, served, feed=feed, source=source, now=now)
    observed = _observed_epoch(observed_at)
    metrics.served_age(kind, served.cache, max(0.0, now - observed))
    if "symbol" in item:
        metrics.observed(item["symbol"], observed)
    return body


def members(
    value: Mapping[str, Any],
    kinds: dict[str, DataKind],
    served: Served[Any],
    *,
    feed: str | None,
    source: str,
    now: float,
    metrics: Metrics,
) -> tuple[dict[str, Any], str]:
    """A snapshot's members, each with its own provenance (they have their own times), and the
    newest member's time (a snapshot always has at least one member)."""
    body: dict[str, Any] = {}
    times: list[str] = []
    for member, kind in kinds.items():
        item = value[member]
        if item is None:
            body[member] = None
            continue
        times.append(item["timestamp"])
        body[member] = with_provenance(
            item, served, kind=kind, feed=feed, source=source, now=now, metrics=metrics
        )
    return body, min(times, key=lambda t: age_ms(t, now))


def check_max_age(observed_at: str, now: float, max_age_ms: int | None, symbol: str) -> None:
    """The newest real value is too old for this client: say so instead of returning it."""
    if max_age_ms is None:
        return
    age = age_ms(observed_at, now)
    if age > max_age_ms:
        raise GatewayError(
            ErrorCode.DATA_STALE,
            f"Newest real value for {symbol} is {age} ms old (max_age_ms={max_age_ms})",
            upstream="data",
            symbol=symbol,
            retry_after_s=1,
            extensions={"age_ms": age, "observed_at": observed_at},
        )


_CACHE_STATUS = {
    "hit": "gateway; hit",
    "miss": "gateway; fwd=miss; stored",
    "shared": "gateway; fwd=miss; collapsed",
    "stale": 'gateway; hit; fwd=stale; detail="stale-if-error"',
    # A hit on what Alpaca's stream pushed: no request went to Alpaca for it.
    "stream": 'gateway; hit; detail="stream"',
}


_CACHE_STATUS_BYTES = {state: text.encode() for state, text in _CACHE_STATUS.items()}


def least_fresh(states: set[str]) -> str | None:
    """The state a batch's Cache-Status reports: the least fresh one served."""
    for state in ("stale", "miss", "shared", "hit", "stream"):
        if state in states:
            return state
    return None


def cache_status(states: set[str]) -> str:
    """RFC 9211 Cache-Status; a batch mixing states reports the least fresh one."""
    state = least_fresh(states)
    return "gateway; fwd=miss" if state is None else _CACHE_STATUS[state]


def json_response(body: Any, *, cache_states: set[str] | None = None) -> Response:
    headers = {"Cache-Status": cache_status(cache_states)} if cache_states else None
    return Response(
        content=dumps(body).encode(),
        media_type="application/json",
        headers=headers,
    )


def now() -> float:
    return time.time()


def latest_value(
    request: Request,
    gateway: GatewayState,
    outcome: Served[Any] | GatewayError,
    symbol: str,
    kind: DataKind,
    feed: str,
    max_age_ms: int | None,
) -> Response:
    """One latest value (quote, trade, option quote) with its provenance, or its typed error."""
    if isinstance(outcome, GatewayError):
        # Rendered here rather than raised: the hot failure path (breaker open) skips the
        # framework's exception machinery. Same renderer, same body.
        return problem_response(request, outcome if outcome.symbol else outcome.for_symbol(symbol))
    body = encoded_latest(outcome, gateway, symbol, kind, feed, max_age_ms, time.time())
    return EncodedJSON(body, outcome.cache)


def encoded_latest(
    served: Served[Any],
    gateway: GatewayState,
    symbol: str,
    kind: DataKind,
    feed: str,
    max_age_ms: int | None,
    now: float,
) -> bytes:
    """A latest value's answer with its provenance, as bytes; DATA_STALE past `max_age_ms`.

    Encoded once per cache entry up to `age_ms`: only `age_ms` and `cache` differ between the
    answers one value gives. The bytes are exactly `json.dumps` of the whole answer."""
    prefix, observed = _encoded_latest(served, feed, gateway.source)
    age = max(0, int((now - observed) * 1000))
    if max_age_ms is not None and age > max_age_ms:
        check_max_age(served.value["timestamp"], now, max_age_ms, symbol)
    gateway.metrics.served_age(kind, served.cache, max(0.0, now - observed))
    gateway.metrics.observed(symbol, observed)
    return prefix + str(age).encode() + _PROVENANCE_END[served.cache]


class EncodedJSON(Response):
    """A 200 JSON answer whose bytes are ready: the headers a Response would build (Cache-Status,
    Content-Length, Content-Type, in that order), without its generic header pass."""

    media_type = "application/json"

    def __init__(self, body: bytes, cache: str | None) -> None:
        """`cache`: the state Cache-Status reports (the least fresh of a batch); None for an
        answer that served no value (no Cache-Status then)."""
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]
        if cache is not None:
            self.raw_headers.insert(0, (b"cache-status", _CACHE_STATUS_BYTES[cache]))


# The bytes after `age_ms` in a latest value's answer, per cache state.
_PROVENANCE_END = {
    state: b',"cache":' + json.dumps(state).encode() + b"}}"
    for state in ("miss", "hit", "shared", "stale", "stream")
}


def _encoded_latest(served: Served[Any], feed: str, source: str) -> tuple[bytes, float]:
    """The answer's bytes up to `age_ms`, and the observation time, encoded once per cache
    entry: only `age_ms` and `cache` differ between the answers one value gives. The bytes are
    exactly `json.dumps` of the whole answer (members in the same order), cut at the age."""
    memo = served.memo
    memo_key = ("latest", feed, source)
    if memo is not None and (known := memo.get(memo_key)) is not None:
        return known  # type: ignore[no-any-return]
    value = served.value
    observed_at = value["timestamp"]
    provenance_head = {
        "source": source,
        "feed": feed,
        "observed_at": observed_at,
        "fetched_at": rfc3339(served.fetched_at),
    }
    head = dumps(value)[:-1] + ',"provenance":' + dumps(provenance_head)[:-1]
    encoded = ((head + ',"age_ms":').encode(), _observed_epoch(observed_at))
    if memo is not None:
        memo[memo_key] = encoded
    return encoded


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
