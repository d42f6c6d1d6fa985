"""Alpaca's market-data host fails under load: 500s, hangs, resets, malformed JSON, 429s.

One gateway; for each fault in turn: healthy load, the fault on every `/v2/stocks/*` call for
a while, then healed, and the load goes on until the gateway has recovered. One line per fault.
Goals: every answer typed (2xx, or problem+json with a code and status from the README's table;
no answer at all is untyped too), no call reaching Alpaca while the data breaker is open, and
recovery within what the settings promise (`promised_recovery_s`).

The gateway runs with the default shared breaker (BREAKER_SHARED, its state in Redis): it is
what a deployment runs, and its half-open permits are what once kept recovery at ~9 s (a
refused permit's wait outlived the round it was refused in).

"While open" is measured, not inferred: a sampler reads the breaker's state and transition
count from /metrics and the emulator's call count alternately every 50 ms; calls counted
between two samples are charged to the open breaker only when it was open, with no transition,
at the metrics reads on both sides of both call reads.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from tests.chaos.figures import Result
from tests.chaos.load import Answer, Load, Request, between, p99_ms, told
from tests.chaos.profile import Profile
from tests.chaos.redis_outage import seed_quotes
from tests.chaos.rig import Rig, sample, scrape
from tests.emulator.control import FaultKindName

SYMBOLS = tuple(f"UF{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(40))
FAULTS: tuple[tuple[str, FaultKindName], ...] = (
    ("upstream_500", "status_500"),
    ("upstream_hang", "hang"),
    ("upstream_reset", "reset"),
    ("upstream_malformed", "malformed_json"),
    ("upstream_429", "rate_limited"),
)
RETRY_AFTER_S = 2  # the 429's X-RateLimit-Reset, seconds ahead
DATA_TIMEOUT_S = 0.5
NEGATIVE_TTL_S = 1.0
TRIAL_S = 0.5  # the half-open trials (three calls) against a healed, loopback Alpaca
HEALTHY_AGAIN_S = 0.25  # before each later fault: the previous one ended quiet
SAMPLE_S = 0.05
OPEN = 2.0  # gateway_circuit_breaker_state: 0 closed, 1 half-open, 2 open


@dataclass(frozen=True)
class BreakerSample:
    at_s: float
    state: float
    transitions: float
    calls: int  # read after `state`


async def run(rig: Rig, profile: Profile) -> list[Result]:
    await seed_quotes(rig, SYMBOLS)
    env = rig.gateway_env(
        BREAKER_OPEN_DURATION_S=str(profile.breaker_open_s),
        DATA_TIMEOUT_S=str(DATA_TIMEOUT_S),
        CACHE_NEGATIVE_TTL_S=str(NEGATIVE_TTL_S),
    )
    gateway, key = await rig.start_keyed_gateway(env, "upstream-faults", "data:read")
    headers = {"Authorization": f"Bearer {key}"}
    requests = [Request("GET", f"/v1/stocks/{s}/quote", headers) for s in SYMBOLS]
    results = []
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            for name, kind in FAULTS:
                results.append(
                    await _one_fault(rig, client, gateway.base_url, requests, profile, name, kind)
                )
    finally:
        await asyncio.to_thread(gateway.stop)
    return results


async def _one_fault(
    rig: Rig,
    client: httpx.AsyncClient,
    base_url: str,
    requests: list[Request],
    profile: Profile,
    name: str,
    kind: FaultKindName,
) -> Result:
    promised_s = promised_recovery_s(kind, profile)
    healthy_s = profile.before_s if name == FAULTS[0][0] else HEALTHY_AGAIN_S
    cap_s = healthy_s + profile.fault_s + promised_s + 8
    load = Load(
        base_url, workers=profile.workers, duration_s=cap_s, max_requests=profile.max_requests
    )
    samples: list[BreakerSample] = []
    sending = asyncio.create_task(load.run(lambda n: requests[n % len(requests)]))
    sampling = asyncio.create_task(_sample(rig, client, base_url, load, samples))
    try:
        await asyncio.sleep(healthy_s)
        faulted_at = load.now()
        retry_after = RETRY_AFTER_S if kind == "rate_limited" else None
        await rig.control.add_fault("/v2/stocks/*", kind, retry_after_s=retry_after)
        calls_at_fault = await rig.data_calls()
        await asyncio.sleep(profile.fault_s)
        await rig.control.clear_faults()
        cleared_at = load.now()
        calls_in_fault = await rig.data_calls() - calls_at_fault
        await _until_recovered(load, samples, cleared_at, cap_s, profile.quiet_s)
    finally:
        load.stop()
        answers = await sending
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)

    result = Result(name)
    result.goal(
        "untyped",
        sum(1 for a in answers if not a.typed),
        why="a non-2xx answer that is not problem+json with a documented code, or no answer",
    )
    result.goal(
        "calls_while_open",
        _calls_while_open(samples),
        why="calls that reached Alpaca while the data breaker was open",
    )
    recovered = _recovery_s(answers, cleared_at, load.now(), profile.quiet_s)
    result.goal(
        "recovery_s",
        recovered if recovered is not None else float("inf"),
        limit=promised_s,
        why="answers still failing long after the fault cleared",
    )
    opened = next((s.at_s for s in samples if s.at_s >= faulted_at and s.state == OPEN), None)
    fast = [a for a in answers if a.code == "CIRCUIT_OPEN"]
    result.figures.update(
        {
            "breaker_opened_s": "never" if opened is None else round(opened - faulted_at, 2),
            "upstream_calls_in_fault": calls_in_fault,
            "p99_fault_ms": p99_ms(between(answers, faulted_at, cleared_at)),
            "p99_circuit_open_ms": p99_ms(fast) if fast else "-",
            "answers": len(answers),
            "told_fault": told(between(answers, faulted_at, cleared_at)),
        }
    )
    return result


def promised_recovery_s(kind: FaultKindName, profile: Profile) -> float:
    """The longest the settings allow answers to fail once Alpaca is healed. Breaker faults:
    a call in flight at the cure may still fail (up to DATA_TIMEOUT_S) and re-open the breaker
    for BREAKER_OPEN_DURATION_S, the trials then close it, and a failure cached just before
    is served until its CACHE_NEGATIVE_TTL_S ends. A 429: the hold until Alpaca's reset, the
    probe that ends it, and the same negative TTL."""
    hold_s = RETRY_AFTER_S if kind == "rate_limited" else DATA_TIMEOUT_S + profile.breaker_open_s
    return hold_s + TRIAL_S + NEGATIVE_TTL_S


async def _sample(
    rig: Rig, client: httpx.AsyncClient, base_url: str, load: Load, into: list[BreakerSample]
) -> None:
    while True:
        metrics = await scrape(client, base_url)
        calls = await rig.data_calls()
        into.append(
            BreakerSample(
                load.now(),
                sample(metrics, "gateway_circuit_breaker_state", upstream="data"),
                _transitions(metrics),
                calls,
            )
        )
        await asyncio.sleep(SAMPLE_S)


def _transitions(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    name = "gateway_circuit_breaker_transitions_total"
    return sum(
        value
        for (metric, labels), value in metrics.items()
        if metric == name and ("upstream", "data") in labels
    )


def _calls_while_open(samples: list[BreakerSample]) -> int:
    """Calls read between samples i and i+1, when the breaker was open with no transition from
    the state read of sample i to that of sample i+2 (which brackets both call reads)."""
    charged = 0
    for first, second, third in zip(samples, samples[1:], samples[2:], strict=False):
        steady = first.transitions == third.transitions
        if steady and first.state == second.state == third.state == OPEN:
            charged += second.calls - first.calls
    return charged


def _recovery_s(
    answers: list[Answer], cleared_at: float, now: float, quiet_s: float
) -> float | None:
    """From the fault's end until the last failing answer sent after it finished; None if
    answers were still failing at the end of the run."""
    failing = [a.end_s for a in answers if a.at_s >= cleared_at and not a.ok]
    if not failing:
        return 0.0
    last = max(failing)
    return None if now - last < quiet_s else round(last - cleared_at, 2)


async def _until_recovered(
    load: Load, samples: list[BreakerSample], cleared_at: float, cap_s: float, quiet_s: float
) -> None:
    """Load goes on until `quiet_s` of only 2xx answers with the breaker closed, or the cap."""
    while load.now() < cap_s:
        await asyncio.sleep(0.1)
        recent = [a for a in load.answers if a.at_s >= max(cleared_at, load.now() - quiet_s)]
        closed = bool(samples) and samples[-1].state == 0
        quiet_for = load.now() - max(
            [cleared_at, *(a.end_s for a in load.answers if a.at_s >= cleared_at and not a.ok)]
        )
        if closed and recent and quiet_for >= quiet_s:
            return
