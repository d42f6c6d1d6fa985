"""`python -m app.serve`: the gateway on its HTTP server, as `make run` and the container run it.

GATEWAY_SERVER picks the server: granian (the default: in `make bench` it served the gateway's
cached quote at 1.4-1.8x uvicorn's rate on the same core) or uvicorn. Both get the same shape:
GATEWAY_HOST, GATEWAY_PORT, GATEWAY_WORKERS workers, HTTP/1.1, no websockets, no server access
log (the gateway writes its own: route template, status, duration, request id; a server's would
log raw query strings). With several workers, metrics must be merged across them: if
PROMETHEUS_MULTIPROC_DIR is unset, a fresh directory is made for this run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence

from app.settings import Settings, load_settings

TARGET = "app.main:app"
# LOG_LEVEL (loguru's names) in the servers' vocabulary: their own records (start-up, shutdown,
# errors) then reach the gateway's log at the same threshold as everything else.
_SERVER_LEVELS = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "SUCCESS": "info"}


def command(settings: Settings) -> list[str]:
    """The server's argv for these settings (the process replaces itself with it)."""
    host, port = settings.gateway_host, str(settings.gateway_port)
    workers = settings.gateway_workers
    level = _SERVER_LEVELS.get(settings.log_level.upper(), settings.log_level.lower())
    bin_dir = os.path.dirname(sys.executable)
    if settings.gateway_server == "granian":
        return [
            os.path.join(bin_dir, "granian"), "--interface", "asgi", "--http", "1", "--no-ws",
            "--host", host, "--port", port, "--workers", str(workers),
            "--log-level", level, "--no-access-log",
            *(["--log-config", _json_log_config(level)] if settings.log_json else []),
            TARGET,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", TARGET, "--host", host, "--port", port,
        "--workers", str(workers), "--log-level", level, "--no-access-log",
    ]  # fmt: skip


def _json_log_config(level: str) -> str:
    """A logging config file for granian's supervisor, so its own lines (start, stop, a worker
    respawned) are JSON lines too when LOG_JSON is set; the workers log through the app."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    logger = {"handlers": ["console"], "level": level.upper(), "propagate": False}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "app.logs.JsonLineFormatter"}},
        "handlers": {"console": handler},
        "loggers": {"_granian": logger, "granian.access": logger},
    }
    with tempfile.NamedTemporaryFile(
        "w", prefix="gateway-log-", suffix=".json", delete=False
    ) as file:
        json.dump(config, file)
    return file.name


def environment(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    if settings.gateway_workers > 1 and not settings.prometheus_multiproc_dir:
        # Every worker counts into its own files here; any of them merges them on a scrape.
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    return env


def main(argv: Sequence[str] | None = None) -> None:
    if argv:
        raise SystemExit("python -m app.serve takes no arguments; it reads the settings")
    settings = load_settings()
    cmd = command(settings)
    # Replaced by the server (same pid: signals reach it, as when it is started directly).
    os.execve(cmd[0], cmd, environment(settings, dict(os.environ)))  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
