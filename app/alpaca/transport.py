"""HTTP to Alpaca: one aiohttp session per upstream host, explicit timeouts, no retries.

This is the only module that sees aiohttp. Every transport failure and every Alpaca status is
translated here, once, into a `GatewayError`, and every call is admitted and judged by the
upstream's circuit breaker and spends a cell of its host's rate budget (`app.alpaca.budget`),
which also hears what Alpaca says of that budget (429, `X-RateLimit-Remaining`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from yarl import URL

from app.alpaca.breaker import Breaker, CallNotPermitted, Permit
from app.alpaca.budget import (
    LANE_OF,
    PRIORITY_ENDPOINTS,
    Budget,
    Grant,
    LaneConfig,
    LocalBudget,
    Throttle,
)
from app.alpaca.wire import decode_exact, decode_json
from app.errors import ALPACA_UNWELL, ErrorCode, GatewayError, Upstream
from app.metrics import Metrics, UpstreamOutcome

T = TypeVar("T")
Session = aiohttp.ClientSession

# Statuses a caller may ask to see as data instead of an error (e.g. 404 for "unknown asset").
NOT_FOUND = 404


@dataclass(frozen=True, slots=True)
class Credentials:
    key_id: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class Timeouts:
    total_s: float  # bounds the whole call, body included (a slow drip defeats read timeouts)
    connect_s: float


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    payload: Any
    # The body exactly as Alpaca sent it, for answers passed on untouched (the Alpaca face).
    raw: bytes = b""


def _error_message(body: bytes) -> str | None:
    """Alpaca's `message` member if the body is Alpaca-shaped JSON, else None (e.g. proxy HTML)."""
    try:
        payload = decode_json(body)
    except ValueError:
        return None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])
    return None


