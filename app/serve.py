"""`python -m app.serve`: the gateway on its HTTP server, as `make run` and the container run it.

GATEWAY_SERVER picks the server: granian (the default: in `make bench` it served the gateway's
cached quote at 1.4-1.8x uvicorn's rate on the same core) or uvicorn. Both get the same shape:
GATEWAY_HOST, GATEWAY_PORT, GATEWAY_WORKERS workers, HTTP/1.1 and websockets, no server access
log (the gateway writes its own: route template, status, duration, request id; a server's would
log raw query strings). With several workers, metrics must be merged across them: if
PROMETHEUS_MULTIPROC_DIR is unset, a fresh directory is made for this run.

Hostile clients meet the server first, so its limits come from the settings too: how long a
connection may take to send its headers (GATEWAY_HEADER_READ_TIMEOUT_S; it also closes idle
kept-alive connections), how large they may be (GATEWAY_MAX_HEADER_BYTES) and how many
connections a worker serves at once (GATEWAY_MAX_CONNECTIONS). Neither server names its version
(the gateway writes a bare `server: gateway` on every answer, which both then keep).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
from collections.abc import Sequence

from app.settings import Settings, load_settings

TARGET = "app.main:app"
# LOG_LEVEL (loguru's names) in the servers' vocabulary: their own records (start-up, shutdown,
# errors) then reach the gateway's log at the same threshold as everything else.
_SERVER_LEVELS = {"TRACE": "debug", "DEBUG": "debug", "INFO": "info", "SUCCESS": "info"}
# File descriptors a worker needs besides its clients' connections: Redis and PostgreSQL pools,
# the embedded store, log and metrics files, the listening socket.
_SPARE_OPEN_FILES = 256


def command(settings: Settings) -> list[str]:
    """The server's argv for these settings (the process replaces itself with it)."""
    host, port = settings.gateway_host, str(settings.gateway_port)
    workers = settings.gateway_workers
    level = _SERVER_LEVELS.get(settings.log_level.upper(), settings.log_level.lower())
    bin_dir = os.path.dirname(sys.executable)
    if settings.gateway_server == "granian":
        return [
            os.path.join(bin_dir, "granian"), "--interface", "asgi", "--http", "1",
            "--host", host, "--port", port, "--workers", str(workers),
            "--log-level", level, "--no-access-log",
            *(["--log-config", _json_log_config(level)] if settings.log_json else []),
            *_granian_limits(settings),
            TARGET,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", TARGET, "--host", host, "--port", port,
        "--workers", str(workers), "--log-level", level, "--no-access-log",
        *_uvicorn_limits(settings),
    ]  # fmt: skip


def _granian_limits(settings: Settings) -> list[str]:
    """granian (hyper underneath) times the headers from the connection's opening, or from the
    previous answer, so one timeout bounds slow headers and idle connections alike; its read
    buffer bounds the request head (431 past it); backpressure caps the connections a worker
    accepts (more wait in the listen queue instead of taking a file descriptor each)."""
    timeout_ms = max(1, round(settings.gateway_header_read_timeout_s * 1000))
    return [
        "--http1-header-read-timeout", str(timeout_ms),
        "--http1-buffer-size", str(settings.gateway_max_header_bytes),
        "--backpressure", str(settings.gateway_max_connections),
    ]  # fmt: skip


def _uvicorn_limits(settings: Settings) -> list[str]:
    """uvicorn's nearest equivalents. Its h11 parser is the one with a head size limit
    (httptools has none), so it is chosen here; past the limit it answers 400. It has no timeout
    on a first request's headers: the header timeout bounds only idle kept-alive connections.
    Past the connection cap it answers 503 (not problem+json: the app never sees it). A stream
    client's message past STREAM_MAX_MESSAGE_BYTES is refused (1009) before it is buffered
    whole; granian has no such option, and the app refuses it unread (app/streams/session.py)."""
    return [
        "--http", "h11",
        "--ws-max-size", str(settings.stream_max_message_bytes),
        "--h11-max-incomplete-event-size", str(settings.gateway_max_header_bytes),
        "--timeout-keep-alive", str(math.ceil(settings.gateway_header_read_timeout_s)),
        "--limit-concurrency", str(settings.gateway_max_connections),
        "--no-server-header",
    ]  # fmt: skip


def open_files_needed(settings: Settings) -> int:
    """File descriptors one worker may hold: every connection it serves, and its own."""
    return settings.gateway_max_connections + _SPARE_OPEN_FILES


def raise_open_files_limit(needed: int) -> None:
    """Raise this process's soft open-files limit (inherited by the server and its workers) to
    `needed`; without it a flood of connections fails accept() before the connection cap is
    reached, and then the health check fails too. SystemExit if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"GATEWAY_MAX_CONNECTIONS needs {needed} open files per worker but the hard limit is"
            f" {hard}: lower GATEWAY_MAX_CONNECTIONS or raise the limit (ulimit -Hn)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


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
    raise_open_files_limit(open_files_needed(settings))
    cmd = command(settings)
    # Replaced by the server (same pid: signals reach it, as when it is started directly).
    os.execve(cmd[0], cmd, environment(settings, dict(os.environ)))  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])
