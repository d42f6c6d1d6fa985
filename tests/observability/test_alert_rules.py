"""config/prometheus.yml and config/alerts.yml, checked and unit-tested by promtool.

Every alert has promtool unit tests (config/alerts.test.yml) that see it fire and see it stay
quiet; every metric a rule reads must exist in the gateway's /metrics.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.observability.support import (
    ALERT_RULES,
    ALERT_TESTS,
    APP_METRICS_NEEDED,
    PROMETHEUS_CONFIG,
    PROMETHEUS_SYNTHETIC,
    REPO_ROOT,
    alert_rules,
    exposed_names,
    fail_without,
    load_yaml,
    metric_names,
    needed_note,
)

SEVERITIES = {"page", "ticket"}


def promtool(*args: str | Path) -> None:
    binary = fail_without("promtool")
    result = subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    )


def test_promtool_check_config() -> None:
    """Also loads alerts.yml, resolved relative to prometheus.yml."""
    promtool("check", "config", PROMETHEUS_CONFIG)


def test_promtool_check_rules() -> None:
    promtool("check", "rules", "--lint=all", "--lint-fatal", ALERT_RULES)


def test_promtool_test_rules() -> None:
    promtool("test", "rules", ALERT_TESTS)


def test_prometheus_config_scrapes_the_gateway_with_the_rules() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    # Every replica of docker-compose.yml (test_compose.py holds the two lists equal).
    assert job["static_configs"] == [
        {"targets": ["gateway-1:8000", "gateway-2:8000", "gateway-3:8000"]}
    ]


def test_every_alert_is_labelled_and_explained() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules if "alert" in r]
    assert len(names) == len(set(names))
    assert set(names) == {
        "GatewayCircuitBreakerOpen",
        "GatewayRealDataSuccessRatioLow",
        "GatewayQuoteAgeHigh",
        "GatewayInternalError",
        "GatewayUpstreamNoSuccess",
        "GatewayOrderAuditUnsettled",
        "GatewayStreamFeedDown",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(ALERT_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_metric_a_rule_reads_exists_in_metrics(exposition: str) -> None:
    exposed = exposed_names(exposition) | PROMETHEUS_SYNTHETIC
    missing = [
        (name, rule.get("alert") or rule.get("record"))
        for rule in alert_rules()
        for name in sorted(metric_names(rule["expr"]))
        if name not in exposed
    ]
    if missing:
        pytest.fail(
            "metrics read by rules but absent from /metrics:\n"
            + "\n".join(f"{name} <- {rule}" for name, rule in missing)
            + needed_note({name for name, _ in missing} & APP_METRICS_NEEDED.keys()),
            pytrace=False,
        )


def test_the_exposition_passes_promtool_check_metrics(exposition: str) -> None:
    """Prometheus naming conventions (units, _total, help text) on the real /metrics."""
    binary = fail_without("promtool")
    result = subprocess.run(
        [binary, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
