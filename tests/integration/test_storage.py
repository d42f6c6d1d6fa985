"""The store contract, run against both backends: PostgreSQL (asyncpg) and the embedded SQLite file.

PostgreSQL is real: DATABASE_URL (set by `make test`) or postgresql://postgres@127.0.0.1:5432/test.
This module works in its own database (CREATE DATABASE gw_<uuid>, dropped at the end), so the
shared one is never polluted. An unreachable server FAILS the tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from loguru import logger

from app.keys import generate_key, key_prefix, parse_key
from app.storage import (
    ApiKeyExists,
    ApiKeyRow,
    EmbeddedStore,
    ErrorLogEntry,
    ErrorLogQuery,
    ErrorLogRetention,
    ErrorLogWriter,
    OrderAuditRequest,
    PostgresStore,
    Store,
    StoreUnavailable,
    embedded,
    postgres,
)
from app.storage.schema import Dialect, load_migrations
from tests.conftest import PrivatePostgres, free_port

pytestmark = pytest.mark.integration

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("order_audit", "error_logs", "api_keys")


# --- PostgreSQL: a database of our own on the shared server ------------------------------------
async def _admin(server_url: str, statement: str) -> None:
    connection = await asyncpg.connect(server_url, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def postgres_server_url() -> str:
    """The server the suite was given; fails the test with a clear message when unreachable."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    try:
        asyncio.run(_admin(url, "SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.fail(
            f"PostgreSQL is required and not reachable at {url} ({type(exc).__name__}: {exc}). "
            "Run the suite with `make test` (it provides one), or set DATABASE_URL.",
            pytrace=False,
        )
    return url


@contextlib.contextmanager
def unique_database(server_url: str) -> Iterator[str]:
    """A new empty database gw_<uuid> on the server; dropped (even if in use) afterwards.

    Synchronous (its own short event loops): module fixtures outlive the per-test loops.
    """
    name = f"gw_{uuid.uuid4().hex}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def postgres_server() -> str:
    return postgres_server_url()


@pytest.fixture(scope="module")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """This module's own database, shared by its tests (tables are emptied before each)."""
    with unique_database(postgres_server) as url:
        yield url


# --- one fixture, two backends ----------------------------------------------------------------
RawRows = Callable[[str], Awaitable[list[dict[str, Any]]]]
Explain = Callable[[ErrorLogQuery], Awaitable[str]]


@dataclass
class Backend:
    kind: str
    store: Store
    rows: RawRows  # every column of every row of a table, read around the store
    reopen: Callable[[], Awaitable[Store]]  # a second store on the same database
    explain: Explain  # the query plan of recent_error_logs(query)


async def open_backend(kind: str, target: str) -> Backend:
    if kind == "postgres":

        async def open_postgres() -> Store:
            return await PostgresStore.open(target, max_size=4)

        async def pg_rows(table: str) -> list[dict[str, Any]]:
            connection = await asyncpg.connect(target, timeout=5)
            try:
                return [dict(r) for r in await connection.fetch(f"SELECT * FROM {table}")]  # noqa: S608
            finally:
                await connection.close()

        async def pg_explain(query: ErrorLogQuery) -> str:
            statement, params = postgres.select_error_logs(query)
            connection = await asyncpg.connect(target, timeout=5)
            try:
                # A near-empty table is cheapest to scan whole: ask whether an index is usable.
                await connection.execute("SET enable_seqscan = off")
                plan = await connection.fetch(f"EXPLAIN {statement}", *params)
            finally:
                await connection.close()
            return "\n".join(r[0] for r in plan)

        return Backend(kind, await open_postgres(), pg_rows, open_postgres, pg_explain)

    async def open_embedded() -> Store:
        return await EmbeddedStore.open(target)

    async def sqlite_rows(table: str) -> list[dict[str, Any]]:
        connection = sqlite3.connect(target)
        connection.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in connection.execute(f"SELECT * FROM {table}")]  # noqa: S608
        finally:
            connection.close()

    async def sqlite_explain(query: ErrorLogQuery) -> str:
        statement, params = embedded.select_error_logs(query)
        connection = sqlite3.connect(target)
        try:
            plan = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
        finally:
            connection.close()
        return "\n".join(r[-1] for r in plan)

    return Backend(kind, await open_embedded(), sqlite_rows, open_embedded, sqlite_explain)


