"""The soak's curves, summed up: start, peak and end of each measure, and a verdict.

A measure with a configured bound (cache entries and bytes, the key cache, the single-flight
table, error_logs rows) must never exceed it. A measure without one (RSS, descriptors, the
metrics' size and series count, the store's bytes) must be flat after warm-up: its growth from
the first sample past the warm-up to the end within a stated tolerance. `order_audit` rows grow
with orders by design (an audit trail is kept); the store's bytes may grow by what they take.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.soak.sampler import Sample

MIB = 2**20
AUDIT_ROW_BYTES = 4096  # an audit row (request + Alpaca's order, JSON) with its index entries
WAL_BYTES = 8 * MIB  # SQLite's write-ahead log grows to about its checkpoint size and stays
ERROR_LOG_CHECK_EVERY_ROWS = 1000  # the retention's check cadence (app/storage/error_log.py)


@dataclass(frozen=True)
class Measure:
    name: str
    bound: float | None = None  # every sample at most this (a configured bound)
    tolerance: Callable[[float], float] | None = None  # growth allowed after warm-up
    kept: bool = False  # grows by design: shown, not judged


@dataclass(frozen=True)
class Verdict:
    measure: Measure
    start: float
    peak: float
    warm: float  # the first sample past the warm-up
    end: float
    ok: bool
    text: str


def measures(settings: Mapping[str, str], audit_rows_added: float) -> list[Measure]:
    def setting(name: str) -> float:
        return float(settings[name])

    return [
        Measure("rss_mib", tolerance=lambda warm: max(0.10 * warm, 16.0)),
        Measure("open_fds", tolerance=lambda _: 16.0),
        Measure("metrics_bytes", tolerance=lambda warm: 0.05 * warm),
        # Label sets are closed, but a pair (kind, cache state; from, to state) is exported only
        # once it has happened: a few late firsts are not growth; a series per request is.
        Measure("metrics_series", tolerance=lambda warm: 0.05 * warm),
        Measure("labels_from_requests", bound=0),
        Measure("value_cache_entries", bound=setting("CACHE_MAX_ENTRIES")),
        Measure("value_cache_bytes", bound=setting("CACHE_MAX_BYTES")),
        Measure("key_cache_entries", bound=setting("KEY_CACHE_MAX_ENTRIES")),
        Measure("flights_entries", bound=setting("FLIGHTS_MAX_KEYS")),
        Measure("error_log_rows", bound=setting("ERROR_LOG_MAX_ROWS") + ERROR_LOG_CHECK_EVERY_ROWS),
        Measure("order_audit_rows", kept=True),
        Measure("store_bytes", tolerance=lambda _: audit_rows_added * AUDIT_ROW_BYTES + WAL_BYTES),
    ]


def judge(samples: list[Sample], warmup_s: float, settings: Mapping[str, str]) -> list[Verdict]:
    warm_sample = next((s for s in samples if s.at_s >= warmup_s), samples[-1])
    audits_added = samples[-1].values["order_audit_rows"] - warm_sample.values["order_audit_rows"]
    verdicts = []
    for measure in measures(settings, audits_added):
        curve = [s.values[measure.name] for s in samples if measure.name in s.values]
        if not curve:
            continue
        start, peak, end = curve[0], max(curve), curve[-1]
        warm = warm_sample.values.get(measure.name, start)
        ok, text = _verdict(measure, peak, warm, end)
        if measure.name == "metrics_series" and end != warm:
            text += ": " + _families_grown(warm_sample, samples[-1])
        verdicts.append(Verdict(measure, start, peak, warm, end, ok, text))
    return verdicts


def _families_grown(before: Sample, after: Sample) -> str:
    grown = {
        name: n - before.series.get(name, 0)
        for name, n in after.series.items()
        if n != before.series.get(name, 0)
    }
    ranked = sorted(grown.items(), key=lambda item: -abs(item[1]))
    return ", ".join(f"{name} {_signed(n)}" for name, n in ranked[:4])


def _verdict(measure: Measure, peak: float, warm: float, end: float) -> tuple[bool, str]:
    if measure.kept:
        return True, f"kept by design (+{_n(end - warm)} after warm-up)"
    if measure.bound is not None:
        if peak <= measure.bound:
            return True, f"bounded (peak <= {_n(measure.bound)})"
        return False, f"OVER its bound {_n(measure.bound)}"
    assert measure.tolerance is not None
    growth, allowed = end - warm, measure.tolerance(warm)
    if growth <= allowed:
        return True, f"flat ({_signed(growth)} after warm-up, allowed +{_n(allowed)})"
    return False, f"GROWING ({_signed(growth)} after warm-up, allowed +{_n(allowed)})"


def table(verdicts: list[Verdict]) -> list[str]:
    rows = [f"{'measure':<22}{'start':>12}{'peak':>12}{'end':>12}  verdict"]
    for v in verdicts:
        rows.append(
            f"{v.measure.name:<22}{_n(v.start):>12}{_n(v.peak):>12}{_n(v.end):>12}  {v.text}"
        )
    return rows


def overall(verdicts: list[Verdict]) -> str:
    growing = [v.measure.name for v in verdicts if not v.ok]
    if growing:
        return "verdict: GROWING: " + ", ".join(growing)
    return "verdict: flat after warm-up (bounded by settings)"


def _n(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.1f}"


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _n(abs(value))