class AlpacaTransport:
    """Calls one Alpaca host. `call` returns the parsed result or raises a `GatewayError`."""

    def __init__(
        self,
        upstream: Upstream,
        base_url: str,
        session: aiohttp.ClientSession | None,
        breaker: Breaker,
        metrics: Metrics,
        *,
        timeouts: Timeouts | None = None,
        exact_numbers: bool = False,
        budget: Budget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`exact_numbers`: decode non-integer JSON numbers as their text (the trading API,
        whose decimals must pass on exactly) instead of as floats (market data). `budget`: the
        host's lane, shared with the other upstream on that host; None: a lane of the default
        plan (200/min) for this transport alone."""
        self.upstream: Upstream = upstream
        self._decode = decode_exact if exact_numbers else decode_json
        self._base_url = URL(base_url)
        self._session = session
        self.breaker = breaker
        self._metrics = metrics
        self._clock = clock
        # Set when this upstream shares another's session (options on the data host) but has
        # its own timeouts; None means the session's own.
        self._timeout = (
            None
            if timeouts is None
            else aiohttp.ClientTimeout(total=timeouts.total_s, sock_connect=timeouts.connect_s)
        )
        if budget is None:
            # A probe's lease covers one whole call, so a slow probe is never joined by a second.
            total_s = timeouts.total_s if timeouts is not None else None
            if total_s is None and session is not None:
                total_s = session.timeout.total
            budget = LocalBudget(
                LANE_OF[upstream], LaneConfig(200, 20), probe_lease_s=total_s or 10.0
            )
        self.budget = budget

    def url(self, *segments: str) -> URL:
        """Base URL + path segments. Callers validate identifiers first; this is the last guard:
        yarl resolves `..` and keeps `/`, so a hostile segment could otherwise climb the path."""
        encoded = []
        for segment in segments:
            if segment in ("", ".", ".."):
                raise ValueError(f"refusing path segment {segment!r}")
            encoded.append(quote(segment, safe=""))
        return self._base_url.joinpath(*encoded, encoded=True)

    async def call(
        self,
        url: URL,
        params: Mapping[str, str],
        *,
        endpoint: str,
        parse: Callable[[Reply], T],
        expect: frozenset[int] = frozenset(),
        method: str = "GET",
        json_body: Mapping[str, Any] | None = None,
        outcome: Callable[[T], UpstreamOutcome] | None = None,
    ) -> T:
        """Send one request (GET unless told) and parse the answer inside the breaker's judgement.

        `expect` lists non-2xx statuses the caller handles itself (their replies go to `parse`).
        A parse failure (`UPSTREAM_BAD_RESPONSE`) counts against the breaker like a 5xx.
        `outcome` names a successful answer for the metrics (`no_data`, `not_found`); "ok"
        otherwise. Either way Alpaca answered, which is what the breaker judges.
        """
        refused = self.refusal(endpoint)
        session = self._session
        if refused is not None or session is None:
            raise refused or self._not_configured()
        try:
            permit = self.breaker.acquire()
        except CallNotPermitted as exc:
            # Half-open with every trial permit taken since refusal() looked.
            self._metrics.upstream_outcome(self.upstream, endpoint, "circuit_open")
            raise self._circuit_open(exc.state.value, exc.retry_after_s) from exc
        try:
            grant = await self._spend(endpoint)
        except BaseException:
            permit.record_ignored()  # never sent: nothing to say about Alpaca's health
            raise
        started = time.perf_counter()
        try:
            reply = await self._send(session, method, url, params, json_body)
            await self._learn(grant, reply)
            result = self._judge(reply, parse, expect, endpoint)
        except GatewayError as exc:
            duration = time.perf_counter() - started
            self._settle(permit, exc.code, duration)
            self._metrics.upstream_call(self.upstream, endpoint, _outcome(exc.code), duration)
            raise
        except BaseException:
            # Cancelled by our caller (client went away): say nothing about Alpaca's health.
            permit.record_ignored()
            raise
        duration = time.perf_counter() - started
        permit.record_success(duration)
        label: UpstreamOutcome = "ok" if outcome is None else outcome(result)
        self._metrics.upstream_call(self.upstream, endpoint, label, duration)
        self._metrics.upstream_success(self.upstream, self._clock())
        return result

    def refusal(self, endpoint: str) -> GatewayError | None:
        """The error a call would get right now without touching the network, or None.

        Takes no half-open trial permit and no cell of the budget, so callers may ask before
        doing any other work (the read path asks before it starts a single-flight task: an open
        breaker, or a hold after Alpaca's 429 that this process knows of, answers at once).
        """
        if self._session is None:
            return self._not_configured()
        wait_s = self.budget.wait_s()
        if wait_s > 0:
            # Alpaca said when the budget resets; asking again earlier only burns goodwill.
            self._metrics.upstream_outcome(self.upstream, endpoint, "rate_limited")
            self._metrics.budget_throttled(self.budget.lane, "alpaca_block")
            return self._rate_limited(wait_s)
        wait_s = self.breaker.retry_after_s()
        if wait_s > 0:
            self._metrics.upstream_outcome(self.upstream, endpoint, "circuit_open")
            return self._circuit_open(self.breaker.state.value, wait_s)
        return None

    async def _spend(self, endpoint: str) -> Grant:
        """A cell of the host's budget for this call, waited for when it is booked ahead (an
        order's); UPSTREAM_RATE_LIMITED, with the true wait, when there is none to take.
        After a hold only one probe goes until Alpaca answers it (`RateLimitHold`)."""
        priority = endpoint in PRIORITY_ENDPOINTS
        lane = self.budget.lane
        taken = await self.budget.take(priority)
        self._metrics.budget_remaining(lane, self.budget.remaining())
        if isinstance(taken, Throttle):
            self._metrics.upstream_outcome(self.upstream, endpoint, "rate_limited")
            self._metrics.budget_throttled(lane, taken.reason)
            raise self._rate_limited(taken.wait_s, by_alpaca=taken.reason == "alpaca_block")
        if priority:
            self._metrics.budget_waited(lane, taken.delay_s)
        if taken.delay_s > 0:
            await asyncio.sleep(taken.delay_s)
        return taken

    async def _learn(self, grant: Grant, raw: tuple[int, bytes, Mapping[str, str]]) -> None:
        """What Alpaca's answer says of the account's budget: a 429 or `Remaining: 0` holds
        the lane (every instance) until its reset; the probe's other answers end the hold."""
        status, _, headers = raw
        remaining = _header_float(headers, "X-RateLimit-Remaining")
        if remaining is not None:
            self._metrics.upstream_budget(self.upstream, remaining)
        if status == 429 or (remaining is not None and remaining <= 0):
            await self.budget.block(max(self._reset_wait_s(headers), 1.0))
        elif grant.probe:
            await self.budget.probe_answered()

    def _reset_wait_s(self, headers: Mapping[str, str]) -> float:
        reset = _header_float(headers, "X-RateLimit-Reset")
        return (reset - self._clock()) if reset is not None else 1.0

    def _not_configured(self) -> GatewayError:
        return GatewayError(
            ErrorCode.UPSTREAM_NOT_CONFIGURED,
            "Set ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY to reach Alpaca",
            upstream=self.upstream,
        )

    def _circuit_open(self, state: str, wait_s: float) -> GatewayError:
        return GatewayError(
            ErrorCode.CIRCUIT_OPEN,
            f"The {self.upstream} circuit is {state}; not calling Alpaca",
            upstream=self.upstream,
            retry_after_s=max(1, math.ceil(wait_s)),
            extensions={"circuit_state": state},
        )

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        params: Mapping[str, str],
        json_body: Mapping[str, Any] | None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        try:
            # timeout=None would mean "no timeout" to aiohttp: use the session's when we have none.
            timeout = self._timeout or session.timeout
            async with session.request(
                method,
                url,
                params=params,
                json=json_body,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                body = await response.read()
                return response.status, body, response.headers
        except TimeoutError as exc:
            raise GatewayError(
                ErrorCode.UPSTREAM_TIMEOUT,
                f"Alpaca {self.upstream} API did not answer in time",
                upstream=self.upstream,
            ) from exc
        except aiohttp.ClientError as exc:
            raise GatewayError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"Connection to Alpaca {self.upstream} API failed ({type(exc).__name__})",
                upstream=self.upstream,
            ) from exc

    def _judge(
        self,
        raw: tuple[int, bytes, Mapping[str, str]],
        parse: Callable[[Reply], T],
        expect: frozenset[int],
        endpoint: str,
    ) -> T:
        status, body, headers = raw
        if 200 <= status < 300 or status in expect:
            try:
                payload = self._decode(body) if body else None
            except ValueError as exc:
                raise self._bad(f"Alpaca sent invalid JSON (HTTP {status})") from exc
            try:
                return parse(Reply(status, payload, body))
            except GatewayError as exc:
                # Parsers are shared by upstreams (the trading host serves two): the answer is
                # about the one that was called.
                exc.upstream = self.upstream
                raise
        raise self._status_error(status, body, headers)

    def _status_error(self, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
        message = _error_message(body)
        kept: dict[str, Any] = {"upstream_status": status}
        if message is not None:
            kept["upstream_message"] = message
        if status == 429:
            return self._rate_limited(self._reset_wait_s(headers), by_alpaca=True)
        if status == 401:
            return GatewayError(
                ErrorCode.UPSTREAM_AUTH_FAILED,
                f"Alpaca {self.upstream} API rejected the gateway's credentials",
                upstream=self.upstream,
                extensions=kept,
            )
        if status == 403:
            if message is not None and "subscription" in message:
                return GatewayError(
                    ErrorCode.FEED_NOT_PERMITTED, message, upstream=self.upstream, extensions=kept
                )
            return GatewayError(
                ErrorCode.UPSTREAM_AUTH_FAILED,
                message or f"Alpaca {self.upstream} API refused access",
                upstream=self.upstream,
                extensions=kept,
            )
        if status in (400, 404, 422):
            return GatewayError(
                ErrorCode.VALIDATION_ERROR,
                f"Alpaca refused the request: {message or f'HTTP {status}'}",
                upstream=self.upstream,
                extensions=kept,
            )
        if status == 504:
            return GatewayError(
                ErrorCode.UPSTREAM_TIMEOUT,
                f"Alpaca {self.upstream} API timed out (HTTP 504)",
                upstream=self.upstream,
                extensions=kept,
            )
        if status >= 500:
            return GatewayError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                f"Alpaca {self.upstream} API failed (HTTP {status})",
                upstream=self.upstream,
                extensions=kept,
            )
        return self._bad(f"Alpaca answered with unexpected HTTP {status}")

    def _bad(self, detail: str) -> GatewayError:
        return GatewayError(ErrorCode.UPSTREAM_BAD_RESPONSE, detail, upstream=self.upstream)

    def _rate_limited(self, wait_s: float, *, by_alpaca: bool = True) -> GatewayError:
        detail = (
            f"Alpaca's {self.upstream} rate budget is spent"
            if by_alpaca
            else f"The account's {self.budget.lane} rate budget for Alpaca is spent; not"
            " calling Alpaca"
        )
        return GatewayError(
            ErrorCode.UPSTREAM_RATE_LIMITED,
            detail,
            upstream=self.upstream,
            retry_after_s=max(1, math.ceil(wait_s)),
        )

    def _settle(self, permit: Permit, code: ErrorCode, duration_s: float) -> None:
        # Only sickness counts: request errors, auth and rate limiting are not Alpaca failing.
        if code in ALPACA_UNWELL:
            permit.record_failure(duration_s)
        else:
            permit.record_ignored()


_OUTCOMES: dict[ErrorCode, UpstreamOutcome] = {
    ErrorCode.UPSTREAM_UNAVAILABLE: "unavailable",
    ErrorCode.UPSTREAM_TIMEOUT: "timeout",
    ErrorCode.UPSTREAM_BAD_RESPONSE: "bad_response",
    ErrorCode.UPSTREAM_RATE_LIMITED: "rate_limited",
    ErrorCode.UPSTREAM_AUTH_FAILED: "auth_failed",
    ErrorCode.FEED_NOT_PERMITTED: "auth_failed",
    ErrorCode.VALIDATION_ERROR: "rejected",
}


def _outcome(code: ErrorCode) -> UpstreamOutcome:
    return _OUTCOMES.get(code, "rejected")


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def open_session(
    credentials: Credentials, timeouts: Timeouts, *, limit: int = 100
) -> aiohttp.ClientSession:
    """One pooled session per upstream host; auth headers are set here and never logged."""
    session = aiohttp.ClientSession(
        headers={
            "APCA-API-KEY-ID": credentials.key_id,
            "APCA-API-SECRET-KEY": credentials.secret_key,
            "User-Agent": "alpaca-real-data-gateway/1",
        },
        timeout=aiohttp.ClientTimeout(total=timeouts.total_s, sock_connect=timeouts.connect_s),
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
        raise_for_status=False,
    )
    # aiohttp silently re-sends an idempotent request once when a pooled connection drops
    # (client.py, "retry_persistent_connection"). That is a hidden retry beneath the breaker:
    # Alpaca would see two calls and the breaker one. There is no public switch; aiohttp's own
    # test client turns it off through this attribute.
    session._retry_connection = False
    return session


async def close_session(session: aiohttp.ClientSession) -> None:
    await session.close()
    # aiohttp closes transports on the next loop turn; give it one so no warnings leak.
    await asyncio.sleep(0)