@pytest.fixture(params=["postgres", "embedded"])
def fresh_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, url or path) of an empty database. Sync, so it runs outside the test's loop."""
    if request.param == "postgres":
        with unique_database(request.getfixturevalue("postgres_server")) as url:
            yield "postgres", url
    else:
        yield "embedded", str(tmp_path / "fresh" / "gateway.sqlite3")


@pytest.fixture(params=["postgres", "embedded"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, url or path) of this module's database for one backend."""
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("postgres_database")
    return "embedded", str(tmp_path / "gateway.sqlite3")


@pytest.fixture
async def fresh(fresh_target: tuple[str, str]) -> AsyncIterator[Backend]:
    """A backend on an empty, unmigrated database."""
    backend = await open_backend(*fresh_target)
    yield backend
    await backend.store.close()


@pytest.fixture
async def backend(target: tuple[str, str]) -> AsyncIterator[Backend]:
    """A migrated backend with empty tables."""
    kind, location = target
    result = await open_backend(kind, location)
    await result.store.migrate()
    if kind == "postgres":
        connection = await asyncpg.connect(location, timeout=5)
        try:
            await connection.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
        finally:
            await connection.close()
    yield result
    await result.store.close()


def audit_request(client_order_id: str = "order-1", **changes: Any) -> OrderAuditRequest:
    values: dict[str, Any] = {
        "client_order_id": client_order_id,
        "request_body": {"symbol": "AAPL", "qty": "1.5", "side": "buy", "limit_price": 101.25},
        "body_hash": "b" * 64,
        "request_id": "req-1",
        "api_key_id": "0123456789ab",
    }
    values.update(changes)
    return OrderAuditRequest(**values)


def key_row(key_id: str, key_hash: str = "h" * 64, **changes: Any) -> ApiKeyRow:
    values: dict[str, Any] = {
        "id": key_id,
        "name": f"key {key_id}",
        "key_prefix": key_prefix(key_id),
        "key_hash": key_hash,
        "scopes": ("data:read", "trading:read"),
        "created_at": datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
    }
    values.update(changes)
    return ApiKeyRow(**values)


# --- migrations -------------------------------------------------------------------------------
async def test_migrations_apply_once_and_are_recorded(fresh: Backend) -> None:
    expected = load_migrations("postgres" if fresh.kind == "postgres" else "sqlite")

    assert await fresh.store.migrate() == [m.version for m in expected]
    assert await fresh.store.migrate() == []  # a second start changes nothing

    recorded = sorted(await fresh.rows("schema_migrations"), key=lambda r: r["version"])
    assert [(r["version"], r["name"]) for r in recorded] == [(m.version, m.name) for m in expected]
    assert all(r["applied_at"] for r in recorded)
    for table in TABLES:
        assert await fresh.rows(table) == []


async def test_migrations_race_between_two_stores(fresh: Backend) -> None:
    other = await fresh.reopen()
    try:
        first, second = await asyncio.gather(fresh.store.migrate(), other.migrate())
    finally:
        await other.close()
    dialect: Dialect = "postgres" if fresh.kind == "postgres" else "sqlite"
    assert sorted(first + second) == [m.version for m in load_migrations(dialect)]


def test_postgres_and_sqlite_migrations_match() -> None:
    postgres, sqlite = load_migrations("postgres"), load_migrations("sqlite")
    assert [(m.version, m.name) for m in postgres] == [(m.version, m.name) for m in sqlite]


# --- order audit ------------------------------------------------------------------------------
async def test_audit_row_is_pending_then_completed(backend: Backend) -> None:
    store = backend.store
    audit_id = await store.insert_order_audit(audit_request())

    (pending,) = await store.order_audits("order-1")
    assert pending.id == audit_id
    assert pending.status == "pending"
    assert pending.request_body == {
        "symbol": "AAPL",
        "qty": "1.5",
        "side": "buy",
        "limit_price": 101.25,
    }
    assert (pending.request_id, pending.api_key_id) == ("req-1", "0123456789ab")
    assert pending.alpaca_order is None
    assert pending.created_at.tzinfo is not None

    order = {"id": "904837e3", "client_order_id": "order-1", "qty": "1.5", "status": "accepted"}
    await store.complete_order_audit(
        audit_id, status="submitted", alpaca_order=order, error_code=None, error_detail=None
    )
    (done,) = await store.order_audits("order-1")
    assert done.status == "submitted"
    assert done.alpaca_order == order
    assert done.updated_at >= done.created_at
    assert done.created_at == pending.created_at


async def test_audit_rows_come_back_oldest_first_per_client_order_id(backend: Backend) -> None:
    store = backend.store
    first = await store.insert_order_audit(audit_request("order-1", request_id="a"))
    await store.insert_order_audit(audit_request("order-2", request_id="b"))
    third = await store.insert_order_audit(audit_request("order-1", request_id="c"))
    await store.complete_order_audit(
        first,
        status="rejected",
        alpaca_order=None,
        error_code="ORDER_REJECTED",
        error_detail="insufficient buying power",
    )

    rows = await store.order_audits("order-1")
    assert [(r.id, r.request_id) for r in rows] == [(first, "a"), (third, "c")]
    assert (rows[0].status, rows[0].error_code, rows[0].error_detail) == (
        "rejected",
        "ORDER_REJECTED",
        "insufficient buying power",
    )
    assert await store.order_audits("never-sent") == []


async def test_audit_is_durable_across_a_new_connection(backend: Backend) -> None:
    audit_id = await backend.store.insert_order_audit(audit_request())
    other = await backend.reopen()
    try:
        rows = await other.order_audits("order-1")
    finally:
        await other.close()
    assert [r.id for r in rows] == [audit_id]


async def test_completing_an_unknown_audit_or_status_is_an_error(backend: Backend) -> None:
    with pytest.raises(LookupError):
        await backend.store.complete_order_audit(
            999, status="failed", alpaca_order=None, error_code=None, error_detail=None
        )
    audit_id = await backend.store.insert_order_audit(audit_request())
    with pytest.raises(ValueError, match="unknown order audit status"):
        await backend.store.complete_order_audit(
            audit_id,
            status="lost",  # type: ignore[arg-type]
            alpaca_order=None,
            error_code=None,
            error_detail=None,
        )


# --- error log --------------------------------------------------------------------------------
async def test_error_logs_are_inserted_as_one_batch(backend: Backend) -> None:
    entries = [
        ErrorLogEntry(
            code="UPSTREAM_TIMEOUT",
            message=f"timeout {i}",
            request_id=f"req-{i}",
            context={"upstream": "data", "attempt": i},
        )
        for i in range(5)
    ]
    await backend.store.insert_error_logs(entries)
    await backend.store.insert_error_logs([])

    rows = sorted(await backend.rows("error_logs"), key=lambda r: r["id"])
    assert [(r["code"], r["message"], r["request_id"]) for r in rows] == [
        ("UPSTREAM_TIMEOUT", f"timeout {i}", f"req-{i}") for i in range(5)
    ]
    assert '"attempt":4' in rows[4]["context"]


T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def failure(
    i: int, code: str = "UPSTREAM_TIMEOUT", upstream: str | None = "data", **changes: Any
) -> ErrorLogEntry:
    """What problems.py records for a failed request; created i seconds after T0."""
    values: dict[str, Any] = {
        "code": code,
        "message": f"failure {i}",
        "request_id": f"req-{i}",
        "context": {"path": "/v1/stocks/AAPL/quote", "upstream": upstream, "symbol": "AAPL"},
        "created_at": T0 + timedelta(seconds=i),
    }
    values.update(changes)
    return ErrorLogEntry(**values)


async def test_recent_error_logs_are_newest_first_by_time_not_by_id(backend: Backend) -> None:
    # Written out of time order (two gateways' batches interleave): time decides.
    await backend.store.insert_error_logs([failure(i) for i in (2, 0, 4, 1, 3)])

    rows = await backend.store.recent_error_logs(ErrorLogQuery(limit=3))
    assert [r.message for r in rows] == ["failure 4", "failure 3", "failure 2"]
    newest = rows[0]
    assert (newest.code, newest.request_id, newest.created_at) == (
        "UPSTREAM_TIMEOUT",
        "req-4",
        T0 + timedelta(seconds=4),
    )
    assert newest.context == {
        "path": "/v1/stocks/AAPL/quote",
        "upstream": "data",
        "symbol": "AAPL",
    }
    assert (newest.upstream, newest.symbol) == ("data", "AAPL")


async def test_recent_error_logs_filters_each_narrow_the_rows(backend: Backend) -> None:
    await backend.store.insert_error_logs(
        [
            failure(0, "UPSTREAM_TIMEOUT", "data"),
            failure(1, "INTERNAL", None),
            failure(2, "UPSTREAM_UNAVAILABLE", "trading"),
            failure(3, "UPSTREAM_TIMEOUT", "options"),
            failure(4, "UPSTREAM_UNAVAILABLE", "data"),
        ]
    )

    async def ids(**filters: Any) -> list[int]:
        rows = await backend.store.recent_error_logs(ErrorLogQuery(**filters))
        return [int(r.message.split()[-1]) for r in rows]

    assert await ids() == [4, 3, 2, 1, 0]
    assert await ids(codes=("UPSTREAM_TIMEOUT",)) == [3, 0]
    assert await ids(codes=("INTERNAL", "UPSTREAM_UNAVAILABLE")) == [4, 2, 1]
    assert await ids(upstream="data") == [4, 0]
    assert await ids(since=T0 + timedelta(seconds=3)) == [4, 3]  # at or after
    assert await ids(codes=("UPSTREAM_UNAVAILABLE",), upstream="data") == [4]
    assert await ids(upstream="trading", since=T0 + timedelta(seconds=3)) == []


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (ErrorLogQuery(), "error_logs_created_at_idx"),
        (ErrorLogQuery(since=T0), "error_logs_created_at_idx"),
        (ErrorLogQuery(codes=("INTERNAL",)), "error_logs_code_created_at_idx"),
        (ErrorLogQuery(upstream="trading"), "error_logs_upstream_created_at_idx"),
    ],
)
async def test_error_log_queries_can_use_their_index(
    backend: Backend, query: ErrorLogQuery, index: str
) -> None:
    assert index in await backend.explain(query)


