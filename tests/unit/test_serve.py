"""`python -m app.serve`: the server command `make run` and the container start."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from app.serve import command, environment, open_files_needed, raise_open_files_limit
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


def test_granian_bounds_slow_large_and_many_connections() -> None:
    argv = command(
        settings(
            gateway_header_read_timeout_s=2.5,
            gateway_max_header_bytes=20_000,
            gateway_max_connections=300,
        )
    )

    # Milliseconds: the header timeout also closes idle kept-alive connections.
    assert argv[argv.index("--http1-header-read-timeout") + 1] == "2500"
    assert argv[argv.index("--http1-buffer-size") + 1] == "20000"
    assert argv[argv.index("--backpressure") + 1] == "300"
    assert argv[-1] == "app.main:app"  # the options come before the target


def test_uvicorn_gets_its_nearest_limits_and_names_no_server() -> None:
    argv = command(
        settings(
            gateway_server="uvicorn",
            gateway_header_read_timeout_s=2.5,
            gateway_max_header_bytes=20_000,
            gateway_max_connections=300,
            stream_max_message_bytes=300_000,
        )
    )

    # httptools has no head size limit; h11 does.
    assert argv[argv.index("--ws-max-size") + 1] == "300000"
    assert argv[argv.index("--http") + 1] == "h11"
    assert argv[argv.index("--h11-max-incomplete-event-size") + 1] == "20000"
    assert argv[argv.index("--timeout-keep-alive") + 1] == "3"  # whole seconds, rounded up
    assert argv[argv.index("--limit-concurrency") + 1] == "300"
    assert "--no-server-header" in argv


def test_the_defaults_bound_what_the_probe_found_unbounded() -> None:
    defaults = settings()

    assert defaults.gateway_header_read_timeout_s <= 10
    assert defaults.gateway_max_header_bytes <= 64 * 1024
    # Below the usual open-files limits, with room for the worker's own descriptors.
    assert open_files_needed(defaults) <= 4096


def test_a_connection_cap_the_open_files_limit_cannot_hold_refuses_to_start() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.fail("this test needs a finite hard open-files limit (ulimit -Hn)")

    with pytest.raises(SystemExit, match="GATEWAY_MAX_CONNECTIONS"):
        raise_open_files_limit(hard + 1)
    raise_open_files_limit(1)  # already enough: nothing to change, no error
