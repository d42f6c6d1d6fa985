"""`python -m app.cli errors` as an operator runs it: a separate process reading error_logs.

Rows are written the way the gateway writes them (ErrorLogWriter -> Store.insert_error_logs, with
the context problems.py records), on the embedded SQLite file and on a PostgreSQL database of
their own. Every filter case leaves out some rows, so a filter that was ignored fails its case.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.storage import ErrorLogEntry, ErrorLogWriter
from tests.conftest import GatewayFactory
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.integration.test_cli import Cli, cli_env
from tests.integration.test_storage import postgres_server_url, unique_database
from tests.samples import QUOTE

pytestmark = pytest.mark.integration

JSON_FIELDS = {"id", "created_at", "code", "message", "request_id", "context"}


@pytest.fixture(scope="module")
def postgres_server() -> str:
    return postgres_server_url()


@pytest.fixture(params=["embedded", "postgres"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "embedded":
        yield Cli(tmp_path, cli_env(EMBEDDED_DB_PATH=str(tmp_path / "db" / "gateway.sqlite3")))
    else:
        with unique_database(request.getfixturevalue("postgres_server")) as url:
            yield Cli(tmp_path, cli_env(DATABASE_URL=url))


@pytest.fixture
def embedded_cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path, cli_env(EMBEDDED_DB_PATH=str(tmp_path / "db" / "gateway.sqlite3")))


def failure(
    request_id: str,
    code: str,
    upstream: str | None,
    ago: timedelta,
    symbol: str | None = "AAPL",
    message: str | None = None,
) -> ErrorLogEntry:
    """What problems.py records for a failed request, `ago` before now."""
    return ErrorLogEntry(
        code=code,
        message=message or f"{code.lower()} for {request_id}",
        request_id=request_id,
        context={"path": f"/v1/stocks/{symbol}/quote", "upstream": upstream, "symbol": symbol},
        created_at=datetime.now(UTC) - ago,
    )


async def record(cli: Cli, entries: list[ErrorLogEntry]) -> None:
    """Write through the gateway's own path: the background writer and the store's insert."""
    store = await cli.open_store()
    drops: list[None] = []
    try:
        await store.migrate()
        writer = ErrorLogWriter(store, on_drop=lambda: drops.append(None))
        writer.start()
        for entry in entries:
            writer.submit(entry)
        await writer.aclose()
    finally:
        await store.close()
    assert drops == []


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --- what is shown ----------------------------------------------------------------------------
async def test_errors_are_a_table_newest_first(cli: Cli) -> None:
    await record(
        cli,
        [
            failure("req-old", "UPSTREAM_TIMEOUT", "data", timedelta(hours=2)),
            failure("req-new", "UPSTREAM_UNAVAILABLE", "trading", timedelta(minutes=1), None),
            failure("req-mid", "INTERNAL", None, timedelta(minutes=30), None),
        ],
    )

    result = cli("errors")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["TIME", "CODE", "UPSTREAM", "SYMBOL", "REQUEST", "ID", "MESSAGE"]
    assert [line.split()[4] for line in lines] == ["req-new", "req-mid", "req-old"]
    assert lines[0].split()[1:4] == ["UPSTREAM_UNAVAILABLE", "trading", "-"]
    assert lines[2].split()[1:4] == ["UPSTREAM_TIMEOUT", "data", "AAPL"]
    assert lines[2].endswith("upstream_timeout for req-old")
    assert lines[0].split()[0].endswith("Z")  # UTC, said so


async def test_json_lines_are_the_stored_rows_and_nothing_else(cli: Cli) -> None:
    entry = failure("req-1", "UPSTREAM_BAD_RESPONSE", "options", timedelta(minutes=3), "SPY")
    await record(cli, [entry])

    (row,) = json_lines(cli("errors", "--json"))
    assert set(row) == JSON_FIELDS
    assert (row["code"], row["message"], row["request_id"]) == (
        entry.code,
        entry.message,
        entry.request_id,
    )
    assert row["context"] == entry.context
    assert datetime.fromisoformat(row["created_at"]) == entry.created_at
    assert row["created_at"].endswith("Z")


async def test_nothing_recorded_is_said_plainly(cli: Cli) -> None:
    table = cli("errors")
    assert table.returncode == 0, table.stderr
    assert table.stdout == "No recorded failures match.\n"
    assert json_lines(cli("errors", "--json")) == []


def test_client_text_cannot_drive_the_terminal(embedded_cli: Cli) -> None:
    hostile = "bad \x1b[2J\x1b]0;owned\x07 \u202eflipped\nnext line " + "x" * 300
    asyncio.run(
        record(
            embedded_cli,
            [failure("req-1", "INTERNAL", None, timedelta(0), "A\x1bB", message=hostile)],
        )
    )

    table = embedded_cli("errors")
    assert table.returncode == 0, table.stderr
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in table.stdout
    (line,) = table.stdout.splitlines()[1:]  # the newline in the message is escaped too
    assert "bad \\x1b[2J" in line
    assert "A\\x1bB" in line
    assert line.endswith("...")  # the table truncates long messages ...
    assert len(line) < 250
    (row,) = json_lines(embedded_cli("errors", "--json"))
    assert embedded_cli("errors", "--json").stdout.isascii()
    assert row["message"] == hostile  # ... --json keeps the exact stored text


# --- filters ----------------------------------------------------------------------------------
# Six failures, oldest first; each case names the request ids it must show, newest first.
FAILURES = [
    ("r1", "UPSTREAM_TIMEOUT", "data", timedelta(hours=3)),
    ("r2", "UPSTREAM_UNAVAILABLE", "trading", timedelta(minutes=90)),
    ("r3", "INTERNAL", None, timedelta(minutes=40)),
    ("r4", "UPSTREAM_BAD_RESPONSE", "options", timedelta(minutes=10)),
    ("r5", "UPSTREAM_TIMEOUT", "trading", timedelta(minutes=5)),
    ("r6", "UPSTREAM_RATE_LIMITED", "data", timedelta(minutes=1)),
]


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        ((), ["r6", "r5", "r4", "r3", "r2", "r1"]),
        (("--code", "UPSTREAM_TIMEOUT"), ["r5", "r1"]),
        (("--code", "UPSTREAM_TIMEOUT", "--code", "INTERNAL"), ["r5", "r3", "r1"]),
        (("--code", "upstream_timeout,internal"), ["r5", "r3", "r1"]),
        (("--upstream", "trading"), ["r5", "r2"]),
        (("--since", "30m"), ["r6", "r5", "r4"]),
        (("--since", "2h"), ["r6", "r5", "r4", "r3", "r2"]),
        (("--limit", "2"), ["r6", "r5"]),
        (("--code", "UPSTREAM_TIMEOUT", "--upstream", "trading", "--since", "1h"), ["r5"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
async def test_each_filter_narrows_the_rows(
    cli: Cli, args: tuple[str, ...], shown: list[str]
) -> None:
    await record(cli, [failure(*values) for values in FAILURES])
    assert [row["request_id"] for row in json_lines(cli("errors", "--json", *args))] == shown


async def test_since_takes_an_rfc3339_time_with_any_offset(cli: Cli) -> None:
    await record(cli, [failure(*values) for values in FAILURES])
    cutoff = datetime.now(UTC) - timedelta(minutes=60)
    as_utc = cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    naive = cutoff.replace(tzinfo=None).isoformat(timespec="seconds")
    plus_two = (cutoff + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")

    for since in (as_utc, as_utc.lower(), plus_two):
        rows = json_lines(cli("errors", "--json", "--since", since))
        assert [row["request_id"] for row in rows] == ["r6", "r5", "r4", "r3"], since
    assert cli("errors", "--since", naive).returncode == 2  # no offset: ambiguous


async def test_a_full_page_says_more_may_match(cli: Cli) -> None:
    await record(cli, [failure(*values) for values in FAILURES])
    assert "more may match" in cli("errors", "--limit", "6").stderr
    assert "more may match" not in cli("errors", "--limit", "7").stderr


# --- usage and failures -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--code", "NOT_A_CODE"), "unknown error code 'NOT_A_CODE'"),
        (("--code", "INTERNAL,BOGUS"), "unknown error code 'BOGUS'"),
        (("--code", ","), "an error code is required"),
        (("--upstream", "crypto"), "invalid choice: 'crypto'"),
        (("--since", "yesterday"), "RFC 3339"),
        (("--since", "15x"), "RFC 3339"),
        (("--limit", "0"), "1 to 10000"),
        (("--limit", "10001"), "1 to 10000"),
        (("--limit", "ten"), "1 to 10000"),
    ],
)
def test_bad_filters_are_usage_errors(
    embedded_cli: Cli, args: tuple[str, ...], complaint: str
) -> None:
    result = embedded_cli("errors", *args)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert result.stdout == ""


def test_help_describes_the_errors_command(embedded_cli: Cli) -> None:
    result = embedded_cli("errors", "--help")
    assert result.returncode == 0
    for option in ("--code", "--upstream", "--since", "--limit", "--json"):
        assert option in result.stdout


def test_unreachable_database_exits_3_without_a_traceback(tmp_path: Path) -> None:
    cli = Cli(tmp_path, cli_env(DATABASE_URL="postgresql://postgres@127.0.0.1:9/nowhere"))
    result = cli("errors", "--json")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "unavailable" in result.stderr
    assert result.stdout == ""


# --- end to end: what a running gateway recorded ----------------------------------------------
async def test_a_gateway_failure_is_listed_without_credentials(
    emulator: EmulatorControl, emulator_process: EmulatorProcess, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway()
    await emulator.set_quote("AAPL", QUOTE)
    await emulator.add_fault("/v2/stocks/quotes/latest", "status_500", count=1)
    failed = await gateway.get("/v1/stocks/AAPL/quote", headers={"X-Request-ID": "cli-e2e-1"})
    assert failed.json()["code"] == "UPSTREAM_UNAVAILABLE"
    path = gateway.state.settings.embedded_db_path
    for _ in range(100):  # the writer records in the background
        with sqlite3.connect(path) as connection:
            if connection.execute("SELECT count(*) FROM error_logs").fetchone() != (0,):
                break
        await asyncio.sleep(0.02)

    cli = Cli(Path(path).parent, cli_env(EMBEDDED_DB_PATH=path))
    table = cli("errors", "--upstream", "data")
    (row,) = json_lines(cli("errors", "--json"))
    assert row["request_id"] == "cli-e2e-1"
    assert (row["code"], row["context"]["upstream"], row["context"]["symbol"]) == (
        "UPSTREAM_UNAVAILABLE",
        "data",
        "AAPL",
    )
    assert "cli-e2e-1" in table.stdout
    for output in (table.stdout + table.stderr, json.dumps(row)):
        assert emulator_process.secret_key not in output
        assert emulator_process.key_id not in output