async def test_prune_deletes_expired_rows_then_the_oldest_beyond_the_cap(backend: Backend) -> None:
    store = backend.store
    await store.insert_error_logs([failure(i) for i in range(30)])

    # Rows 0-4 are past the age limit; of the other 25, the newest 10 are kept.
    prune = {"keep_rows": 10, "older_than": T0 + timedelta(seconds=5), "limit": 8}
    assert [await store.prune_error_logs(**prune) for _ in range(4)] == [8, 8, 4, 0]

    rows = await store.recent_error_logs(ErrorLogQuery(limit=100))
    assert [r.message for r in rows] == [f"failure {i}" for i in range(29, 19, -1)]


async def test_prune_by_age_alone_keeps_every_recent_row(backend: Backend) -> None:
    store = backend.store
    await store.insert_error_logs([failure(i) for i in range(6)])

    deleted = await store.prune_error_logs(
        keep_rows=100, older_than=T0 + timedelta(seconds=2), limit=100
    )
    assert deleted == 2
    assert len(await backend.rows("error_logs")) == 4


# --- API keys ---------------------------------------------------------------------------------
async def test_api_keys_insert_get_list(backend: Backend) -> None:
    store = backend.store
    first = key_row("aaaaaaaaaaaa")
    second = key_row(
        "bbbbbbbbbbbb", scopes=("trading:write",), created_at=first.created_at + timedelta(1)
    )
    await store.insert_api_key(second)
    await store.insert_api_key(first)

    assert await store.get_api_key("aaaaaaaaaaaa") == first
    assert await store.get_api_key("cccccccccccc") is None
    assert await store.list_api_keys() == [first, second]
    with pytest.raises(ApiKeyExists):
        await store.insert_api_key(first)


