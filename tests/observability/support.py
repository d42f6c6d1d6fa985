"""Shared helpers for the observability tests: dashboards, rules, PromQL metric names, tools.

No PromQL parser is a dependency; `metric_names()` is a small tokenizer that drops what cannot be
a metric name (strings, label matchers, ranges, grouping clauses, function calls, keywords).
Syntax itself is checked by promtool (test_dashboards) and by a real Prometheus (panel proof).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
PROVISIONING_DIR = REPO_ROOT / "grafana" / "provisioning"
PROMETHEUS_CONFIG = REPO_ROOT / "config" / "prometheus.yml"
ALERT_RULES = REPO_ROOT / "config" / "alerts.yml"
ALERT_TESTS = REPO_ROOT / "config" / "alerts.test.yml"
ENSURE_SCRIPT = "tests/infra/ensure-prometheus.sh"

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

# Grafana's built-in variables, replaced the way Grafana would expand them for a short range.
GRAFANA_VARIABLES = {
    "${__rate_interval}": "1m",
    "$__rate_interval": "1m",
    "${__interval}": "15s",
    "$__interval": "15s",
    "${__range}": "5m",
    "$__range": "5m",
}

# Metrics Prometheus itself attaches to every target; not the gateway's to export.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Metrics that dashboards and alerts read and that issue 5 asks the app to export. Until the app
# does, the name checks and the panel proof FAIL and print these lines (they are required).
APP_METRICS_NEEDED = {
    "gateway_market_open": (
        "gauge, no labels: 1 while Alpaca's clock says is_open, 0 otherwise; set from every "
        "clock answer the gateway receives (the /v1/clock route, its cache refreshes)"
    ),
    "gateway_watchlist_last_observed_timestamp_seconds": (
        "gauge, label symbol (only the METRICS_WATCHLIST symbols, e.g. AAPL,SPY; never others):"
        " Unix time of the newest observed_at the gateway has seen for that symbol (quote, "
        "trade or snapshot member), set when it is served or cached"
    ),
}


def needed_note(names: set[str]) -> str:
    lines = [f"  needs app metric {n}: {APP_METRICS_NEEDED[n]}" for n in sorted(names)]
    return ("\n" + "\n".join(lines)) if lines else ""


_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")


def fail_without(binary: str) -> str:
    """The path of `binary` (prometheus / promtool), or fail the test naming the install script."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"`{binary}` is required and not on PATH. Run {ENSURE_SCRIPT} "
            "(it installs Debian's `prometheus` package, which ships prometheus and promtool).",
            pytrace=False,
        )
    return path


def expand_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (`foo`, `foo{a="b"}`, `foo[5m]`)."""
    text = expand_grafana_variables(expr)
    matcher_names: set[str] = set()
    for matchers in _MATCHERS.findall(text):
        # {__name__="x"} selects a metric too.
        matcher_names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', matchers))
    text = _STRING.sub('""', text)
    for pattern in (_MATCHERS, _RANGE, _GROUPING, _OFFSET):
        text = pattern.sub(" ", text)
    names = {m.group(1) for m in _IDENTIFIER.finditer(text)}
    return {n for n in names if n.lower() not in _PROMQL_KEYWORDS} | matcher_names


def exposed_names(exposition: str) -> set[str]:
    """Every series name an exposition can yield: samples, and all names of each declared family.

    Families declared with no child yet (a labelled metric never touched) still count: their
    `# TYPE` line is exported, and the series appears with the first event.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "histogram":
                names.update(f"{name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
            elif kind == "summary":
                names.update(f"{name}{s}" for s in ("_sum", "_count", "_created"))
            elif kind == "counter":
                base = name.removesuffix("_total")
                names.update({f"{base}_total", f"{base}_created"})
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


# --- dashboards ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanelTarget:
    dashboard: str  # file name
    dashboard_title: str
    panel_title: str
    ref_id: str
    expr: str

    def where(self) -> str:
        return f"{self.dashboard_title} / {self.panel_title} / {self.ref_id}: {self.expr}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Panels that query data (rows only lay out)."""
    return (p for p in walk_panels(dashboard.get("panels", [])) if p.get("type") != "row")


def panel_targets() -> list[PanelTarget]:
    found = []
    for path in dashboard_files():
        board = load_dashboard(path)
        for panel in query_panels(board):
            for target in panel.get("targets", []):
                found.append(
                    PanelTarget(
                        path.name,
                        str(board.get("title")),
                        str(panel.get("title")),
                        str(target.get("refId")),
                        str(target.get("expr", "")),
                    )
                )
    return found


# --- alert rules --------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERT_RULES)["groups"]
    return [rule for group in groups for rule in group["rules"]]
