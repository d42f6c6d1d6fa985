"""`python -m app.serve`: the server command `make run` and the container start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.serve import command, environment
from app.settings import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_either_server_gets_the_same_shape(server: str) -> None:
    argv = command(
        settings(gateway_server=server, gateway_host="0.0.0.0", gateway_port=9000)  # noqa: S104
    )

    assert "app.main:app" in argv
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert argv[argv.index("--port") + 1] == "9000"
    assert argv[argv.index("--workers") + 1] == "1"
    # The gateway writes its own access line, without query strings (they may carry secrets).
    assert "--no-access-log" in argv


def test_granian_is_the_default_and_serves_asgi_with_its_lifespan() -> None:
    argv = command(settings())

    assert Path(argv[0]).name == "granian"
    assert argv[argv.index("--interface") + 1] == "asgi"  # asginl would skip the lifespan


def test_json_logs_reach_granians_own_lines_too() -> None:
    argv = command(settings(log_json=True, log_level="WARNING"))

    config = json.loads(Path(argv[argv.index("--log-config") + 1]).read_text())
    assert config["formatters"]["json"]["()"] == "app.logs.JsonLineFormatter"
    assert config["loggers"]["_granian"]["level"] == "WARNING"
    assert argv[argv.index("--log-level") + 1] == "warning"


def test_several_workers_get_a_metrics_directory_of_their_own() -> None:
    one = environment(settings(gateway_workers=1), {})
    two = environment(settings(gateway_workers=2), {})
    chosen = environment(
        settings(gateway_workers=2, prometheus_multiproc_dir="/srv/metrics"),
        {"PROMETHEUS_MULTIPROC_DIR": "/srv/metrics"},
    )

    assert "PROMETHEUS_MULTIPROC_DIR" not in one
    assert Path(two["PROMETHEUS_MULTIPROC_DIR"]).is_dir()
    assert chosen["PROMETHEUS_MULTIPROC_DIR"] == "/srv/metrics"