async def test_revoke_keeps_the_first_time_and_reports_unknown_ids(backend: Backend) -> None:
    store = backend.store
    await store.insert_api_key(key_row("aaaaaaaaaaaa"))
    when = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)

    assert await store.revoke_api_key("aaaaaaaaaaaa", when) is True
    assert await store.revoke_api_key("aaaaaaaaaaaa") is True  # already revoked: still known
    assert await store.revoke_api_key("cccccccccccc") is False

    row = await store.get_api_key("aaaaaaaaaaaa")
    assert row is not None
    assert row.revoked
    assert row.revoked_at == when


async def test_touch_moves_last_used_forward_only(backend: Backend) -> None:
    store = backend.store
    await store.insert_api_key(key_row("aaaaaaaaaaaa"))
    later = datetime(2026, 11, 24, 10, 0, 0, 500_000, tzinfo=UTC)

    await store.touch_api_key("aaaaaaaaaaaa", later)
    await store.touch_api_key("aaaaaaaaaaaa", later - timedelta(minutes=5))
    await store.touch_api_key("cccccccccccc", later)  # unknown: nothing to do

    row = await store.get_api_key("aaaaaaaaaaaa")
    assert row is not None
    assert row.last_used_at == later


async def test_only_the_hash_of_a_key_is_stored(backend: Backend) -> None:
    key, key_id, key_hash = generate_key()
    parsed = parse_key(key)
    assert parsed is not None
    secret = parsed[1]
    await backend.store.insert_api_key(key_row(key_id, key_hash))
    await backend.store.revoke_api_key(key_id)
    await backend.store.touch_api_key(key_id, datetime.now(UTC))

    for table in TABLES:
        for row in await backend.rows(table):
            for column, value in row.items():
                text = str(value)
                assert secret not in text, f"{table}.{column} holds the secret"
                assert key not in text, f"{table}.{column} holds the key"
    (row,) = await backend.rows("api_keys")
    assert row["key_hash"] == key_hash
    assert row["id"] == key_id


