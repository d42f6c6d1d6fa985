"""Static checks of grafana/: what Grafana needs to load each dashboard, and no rotten query.

No Grafana here: the JSON is checked for the fields file provisioning and the panels need, every
expression is parsed by promtool, and every metric a panel reads must exist in the gateway's own
/metrics. A renamed metric fails here long before a dashboard shows "No data".
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.support import (
    APP_METRICS_NEEDED,
    DASHBOARD_DIR,
    DATASOURCE,
    PROMETHEUS_SYNTHETIC,
    PROVISIONING_DIR,
    dashboard_files,
    expand_grafana_variables,
    exposed_names,
    fail_without,
    load_dashboard,
    metric_names,
    needed_note,
    panel_targets,
    query_panels,
    walk_panels,
)

EXPECTED = {
    "gateway-overview": "Gateway overview",
    "gateway-freshness": "Real data and freshness",
    "gateway-upstreams": "Upstreams and breakers",
}
NUMERIC_PANELS = {"timeseries", "stat", "gauge", "bargauge"}
RATE_FUNCTIONS = re.compile(r"\b(?:rate|irate|increase|delta|idelta)\s*\(")
RANGE = re.compile(r"\[([^\]]+)\]")
COMPOSE_DASHBOARD_PATH = "/var/lib/grafana/dashboards"


def boards() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, load_dashboard(path)) for path in dashboard_files()]


def test_the_three_dashboards_exist_with_fixed_uids() -> None:
    found = {board.get("uid"): board.get("title") for _, board in boards()}
    assert found == EXPECTED


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_dashboard_top_level(path: Path) -> None:
    board = load_dashboard(path)
    assert "__inputs" not in board, "export-for-sharing format breaks file provisioning"
    assert isinstance(board.get("uid"), str)
    assert 0 < len(board["uid"]) <= 40
    assert path.stem == board["uid"], "file name = uid, so a uid is easy to find"
    assert board.get("title")
    assert board.get("id") is None
    assert board.get("schemaVersion", 0) >= 39
    assert board.get("time", {}).get("from")
    assert board["time"].get("to")
    assert board.get("refresh")
    assert isinstance(board.get("panels"), list)
    assert board["panels"]
    assert "gateway" in board.get("tags", [])


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_panel_is_complete(path: Path) -> None:
    board = load_dashboard(path)
    problems: list[str] = []
    ids = [p.get("id") for p in walk_panels(board["panels"])]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids must be unique and set: {ids}")
    for panel in walk_panels(board["panels"]):
        title = panel.get("title")
        grid = panel.get("gridPos", {})
        if not title:
            problems.append(f"panel {panel.get('id')} has no title")
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            problems.append(f"{title}: gridPos needs integer h, w, x, y")
        elif grid["x"] + grid["w"] > 24:
            problems.append(f"{title}: wider than the 24-column grid")
        if panel.get("type") == "row":
            continue
        if not panel.get("type"):
            problems.append(f"{title}: no type")
        if not panel.get("description"):
            problems.append(f"{title}: no description (what it means for a trader)")
        if panel.get("datasource") != DATASOURCE:
            problems.append(f"{title}: datasource must be {DATASOURCE}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title}: no targets")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or not all(ref_ids):
            problems.append(f"{title}: refIds must be set and unique: {ref_ids}")
        for target in targets:
            if not str(target.get("expr", "")).strip():
                problems.append(f"{title} / {target.get('refId')}: empty expr")
            if target.get("datasource", DATASOURCE) != DATASOURCE:
                problems.append(f"{title} / {target.get('refId')}: other datasource")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if panel.get("type") in NUMERIC_PANELS and not unit:
            problems.append(f"{title}: numeric panel without a unit")
    assert not problems, "\n".join(problems)


def test_rate_windows_follow_grafana_not_a_fixed_window() -> None:
    """rate()/increase() use $__rate_interval (or $__range for "in the selected range")."""
    wrong = []
    for target in panel_targets():
        if RATE_FUNCTIONS.search(target.expr):
            windows = set(RANGE.findall(target.expr))
            if not windows <= {"$__rate_interval", "$__range"}:
                wrong.append(target.where())
    assert not wrong, "\n".join(wrong)


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses every panel expression (as recording rules: the cheapest full parse)."""
    promtool = fail_without("promtool")
    targets = panel_targets()
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"panel:expr{i}", "expr": expand_grafana_variables(t.expr)}
                    for i, t in enumerate(targets)
                ],
            }
        ]
    }
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        lines = [f"expr{i} = {t.where()}" for i, t in enumerate(targets)]
        pytest.fail(result.stdout + result.stderr + "\n" + "\n".join(lines), pytrace=False)


def test_every_metric_a_panel_reads_exists_in_metrics(exposition: str) -> None:
    exposed = exposed_names(exposition) | PROMETHEUS_SYNTHETIC
    missing = [
        (name, target.where())
        for target in panel_targets()
        for name in sorted(metric_names(target.expr))
        if name not in exposed
    ]
    assert not missing, (
        "metrics read by panels but absent from /metrics:\n"
        + "\n".join(f"{name} <- {where}" for name, where in missing)
        + needed_note({name for name, _ in missing} & APP_METRICS_NEEDED.keys())
    )


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{route=~"/v1/(a|b)", le!=""}'
        "[$__rate_interval])))\n/ on (route) group_left (upstream) y_total offset 5m"
        " and time() - max(z_seconds) > bool 1e3 or vector(0)"
    )
    assert metric_names(expr) == {"x_bucket", "y_total", "z_seconds"}
    assert metric_names('{__name__="a_total", job="gateway"}') == {"a_total"}


# --- provisioning ---------------------------------------------------------------------------------
def test_datasource_provisioning_pins_the_uid_dashboards_use() -> None:
    data = yaml.safe_load((PROVISIONING_DIR / "datasources" / "prometheus.yml").read_text())
    assert data["apiVersion"] == 1
    (source,) = data["datasources"]
    assert source["uid"] == DATASOURCE["uid"]
    assert source["type"] == DATASOURCE["type"]
    assert source["url"] == "http://prometheus:9090"
    assert source["access"] == "proxy"


def test_dashboard_provider_reads_the_mounted_directory() -> None:
    data = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "dashboards.yml").read_text())
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == COMPOSE_DASHBOARD_PATH
    assert provider["allowUiUpdates"] is False
    assert DASHBOARD_DIR.is_dir()


def test_every_panel_has_targets_counted() -> None:
    """At least one query per data panel; the panel proof evaluates each of them."""
    for path, board in boards():
        for panel in query_panels(board):
            assert panel.get("targets"), f"{path.name}: {panel.get('title')}"
