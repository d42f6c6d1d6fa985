"""The processes under test: the gateway and the bare reference app, one pinned worker each."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from app.settings import Settings
from tests.emulator.process import EmulatorProcess
from tests.performance import bare
from tests.performance.runners import Cores
from tests.performance.servers import ServedApp, free_port, server_argv


def gateway_env(
    emulator: EmulatorProcess, store_dir: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """The caller's environment without any gateway setting, then the emulator's and ``extra``.

    Settings inherited from a developer's shell (REDIS_URL, a real ALPACA_DATA_URL ...) would
    change what is measured, so every name `Settings` reads is dropped first.
    """
    settings_names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    env.update(
        LOG_LEVEL="WARNING",
        ALPACA_DATA_URL=emulator.base_url,
        ALPACA_TRADING_URL=emulator.base_url,
        ALPACA_API_KEY_ID=emulator.key_id,
        ALPACA_API_SECRET_KEY=emulator.secret_key,
        UPSTREAM_SOURCE_NAME="emulator",
        # Measures the data path itself; a keyed request adds one cached key check and one
        # quota take on top (anonymous callers' shared quota is off here for the same reason).
        GATEWAY_ANONYMOUS_DATA="true",
        ANONYMOUS_QUOTA_PER_MINUTE="0",
        EMBEDDED_DB_PATH=str(store_dir / "gateway.sqlite3"),
        CLOCK_POLL_INTERVAL_S="0",
    )
    env.update(extra)
    return env


def gateway(
    name: str,
    server: str,
    emulator: EmulatorProcess,
    cores: Cores,
    extra_env: Mapping[str, str] | None = None,
) -> ServedApp:
    port = free_port()
    argv = server_argv(server, "app.main:app", port)
    store_dir = Path(tempfile.mkdtemp(prefix="bench-store-"))
    env = gateway_env(emulator, store_dir, extra_env or {})
    return ServedApp(name, argv, env, cores, port, scratch=store_dir)


def bare_app(
    name: str, server: str, body: bytes, headers: Mapping[str, str], cores: Cores
) -> ServedApp:
    """The bare app, answering with ``body`` and ``headers`` (recorded from the gateway)."""
    port = free_port()
    argv = server_argv(server, "tests.performance.bare:app", port)
    scratch = Path(tempfile.mkdtemp(prefix="bench-bare-"))
    answer = scratch / "answer.json"
    bare.record(answer, body, dict(headers))
    env = {**os.environ, bare.ANSWER_ENV: str(answer)}
    return ServedApp(name, argv, env, cores, port, scratch=scratch)