# --- failure: StoreUnavailable, fast ----------------------------------------------------------
async def test_a_closed_store_raises_store_unavailable(backend: Backend) -> None:
    await backend.store.close()
    with pytest.raises(StoreUnavailable):
        await backend.store.insert_order_audit(audit_request())
    assert await backend.store.ping() is False


async def test_postgres_going_away_raises_store_unavailable_fast(
    private_postgres: PrivatePostgres,
) -> None:
    store = await PostgresStore.open(private_postgres.url)
    try:
        await store.migrate()
        await store.insert_order_audit(audit_request())

        private_postgres.stop_immediately()
        for _ in range(2):  # the pooled connection is dead, then the server refuses new ones
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.insert_order_audit(audit_request())
            assert time.monotonic() - started < 2.0
        assert await store.ping() is False
    finally:
        await store.close()


async def test_postgres_unreachable_at_open_raises_store_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await PostgresStore.open(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert time.monotonic() - started < 2.0


async def test_locked_embedded_database_raises_store_unavailable_fast(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    store = await EmbeddedStore.open(path, busy_timeout_s=0.2)
    await store.migrate()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.insert_order_audit(audit_request())
        assert time.monotonic() - started < 2.0
        holder.execute("ROLLBACK")
        assert await store.insert_order_audit(audit_request()) > 0  # recovers once released
    finally:
        holder.close()
        await store.close()


async def test_embedded_store_creates_its_directory(tmp_path: Path) -> None:
    store = await EmbeddedStore.open(tmp_path / "a" / "b" / "gateway.sqlite3")
    try:
        await store.migrate()
        assert await store.ping() is True
    finally:
        await store.close()
    journal_mode = sqlite3.connect(tmp_path / "a" / "b" / "gateway.sqlite3")
    try:
        assert journal_mode.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        journal_mode.close()


# --- the background error-log writer ----------------------------------------------------------
def entry(i: int) -> ErrorLogEntry:
    return ErrorLogEntry(code="INTERNAL", message=f"failure {i}", request_id=f"req-{i}")


async def test_writer_lands_every_entry_in_batches(backend: Backend) -> None:
    drops: list[None] = []
    writer = ErrorLogWriter(backend.store, batch=10, on_drop=lambda: drops.append(None))
    writer.start()
    for i in range(25):
        writer.submit(entry(i))
    await writer.aclose()

    rows = await backend.rows("error_logs")
    assert sorted(r["message"] for r in rows) == sorted(f"failure {i}" for i in range(25))
    assert drops == []


async def test_writer_overflow_drops_and_counts_without_blocking(backend: Backend) -> None:
    drops: list[None] = []
    writer = ErrorLogWriter(backend.store, max_queue=3, on_drop=lambda: drops.append(None))
    started = time.monotonic()
    for i in range(10):  # not started yet: nothing drains the queue
        writer.submit(entry(i))
    assert time.monotonic() - started < 0.05
    assert len(drops) == 7
    assert writer.pending == 3

    writer.start()
    await writer.aclose()
    assert len(await backend.rows("error_logs")) == 3
    writer.submit(entry(99))  # after close: counted, not queued
    assert len(drops) == 8


async def test_writer_drops_and_logs_once_while_the_store_is_down(backend: Backend) -> None:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING", format="{message}")
    drops: list[None] = []
    await backend.store.close()  # every insert now raises StoreUnavailable
    writer = ErrorLogWriter(backend.store, batch=2, on_drop=lambda: drops.append(None))
    writer.start()
    try:
        for i in range(5):
            writer.submit(entry(i))
            await asyncio.sleep(0)
        await writer.aclose()
    finally:
        logger.remove(sink)
    assert len(drops) == 5
    assert len([m for m in messages if "error log not recorded" in m]) == 1


async def test_writer_keeps_the_table_within_max_rows(backend: Backend) -> None:
    """One client sending garbage fast must not fill the disk through error_logs."""
    retention = ErrorLogRetention(
        max_rows=20, max_age_s=86_400, check_every_rows=5, delete_chunk_rows=10
    )
    writer = ErrorLogWriter(backend.store, batch=5, on_drop=lambda: None, retention=retention)
    writer.start()
    most_rows = 0
    for i in range(150):  # 7.5 times the cap
        writer.submit(entry(i))
        if i % 10 == 9:
            await asyncio.sleep(0.01)  # let the writer keep up, as it does between requests
            most_rows = max(most_rows, len(await backend.rows("error_logs")))
    await writer.aclose()

    rows = await backend.rows("error_logs")
    # Between checks the table may pass the cap by about check_every_rows (plus one batch).
    assert most_rows <= 20 + 5 + 5
    assert sorted(r["message"] for r in rows) == sorted(f"failure {i}" for i in range(130, 150))


async def test_writer_refuses_a_retention_that_could_never_catch_up(backend: Backend) -> None:
    retention = ErrorLogRetention(max_rows=100, max_age_s=60, delete_chunk_rows=100)
    with pytest.raises(ValueError, match="larger than batch"):
        ErrorLogWriter(backend.store, batch=100, on_drop=lambda: None, retention=retention)


async def test_writer_deletes_expired_rows_even_when_nothing_fails(backend: Backend) -> None:
    now = datetime.now(UTC)
    await backend.store.insert_error_logs(
        [entry(i) for i in range(3)]
        + [
            ErrorLogEntry(code="INTERNAL", message=f"old {i}", created_at=now - timedelta(days=8))
            for i in range(4)
        ]
    )
    retention = ErrorLogRetention(max_rows=100, max_age_s=7 * 86_400, check_interval_s=0.05)
    writer = ErrorLogWriter(backend.store, on_drop=lambda: None, retention=retention)
    writer.start()
    try:
        for _ in range(100):  # no entry is submitted: only the timer can trigger the check
            if len(await backend.rows("error_logs")) == 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await writer.aclose()
    rows = await backend.rows("error_logs")
    assert sorted(r["message"] for r in rows) == ["failure 0", "failure 1", "failure 2"]
