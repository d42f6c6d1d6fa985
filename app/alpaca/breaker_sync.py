"""Keeps this instance's `SharedBreaker`s in step with the fleet's breaker state in Redis.

Two tasks, started and stopped by the lifespan: a listener subscribed to the namespace's breaker
channel (every move is PUBLISHed by the script that makes it) that also reads every breaker's
state once per `interval_s` as a backstop, and a writer that sends queued outcomes and asks for
half-open trial permits (app/alpaca/breaker_scripts.py). Requests never wait on either.

Redis fails fast (the client's short timeouts, no retries). Any failure turns every breaker
local (`SharedBreaker.fall_back`: each decides alone, from the fleet's last verdict), counted and
logged once per outage; the listener tries again every `interval_s`, and the first full read
makes the breakers shared again, after offering the fleet any OPEN decided alone meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from typing import Any, Final

from loguru import logger
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from app.alpaca import breaker_scripts
from app.alpaca.breaker import BreakerConfig, BreakerState
from app.alpaca.shared_breaker import Report, SharedBreaker, SharedView
from app.background import cancel_and_wait

REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)
# Unused keys go after this: a breaker no instance has touched for a day starts afresh.
KEY_TTL_MS: Final = 86_400_000


def breaker_keys(namespace: str, upstream: str) -> list[str]:
    """State, window and trial-lease keys of one upstream, under one hash tag."""
    tag = f"{{{namespace}:breaker:{upstream}}}"
    return [f"{tag}:state", f"{tag}:window", f"{tag}:trials"]


def breaker_channel(namespace: str) -> str:
    return f"{namespace}:breaker:events"


def script_args(
    namespace: str, upstream: str, instance: str, config: BreakerConfig, *args: str
) -> list[str]:
    """The ARGV every script takes (see breaker_scripts), then the script's own `args`."""
    return [
        breaker_channel(namespace),
        upstream,
        instance,
        str(config.window_size),
        str(config.minimum_calls),
        repr(config.failure_rate_threshold),
        repr(config.slow_call_rate_threshold),
        str(round(config.open_duration_s * 1000)),
        str(config.half_open_calls),
        str(round(config.half_open_permit_ttl_s * 1000)),
        str(KEY_TTL_MS),
        *args,
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_view(fields: Sequence[Any]) -> SharedView:
    """A script's answer or a channel message (split on "|") -> SharedView."""
    return SharedView(
        state=BreakerState(_text(fields[0])),
        generation=int(fields[1]),
        open_until_ms=int(fields[2]),
        now_ms=int(fields[3]),
        opened_by=_text(fields[4]),
        changed_by=_text(fields[5]),
        calls=int(fields[6]),
        failures=int(fields[7]),
        slow_calls=int(fields[8]),
        trials_in_flight=int(fields[9]),
    )


class BreakerSync:
    """The link between this instance's shared breakers and Redis (one per app)."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        breakers: Iterable[SharedBreaker],
        config: BreakerConfig,
        *,
        namespace: str,
        instance: str,
        interval_s: float = 1.0,
        timeout_s: float = 0.1,
        on_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`timeout_s` bounds each call (twice it, past the client's own socket timeout, as
        the cache and quotas do); `redis` is shared and closed by its owner."""
        self._redis = redis
        self._breakers = {breaker.name: breaker for breaker in breakers}
        self._namespace = namespace
        self._channel = breaker_channel(namespace)
        self._keys = {name: breaker_keys(namespace, name) for name in self._breakers}
        self._config = config
        self._instance = instance
        self._state = redis.register_script(breaker_scripts.STATE)
        self._report = redis.register_script(breaker_scripts.REPORT)
        self._trial = redis.register_script(breaker_scripts.TRIAL)
        self._open = redis.register_script(breaker_scripts.OPEN)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_error = on_error
        self._clock = clock
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._down_since: float | None = None
        for breaker in self._breakers.values():
            breaker.connect(self._wake.set)

    async def start(self) -> None:
        """One read now (a Redis that does not answer leaves the breakers local), then the
        listener and the writer."""
        try:
            await self._refresh()
        except REDIS_ERRORS as exc:
            self._failed(exc)
        self._tasks = [
            asyncio.create_task(self._listen(), name="breaker-listener"),
            asyncio.create_task(self._write(), name="breaker-writer"),
        ]

    async def aclose(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    # --- the listener: notices as they come, a full read every interval ------------------------
    async def _listen(self) -> None:
        while True:
            try:
                await self._follow()
            except REDIS_ERRORS as exc:
                self._failed(exc)
            except Exception:  # a bug must not leave the fleet's state unheard: log, go local
                logger.exception("shared breaker listener failed")
                self._fall_back()
            await asyncio.sleep(self._interval_s)

    async def _follow(self) -> None:
        async with self._redis.pubsub() as pubsub:
            async with asyncio.timeout(self._timeout_s * 2):
                await pubsub.subscribe(self._channel)
                # Subscribed once confirmed: a move made after the read below is then heard.
                await pubsub.get_message(timeout=self._timeout_s)
            await self._refresh()
            next_read = self._clock() + self._interval_s
            while True:
                wait_s = next_read - self._clock()
                if wait_s <= 0:
                    await self._refresh()
                    next_read = self._clock() + self._interval_s
                    continue
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
                if message is not None:
                    self._heard(_text(message["data"]))

    def _heard(self, data: str) -> None:
        fields = data.split("|")
        breaker = self._breakers.get(fields[0])
        if breaker is not None:
            breaker.adopt(parse_view(fields[1:]))

    async def _refresh(self) -> None:
        for name, breaker in self._breakers.items():
            held_open_s = breaker.local_open_s()
            if held_open_s > 0:
                # Decided alone while Redis was away: the fleet takes it if it is closed.
                answer = await self._call(self._open, name, str(round(held_open_s * 1000)))
            else:
                answer = await self._call(self._state, name)
            breaker.resume(parse_view(answer))
        self._recovered()

    # --- the writer: outcomes and permit requests, in the order they were queued ---------------
    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                for name, breaker in self._breakers.items():
                    await self._send(name, breaker)
            except REDIS_ERRORS as exc:
                self._failed(exc)
            except Exception:
                logger.exception("shared breaker writer failed")
                self._fall_back()

    async def _send(self, name: str, breaker: SharedBreaker) -> None:
        reports, permit_id = breaker.take_work()
        for generation, batch in groupby(reports, key=_generation):
            codes = [_code(report) for report in batch]
            breaker.adopt(parse_view(await self._call(self._report, name, str(generation), *codes)))
        if permit_id is not None:
            answer = await self._call(self._trial, name, permit_id)
            breaker.answer_trial(
                permit_id,
                parse_view(answer),
                granted=int(answer[10]) == 1,
                lease_s=int(answer[11]) / 1000,
                retry_s=int(answer[12]) / 1000,
            )

    # --- Redis calls and outages -----------------------------------------------------------------
    async def _call(self, script: AsyncScript, upstream: str, *args: str) -> list[Any]:
        argv = script_args(self._namespace, upstream, self._instance, self._config, *args)
        async with asyncio.timeout(self._timeout_s * 2):
            answer = await script(keys=self._keys[upstream], args=argv)
        return list(answer)

    def _failed(self, exc: BaseException) -> None:
        self._on_error()
        self._fall_back()
        if self._down_since is None:
            self._down_since = self._clock()
            logger.bind(dependency="redis").warning(
                "shared breakers unavailable ({}); each breaker decides alone until Redis answers",
                type(exc).__name__,
            )

    def _fall_back(self) -> None:
        for breaker in self._breakers.values():
            breaker.fall_back()

    def _recovered(self) -> None:
        if self._down_since is not None:
            outage_s = self._clock() - self._down_since
            self._down_since = None
            logger.bind(dependency="redis").info(
                "shared breakers back after {:.1f}s; the fleet's state is followed again",
                outage_s,
            )


def _generation(report: Report) -> int:
    return report.generation


def _code(report: Report) -> str:
    return report.code if report.permit_id is None else f"{report.code}:{report.permit_id}"
