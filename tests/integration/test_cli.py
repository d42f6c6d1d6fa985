"""`python -m app.cli keys ...` as an operator runs it: a separate process on the gateway's store.

Each run works in tmp_path (so no config/.env is read) on either the embedded SQLite file
(EMBEDDED_DB_PATH) or a PostgreSQL database of its own (DATABASE_URL, CREATE DATABASE gw_<uuid>).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.keys import KeyRing, parse_key
from app.storage import EmbeddedStore, PostgresStore, Store
from tests.integration.test_storage import postgres_server_url, unique_database

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


class Cli:
    """Runs the CLI against one store; `open_store()` opens the same store in this process."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def open_store(self) -> Store:
        if "DATABASE_URL" in self.env:
            return await PostgresStore.open(self.env["DATABASE_URL"])
        return await EmbeddedStore.open(self.env["EMBEDDED_DB_PATH"])


def cli_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "EMBEDDED_DB_PATH")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(values)
    return env


@pytest.fixture
def embedded_cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, cli_env(EMBEDDED_DB_PATH=str(tmp_path / "db" / "gateway.sqlite3")))


@pytest.fixture(params=["embedded", "postgres"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "embedded":
        yield Cli(tmp_path, cli_env(EMBEDDED_DB_PATH=str(tmp_path / "db" / "gateway.sqlite3")))
    else:
        with unique_database(request.getfixturevalue("postgres_server")) as url:
            yield Cli(tmp_path, cli_env(DATABASE_URL=url))


@pytest.fixture(scope="module")
def postgres_server() -> str:
    return postgres_server_url()


def created_key(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) > 1, "create must explain the key before printing it"
    return lines[-1]


async def test_create_prints_the_key_last_and_it_authenticates(cli: Cli) -> None:
    key = created_key(
        cli("keys", "create", "--name", "ci bot", "--scopes", "data:read,trading:read")
    )
    parsed = parse_key(key)
    assert parsed is not None, f"last line is not a key: {key!r}"

    store = await cli.open_store()
    try:
        row = await KeyRing(store).authenticate(key)
    finally:
        await store.close()
    assert row is not None
    assert row.id == parsed[0]
    assert row.name == "ci bot"
    assert row.scopes == ("data:read", "trading:read")


async def test_list_shows_keys_but_never_secrets_or_hashes(cli: Cli) -> None:
    key = created_key(cli("keys", "create", "--name", "dashboard", "--scopes", "data:read"))
    parsed = parse_key(key)
    assert parsed is not None
    key_id, secret = parsed

    listing = cli("keys", "list")
    assert listing.returncode == 0, listing.stderr
    out = listing.stdout + listing.stderr
    assert key_id in out
    assert "dashboard" in out
    assert f"gw_{key_id}" in out
    assert "data:read" in out
    assert secret not in out
    assert key not in out
    assert hashlib.sha256(secret.encode()).hexdigest() not in out


async def test_revoke_stops_the_key_and_unknown_ids_exit_1(cli: Cli) -> None:
    key = created_key(cli("keys", "create", "--name", "old", "--scopes", "trading:write"))
    parsed = parse_key(key)
    assert parsed is not None
    key_id = parsed[0]

    revoked = cli("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert key_id in revoked.stdout

    store = await cli.open_store()
    try:
        assert await KeyRing(store).authenticate(key) is None
    finally:
        await store.close()
    listing = cli("keys", "list")
    (line,) = [line for line in listing.stdout.splitlines() if line.startswith(key_id)]
    assert line.split()[-2] != "-"  # the REVOKED column has a time

    unknown = cli("keys", "revoke", "ffffffffffff")
    assert unknown.returncode == 1
    assert "ffffffffffff" in unknown.stderr


def test_unknown_scope_is_a_usage_error(embedded_cli: Cli) -> None:
    result = embedded_cli("keys", "create", "--name", "x", "--scopes", "data:read,admin")
    assert result.returncode == 2
    assert "unknown scope 'admin'" in result.stderr
    assert "gw_" not in result.stdout


def test_help_describes_the_commands(embedded_cli: Cli) -> None:
    result = embedded_cli("--help")
    assert result.returncode == 0
    assert "keys" in result.stdout
    keys_help = embedded_cli("keys", "--help")
    assert all(action in keys_help.stdout for action in ("create", "list", "revoke"))


def test_unreachable_database_exits_3_without_a_traceback(tmp_path: Path) -> None:
    cli = Cli(tmp_path, cli_env(DATABASE_URL="postgresql://postgres@127.0.0.1:9/nowhere"))
    result = cli("keys", "list")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "unavailable" in result.stderr
