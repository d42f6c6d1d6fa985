"""The printed table: medians of the rounds, per-round ratios, each target MET or MISSED.

The targets are the issue's, printed next to the row they judge; nothing here adjusts a run.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.performance.runners import LoadResult

TARGET_BARE_RATIO = 0.8  # cached quote / bare Starlette, same server
TARGET_REDIS_RATIO = 0.9  # Redis-backed / in-process cached quote
TARGET_P99_CACHED_MS = 5.0  # cached quote at 50% of its max throughput
TARGET_BATCH_EXTRA_MS = 10.0  # 100-symbol batch over one quote
TARGET_P99_BREAKER_MS = 2.0  # breaker-open 503 at 50% of its max throughput
TARGET_RSS_MIB = 150.0  # gateway worker after the whole run
SATURATED_SHARE = 0.85  # a closed-loop worker below this share of its core was not the limit


@dataclass
class Measured:
    results: list[LoadResult] = field(default_factory=list)
    upstream_calls: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)  # the loaded worker's CPU time per run


@dataclass
class Results:
    """What a run measured, by key ("uvicorn/cached", "nginx", "granian/breaker@50%" ...)."""

    servers: list[str]
    rounds: int
    measured: dict[str, Measured] = field(default_factory=lambda: defaultdict(Measured))
    rates: dict[str, float] = field(default_factory=dict)  # fixed-rate runs: requests/s
    hot: dict[str, tuple[LoadResult, int]] = field(default_factory=dict)  # result, upstream calls
    rss_mib: dict[str, float] = field(default_factory=dict)

    def median(self, key: str) -> LoadResult:
        return median_result(self.measured[key].results)

    def ratios(self, numerator: str, denominator: str) -> list[float]:
        a, b = self.measured[numerator].results, self.measured[denominator].results
        return [x.rps / y.rps for x, y in zip(a, b, strict=True)]

    def calls_per_10k(self, key: str) -> float:
        measured = self.measured[key]
        answered = max(sum(r.requests for r in measured.results), 1)
        return sum(measured.upstream_calls) * 10_000 / answered

    def cpu_us_per_request(self, key: str) -> float:
        measured = self.measured[key]
        return sum(measured.cpu_s) * 1e6 / max(sum(r.requests for r in measured.results), 1)

    def core_share(self, key: str) -> float:
        """How much of its core the worker got while loaded (median of runs): well below 1.0
        in a closed loop means something else ran on that core."""
        measured = self.measured[key]
        return statistics.median(
            cpu / r.duration_s for cpu, r in zip(measured.cpu_s, measured.results, strict=True)
        )

    def cpu(self, key: str) -> str:
        return (
            f"CPU {self.cpu_us_per_request(key):.0f} us/req, {self.core_share(key):.0%} of a core"
        )

    def per_round(self, key: str, what: str = "rps", fmt: str = ".0f") -> str:
        return per_round([getattr(r, what) for r in self.measured[key].results], fmt)


@dataclass(frozen=True)
class Row:
    scenario: str
    rps: str = ""
    p50: str = ""
    p99: str = ""
    target: str = ""  # "measured vs wanted: MET", or a reference note
    notes: str = ""


def ms(value: float) -> str:
    return f"{value:.2f}"


def load_row(scenario: str, result: LoadResult, target: str = "", notes: str = "") -> Row:
    return Row(scenario, f"{result.rps:.0f}", ms(result.p50_ms), ms(result.p99_ms), target, notes)


def errors(result: LoadResult) -> str:
    if result.errors == 0:
        return "0 errors"
    return f"{result.status_errors} non-2xx, {result.socket_errors} socket errors"


def per_round(values: Sequence[float], fmt: str = ".0f") -> str:
    return "/".join(format(v, fmt) for v in values)


def median_result(results: Sequence[LoadResult]) -> LoadResult:
    """The per-field median of several runs (rps, p50 and p99 each their own median)."""
    statuses: dict[str, int] = {}
    for result in results:
        for code, n in result.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    lags = [r.send_lag_p99_ms for r in results if r.send_lag_p99_ms is not None]
    return LoadResult(
        tool=results[0].tool,
        requests=sum(r.requests for r in results),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        duration_s=sum(r.duration_s for r in results),
        status_errors=sum(r.status_errors for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        statuses=dict(sorted(statuses.items())),
        send_lag_p99_ms=statistics.median(lags) if lags else None,
    )


class Report:
    """Rows for every server, nginx, and (with two servers) the server against the other."""

    def __init__(self, results: Results) -> None:
        self.r = results
        self.verdicts: list[tuple[str, bool]] = []

    def _verdict(self, name: str, met: bool, doubt: str = "") -> str:
        """MET or MISSED; with ``doubt`` (why the measurement may not be the app's) a star."""
        self.verdicts.append((name + (f" (* {doubt})" if doubt else ""), met))
        return ("MET" if met else "MISSED") + ("*" if doubt else "")

    def _unsaturated(self, *keys: str) -> str:
        """A closed-loop ratio holds only if both workers were saturated: one that had less than
        SATURATED_SHARE of its core was waiting for the load generator, or lost its core to
        something else on the machine."""
        short = [
            f"{key} {share:.0%}"
            for key in keys
            if (share := self.r.core_share(key)) < SATURATED_SHARE
        ]
        return f"not saturated: {', '.join(short)} of a core" if short else ""

    def rows(self) -> list[Row]:
        rows: list[Row] = []
        for server in self.r.servers:
            rows += self._throughput_rows(server)
            rows += self._latency_rows(server)
            rows += self._hot_and_rss_rows(server)
        rows += self._nginx_rows()
        if len(self.r.servers) > 1:
            rows += self._server_rows()
        return rows

    def _throughput_rows(self, s: str) -> list[Row]:
        r = self.r
        bare_ratios = r.ratios(f"{s}/cached", f"{s}/bare")
        bare_ratio = statistics.median(bare_ratios)
        redis_ratios = r.ratios(f"{s}/redis", f"{s}/cached")
        redis_ratio = statistics.median(redis_ratios)
        cpu_ratio = r.cpu_us_per_request(f"{s}/bare") / r.cpu_us_per_request(f"{s}/cached")
        breaker = r.median(f"{s}/breaker")
        all_503 = breaker.status_errors == breaker.requests and breaker.socket_errors == 0
        return [
            Row(f"--- {s}: one worker per app, same command line ---"),
            load_row(
                "cached quote (in-process cache)",
                r.median(f"{s}/cached"),
                f"{bare_ratio:.2f}x bare vs >= {TARGET_BARE_RATIO}x: "
                + self._verdict(
                    f"{s}: cached quote >= {TARGET_BARE_RATIO}x bare",
                    bare_ratio >= TARGET_BARE_RATIO,
                    self._unsaturated(f"{s}/cached", f"{s}/bare"),
                ),
                f"rps {r.per_round(f'{s}/cached')}; ratios {per_round(bare_ratios, '.2f')};"
                f" {r.cpu(f'{s}/cached')} (bare/gateway by CPU: {cpu_ratio:.2f}x);"
                f" {r.calls_per_10k(f'{s}/cached'):.1f} upstream calls/10k;"
                f" {errors(r.median(f'{s}/cached'))}",
            ),
            load_row(
                "bare Starlette, same answer bytes",
                r.median(f"{s}/bare"),
                "(reference)",
                f"rps {r.per_round(f'{s}/bare')}; {r.cpu(f'{s}/bare')};"
                f" {errors(r.median(f'{s}/bare'))}",
            ),
            load_row(
                "cached quote (Redis cache)",
                r.median(f"{s}/redis"),
                f"{redis_ratio:.2f}x in-process vs >= {TARGET_REDIS_RATIO}x: "
                + self._verdict(
                    f"{s}: Redis-backed >= {TARGET_REDIS_RATIO}x in-process",
                    redis_ratio >= TARGET_REDIS_RATIO,
                    self._unsaturated(f"{s}/redis", f"{s}/cached"),
                ),
                f"rps {r.per_round(f'{s}/redis')}; ratios {per_round(redis_ratios, '.2f')};"
                f" {r.cpu(f'{s}/redis')};"
                f" {r.calls_per_10k(f'{s}/redis'):.1f} upstream calls/10k;"
                f" {errors(r.median(f'{s}/redis'))}",
            ),
            load_row(
                "breaker open (503 CIRCUIT_OPEN)",
                breaker,
                "",
                f"rps {r.per_round(f'{s}/breaker')}; {r.cpu(f'{s}/breaker')};"
                f" {'all' if all_503 else 'NOT ALL'} of"
                f" {breaker.requests} answers non-2xx;"
                f" {sum(r.measured[f'{s}/breaker'].upstream_calls)} upstream calls",
            ),
        ]

    def _latency_rows(self, s: str) -> list[Row]:
        r = self.r
        single, batch = r.median(f"{s}/single_c1"), r.median(f"{s}/batch_c1")
        extras = [
            b.p50_ms - a.p50_ms
            for a, b in zip(
                r.measured[f"{s}/single_c1"].results,
                r.measured[f"{s}/batch_c1"].results,
                strict=True,
            )
        ]
        extra = statistics.median(extras)
        rows = [
            load_row(
                "one quote, 1 connection",
                single,
                "",
                f"rps {r.per_round(f'{s}/single_c1')}; one request at a time: latency ="
                f" service time + loopback; {errors(single)}",
            ),
            load_row(
                "100-symbol batch, 1 connection",
                batch,
                f"+{extra:.2f} ms over one quote vs < {TARGET_BATCH_EXTRA_MS:g} ms: "
                + self._verdict(
                    f"{s}: 100-symbol batch < {TARGET_BATCH_EXTRA_MS:g} ms over one quote",
                    extra < TARGET_BATCH_EXTRA_MS,
                ),
                f"p50 minus one quote's p50, rounds {per_round(extras, '.2f')};"
                f" {batch.rps * 100:.0f} symbol-quotes/s; {r.cpu(f'{s}/batch_c1')};"
                f" {errors(batch)}",
            ),
        ]
        for label, key, floor_key, limit in (
            ("cached quote", f"{s}/cached@50%", f"{s}/bare@cached", TARGET_P99_CACHED_MS),
            ("breaker open", f"{s}/breaker@50%", f"{s}/bare@breaker", TARGET_P99_BREAKER_MS),
        ):
            result = r.median(key)
            if label == "breaker open":
                valid = set(result.statuses) == {"503"} and result.socket_errors == 0
                answers = "all 503" if valid else f"statuses {result.statuses}, {errors(result)}"
            else:
                valid = result.errors == 0
                answers = errors(result)
            met = valid and result.p99_ms < limit
            rows.append(
                load_row(
                    f"{label} at 50% of max (paced)",
                    result,
                    f"p99 {ms(result.p99_ms)} vs < {limit:g} ms: "
                    + self._verdict(f"{s}: {label} p99 < {limit:g} ms at 50% of max", met),
                    f"at {r.rates[key]:.0f} rps; p99 rounds {r.per_round(key, 'p99_ms', '.2f')};"
                    f" {answers}; send lag p99 {result.send_lag_p99_ms} ms",
                )
            )
            rows.append(
                load_row(
                    "  bare Starlette at that rate",
                    r.median(floor_key),
                    "(stack floor)",
                    f"p99 rounds {r.per_round(floor_key, 'p99_ms', '.2f')};"
                    f" {errors(r.median(floor_key))}",
                )
            )
        return rows

    def _hot_and_rss_rows(self, s: str) -> list[Row]:
        result, calls = self.r.hot[s]
        per_10k = calls * 10_000 / max(result.requests, 1)
        windows = result.duration_s  # one TTL window per second: the quote TTL is 1 s
        rss = self.r.rss_mib[f"{s}/cached"]
        others = ", ".join(
            f"{role} {self.r.rss_mib[f'{s}/{role}']:.0f}" for role in ("redis", "breaker", "bare")
        )
        return [
            load_row(
                "hot symbol, upstream calls",
                result,
                f"{per_10k:.1f} calls per 10k requests",
                f"{calls} calls for {result.requests} requests in {result.duration_s:.1f} s"
                f" ({calls / windows:.2f} per 1 s TTL window); {errors(result)}",
            ),
            Row(
                "gateway worker RSS after the run",
                target=f"{rss:.0f} MiB vs < {TARGET_RSS_MIB:g} MiB: "
                + self._verdict(f"{s}: worker RSS < {TARGET_RSS_MIB:g} MiB", rss < TARGET_RSS_MIB),
                notes=f"VmRSS of the in-process-cache gateway; other workers (MiB): {others}",
            ),
        ]

    def _nginx_rows(self) -> list[Row]:
        r, first = self.r, self.r.servers[0]
        vs_gateway = statistics.median(r.ratios(f"{first}/cached", "nginx"))
        vs_bare = statistics.median(r.ratios(f"{first}/bare", "nginx"))
        floor = r.median("floor@cached")
        doubt = self._unsaturated("nginx")
        return [
            Row(
                "--- nginx proxy_cache in front of the emulator (1 worker, 1 s validity, lock) ---"
            ),
            load_row(
                "nginx cached quote",
                r.median("nginx"),
                f"gateway ({first}) = {vs_gateway:.2f}x nginx",
                (f"{doubt}, so nginx's figure is wrk's ceiling, a lower bound; " if doubt else "")
                + f"rps {r.per_round('nginx')}; bare Starlette = {vs_bare:.2f}x nginx;"
                f" {r.cpu('nginx')};"
                f" {r.calls_per_10k('nginx'):.1f} upstream calls/10k; {errors(r.median('nginx'))}",
            ),
            load_row(
                "nginx constant answer, paced",
                floor,
                "(generator floor)",
                f"at the cached quote's 50% rate, {r.rates['floor@cached']:.0f} rps; p99 rounds"
                f" {r.per_round('floor@cached', 'p99_ms', '.2f')};"
                f" send lag p99 {floor.send_lag_p99_ms} ms",
            ),
        ]

    def _server_rows(self) -> list[Row]:
        a, b = self.r.servers[1], self.r.servers[0]
        rows = [Row(f"--- {a} / {b}: throughput, per-round ratios ---")]
        for role in ("cached", "bare", "redis", "breaker"):
            ratios = self.r.ratios(f"{a}/{role}", f"{b}/{role}")
            doubt = self._unsaturated(f"{a}/{role}", f"{b}/{role}")
            rows.append(
                Row(
                    role,
                    f"{statistics.median(ratios):.2f}x",
                    notes=f"rounds {per_round(ratios, '.2f')}; CPU us/req {b}"
                    f" {self.r.cpu_us_per_request(f'{b}/{role}'):.0f}, {a}"
                    f" {self.r.cpu_us_per_request(f'{a}/{role}'):.0f}"
                    + (f"; {doubt}" if doubt else ""),
                )
            )
        return rows

    def summary(self) -> list[str]:
        met = sum(ok for _, ok in self.verdicts)
        lines = [f"targets: {met} of {len(self.verdicts)} met"]
        lines += [f"  {'MET   ' if ok else 'MISSED'} {name}" for name, ok in self.verdicts]
        return lines


def table(rows: Sequence[Row], footer: Sequence[str]) -> str:
    header = Row("scenario", "rps", "p50 ms", "p99 ms", "target: measured vs wanted", "notes")
    data = [header, *(row for row in rows if not _heading(row))]
    width = max(len(r.scenario) for r in data) + 2
    target_width = max(len(r.target) for r in data) + 2
    lines = []
    for row in (header, *rows):
        if _heading(row):
            lines.append(row.scenario)  # a section heading
            continue
        cells = row.scenario.ljust(width) + row.rps.rjust(7) + row.p50.rjust(9) + row.p99.rjust(9)
        lines.append(f"{cells}  {row.target.ljust(target_width)}{row.notes}".rstrip())
    return "\n".join([*lines, *footer])


def _heading(row: Row) -> bool:
    return not (row.rps or row.p50 or row.p99 or row.target or row.notes)
