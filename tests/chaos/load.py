"""A bounded closed-loop load that keeps every answer, for figures taken over phases of a run.

`Load(base_url, workers=..., duration_s=..., max_requests=...)` sends what `next_request(n)`
returns from `workers` concurrent loops until the deadline, the request count or `stop()`,
whichever comes first, and keeps one `Answer` per request (start time on the run's own clock,
latency, status, problem code, typed or not). The scenario marks its events on the same clock
(`load.now()`), so "p99 during the outage" is a filter over answers, not a second measurement.

Bounded three ways (deadline, count, a hard cut-off past the deadline) and loopback only, like
the bench's generators (tests/performance/aioload.py, whose percentile it reuses); unlike them
it keeps per-request records, which a fault timeline needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tests.chaos.contract import problem_code
from tests.performance.aioload import percentile

REQUEST_TIMEOUT_S = 10.0
CUT_OFF_S = 15.0  # past the planned deadline, whatever is still running is abandoned


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    key: str | None = None  # the Idempotency-Key, to match an answer with Alpaca's book
    body: bytes | None = None  # sent as it is (a body `json` cannot express)


@dataclass(frozen=True, slots=True)
class Answer:
    at_s: float  # when it was sent, on the load's clock
    latency_s: float
    status: int  # 0: no HTTP answer at all (refused, reset, timed out)
    code: str | None  # the problem's code
    typed: bool  # 2xx, or problem+json with a documented code and its documented status
    key: str | None = None
    request: str = ""  # method and path, to say which requests failed

    @property
    def end_s(self) -> float:
        return self.at_s + self.latency_s

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def told(self) -> str:
        """What the client was told, as one word: 200, 503/AUDIT_UNAVAILABLE, no_answer."""
        if self.status == 0:
            return "no_answer"
        return str(self.status) if self.code is None else f"{self.status}/{self.code}"


class Load:
    def __init__(
        self,
        base_url: str,
        *,
        workers: int,
        duration_s: float,
        max_requests: int,
        timeout_s: float = REQUEST_TIMEOUT_S,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        """`on_answer`: called with each answer instead of keeping it (a soak sends too many
        to keep)."""
        if urlsplit(base_url).hostname != "127.0.0.1":
            raise ValueError(f"chaos load targets 127.0.0.1 only, not {base_url!r}")
        self.base_url = base_url
        self.answers: list[Answer] = []
        self._workers = workers
        self._duration_s = duration_s
        self._max_requests = max_requests
        self._timeout_s = timeout_s
        self._started = time.monotonic()
        self._stop = asyncio.Event()
        self._on_answer = on_answer or self.answers.append

    def now(self) -> float:
        """Seconds on the load's clock (since it was made)."""
        return time.monotonic() - self._started

    def stop(self) -> None:
        self._stop.set()

    async def run(self, next_request: Callable[[int], Request]) -> list[Answer]:
        """Send until the deadline, the count or stop(); the answers kept in `self.answers`."""
        numbers = itertools.count()
        deadline = self.now() + self._duration_s
        connector = aiohttp.TCPConnector(limit=self._workers, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        async with aiohttp.ClientSession(
            self.base_url, connector=connector, timeout=timeout
        ) as session:

            async def worker() -> None:
                while not self._stop.is_set() and self.now() < deadline:
                    n = next(numbers)
                    if n >= self._max_requests:
                        return
                    self._on_answer(await self._send(session, next_request(n)))

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(worker() for _ in range(self._workers))),
                    self._duration_s + CUT_OFF_S,
                )
        return self.answers

    async def _send(self, session: aiohttp.ClientSession, request: Request) -> Answer:
        at = self.now()
        try:
            async with session.request(
                request.method,
                request.path,
                headers=request.headers,
                json=request.json,
                data=request.body,
            ) as response:
                body = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            key = "" if request.key is None else f" key {request.key}"
            what = f"{request.method} {request.path}{key} ({type(exc).__name__})"
            return Answer(at, self.now() - at, 0, None, False, request.key, what)
        code, typed = problem_code(status, content_type, body)
        what = f"{request.method} {request.path}"
        return Answer(at, self.now() - at, status, code, typed, request.key, what)


def between(answers: Iterable[Answer], start_s: float, end_s: float) -> list[Answer]:
    """Answers to requests sent in [start_s, end_s)."""
    return [a for a in answers if start_s <= a.at_s < end_s]


def p99_ms(answers: Iterable[Answer]) -> float:
    latencies = sorted(a.latency_s for a in answers if a.status != 0)
    return round(percentile(latencies, 99) * 1000, 1)


def told(answers: Iterable[Answer]) -> str:
    """Counts per answer, most frequent first: `200:812,503/AUDIT_UNAVAILABLE:40`."""
    counts = Counter(a.told for a in answers)
    return ",".join(f"{what}:{n}" for what, n in counts.most_common()) or "none"
