"""`EmbeddedStore`: the `Store` on one stdlib sqlite3 connection, for a gateway without PostgreSQL.

sqlite3 blocks, so every call runs in a worker thread (`asyncio.to_thread`) holding a
threading.Lock: one statement sequence at a time on the one connection. The lock is taken in the
worker thread, so a cancelled caller cannot let a second call in while the first still runs.
WAL mode lets the CLI (another process) read and write while the gateway runs; `synchronous=FULL`
makes a committed audit row survive power loss. A locked or failing database file raises
`StoreUnavailable` after at most `busy_timeout_s`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from app.storage.records import (
    ApiKeyRow,
    AuditStatus,
    ErrorLogEntry,
    ErrorLogQuery,
    ErrorLogRow,
    OrderAuditRequest,
    OrderAuditRow,
    utc_now,
)
from app.storage.schema import load_migrations
from app.storage.store import (
    ApiKeyExists,
    StoreUnavailable,
    check_settled,
    check_status,
    dump_json,
    load_json,
)

T = TypeVar("T")

# sqlite3.OperationalError covers "database is locked", "unable to open database file",
# "disk I/O error", "database or disk is full" and "attempt to write a readonly database".
_UNAVAILABLE = (sqlite3.OperationalError, OSError)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"embedded database unavailable: {type(exc).__name__}: {exc}")


def _text(when: datetime) -> str:
    # One fixed-width format, so text comparison is time comparison (touch_api_key relies on it).
    if when.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # The connection is in autocommit mode (isolation_level=None): transactions are explicit.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        _rollback(connection)
        raise
    connection.execute("COMMIT")


def _rollback(connection: sqlite3.Connection) -> None:
    # After a failed COMMIT or a lost file the transaction may already be gone.
    if connection.in_transaction:
        connection.execute("ROLLBACK")


class EmbeddedStore:
    dependency = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection: sqlite3.Connection | None = connection
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_s: float = 1.0) -> EmbeddedStore:
        """Open (creating it and its directory if needed) the database file at `path`."""
        return cls(await asyncio.to_thread(_connect, Path(path), busy_timeout_s))

    async def _call(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, operation)

    def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            connection = self._connection
            if connection is None:
                raise StoreUnavailable("embedded database is closed")
            try:
                return operation(connection)
            except _UNAVAILABLE as exc:
                raise _unavailable(exc) from exc

    def watch_revocations(self, on_revoked: Callable[[str | None], None]) -> None:
        """SQLite cannot notify another process: a CLI revocation takes effect when the key's
        cached lookup expires (KEY_CACHE_TTL_S)."""

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

        await asyncio.to_thread(close)

    async def ping(self) -> bool:
        try:
            await self._call(lambda c: c.execute("SELECT 1").fetchone())
        except StoreUnavailable:
            return False
        return True

    async def migrate(self) -> list[int]:
        return await self._call(_migrate)

    # --- order audit --------------------------------------------------------------------------
    async def insert_order_audit(self, request: OrderAuditRequest) -> int:
        now = _text(utc_now())
        body = dump_json(request.request_body)

        def insert(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO order_audit (client_order_id, request_id, api_key_id, request_body,"
                " body_hash, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (
                    request.client_order_id,
                    request.request_id,
                    request.api_key_id,
                    body,
                    request.body_hash,
                    now,
                    now,
                ),
            )
            if cursor.lastrowid is None:
                raise RuntimeError("sqlite3 returned no row id for an INSERT")
            return cursor.lastrowid

        return await self._call(insert)

    async def complete_order_audit(
        self,
        audit_id: int,
        *,
        status: AuditStatus,
        alpaca_order: dict[str, Any] | None,
        error_code: str | None,
        error_detail: str | None,
    ) -> None:
        check_status(status)
        order = None if alpaca_order is None else dump_json(alpaca_order)
        params = (status, order, error_code, error_detail, _text(utc_now()), audit_id)
        cursor = await self._call(
            lambda c: c.execute(
                "UPDATE order_audit SET status = ?, alpaca_order = ?, error_code = ?,"
                " error_detail = ?, updated_at = ? WHERE id = ?",
                params,
            )
        )
        if cursor.rowcount == 0:
            raise LookupError(f"no order audit row {audit_id}")

    async def order_audits(self, client_order_id: str) -> list[OrderAuditRow]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT * FROM order_audit WHERE client_order_id = ? ORDER BY id",
                (client_order_id,),
            ).fetchall()
        )
        return [_audit_row(row) for row in rows]

    async def unsettled_order_audits(
        self, *, created_before: datetime, limit: int
    ) -> list[OrderAuditRow]:
        params = (_text(created_before), limit)
        rows = await self._call(lambda c: c.execute(UNSETTLED_ROWS, params).fetchall())
        return [_audit_row(row) for row in rows]

    async def count_unsettled_order_audits(self, *, created_before: datetime) -> int:
        params = (_text(created_before),)
        (count,) = await self._call(
            lambda c: c.execute(
                "SELECT count(*) FROM order_audit WHERE status IN ('pending', 'unknown')"
                " AND created_at < ?",
                params,
            ).fetchone()
        )
        return int(count)

    async def settle_order_audit(
        self,
        audit_id: int,
        *,
        status: AuditStatus,
        alpaca_order: dict[str, Any] | None,
        error_code: str | None,
        error_detail: str | None,
    ) -> bool:
        check_settled(status)
        order = None if alpaca_order is None else dump_json(alpaca_order)
        params = (status, order, error_code, error_detail, _text(utc_now()), audit_id)
        # One conditional statement: of two processes settling the row, one updates it.
        cursor = await self._call(
            lambda c: c.execute(
                "UPDATE order_audit SET status = ?, alpaca_order = ?, error_code = ?,"
                " error_detail = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('pending', 'unknown')",
                params,
            )
        )
        return bool(cursor.rowcount > 0)

    # --- error log ----------------------------------------------------------------------------
    async def insert_error_logs(self, entries: Sequence[ErrorLogEntry]) -> None:
        if not entries:
            return
        params = [
            (e.request_id, e.code, e.message, dump_json(e.context), _text(e.created_at))
            for e in entries
        ]

        def insert(connection: sqlite3.Connection) -> None:
            with _transaction(connection):
                connection.executemany(
                    "INSERT INTO error_logs (request_id, code, message, context, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    params,
                )

        await self._call(insert)

    async def recent_error_logs(self, query: ErrorLogQuery) -> list[ErrorLogRow]:
        statement, params = select_error_logs(query)
        rows = await self._call(lambda c: c.execute(statement, params).fetchall())
        return [_error_row(row) for row in rows]

    async def prune_error_logs(self, *, keep_rows: int, older_than: datetime, limit: int) -> int:
        cutoff = _text(older_than)

        def prune(connection: sqlite3.Connection) -> int:
            with _transaction(connection):
                deleted = connection.execute(_PRUNE_OLD_ERROR_LOGS, (cutoff, limit)).rowcount
                if deleted < limit:
                    excess = (keep_rows, limit - deleted)
                    deleted += connection.execute(_PRUNE_EXCESS_ERROR_LOGS, excess).rowcount
            return deleted

        return await self._call(prune)

    # --- API keys -----------------------------------------------------------------------------
    async def insert_api_key(self, key: ApiKeyRow) -> None:
        params = (
            key.id,
            key.name,
            key.key_prefix,
            key.key_hash,
            ",".join(key.scopes),
            _text(key.created_at),
            None if key.revoked_at is None else _text(key.revoked_at),
            None if key.last_used_at is None else _text(key.last_used_at),
        )

        def insert(connection: sqlite3.Connection) -> None:
            try:
                connection.execute(
                    "INSERT INTO api_keys (id, name, key_prefix, key_hash, scopes, created_at,"
                    " revoked_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
            except sqlite3.IntegrityError as exc:
                raise ApiKeyExists(f"API key id {key.id!r} already exists") from exc

        await self._call(insert)

    async def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        row = await self._call(
            lambda c: c.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        )
        return None if row is None else _key_row(row)

    async def list_api_keys(self) -> list[ApiKeyRow]:
        rows = await self._call(
            lambda c: c.execute("SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
        )
        return [_key_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, when: datetime | None = None) -> bool:
        params = (_text(when or utc_now()), key_id)
        cursor = await self._call(
            lambda c: c.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", params
            )
        )
        return cursor.rowcount > 0

    async def touch_api_key(self, key_id: str, when: datetime) -> None:
        params = (_text(when), key_id, _text(when))
        await self._call(
            lambda c: c.execute(
                "UPDATE api_keys SET last_used_at = ?"
                " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                params,
            )
        )


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc
    try:
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
    except _UNAVAILABLE as exc:
        connection.close()
        raise _unavailable(exc) from exc
    return connection


def _migrate(connection: sqlite3.Connection) -> list[int]:
    connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT"
    )
    applied: list[int] = []
    for migration in load_migrations("sqlite"):
        # BEGIN IMMEDIATE takes the write lock first, so two processes migrating at once take
        # turns and the second sees the first one's rows.
        connection.execute("BEGIN IMMEDIATE")
        try:
            done = connection.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if done is None:
                # executescript would COMMIT the open transaction first; run statement by
                # statement instead so the migration and its record commit together.
                for statement in _statements(migration.sql):
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _text(utc_now())),
                )
                applied.append(migration.version)
        except BaseException:
            _rollback(connection)
            raise
        connection.execute("COMMIT")
    return applied


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into complete statements (sqlite3.complete_statement)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statement = pending.strip()
            pending = ""
            if statement.strip(";").strip() and not _only_comments(statement):
                yield statement
    if pending.strip() and not _only_comments(pending):
        raise ValueError("migration script ends with an incomplete statement")


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


_PRUNE_OLD_ERROR_LOGS = (
    "DELETE FROM error_logs WHERE id IN ("
    " SELECT id FROM error_logs WHERE created_at < ? ORDER BY created_at LIMIT ?)"
)
# Rows more than keep_rows ids behind the newest: max(id) is one index probe, where counting
# rows (OFFSET keep_rows) would walk the whole kept part on every check. Ids only grow, so at
# most keep_rows rows remain (fewer if some ids were never committed).
_PRUNE_EXCESS_ERROR_LOGS = (
    "DELETE FROM error_logs WHERE id IN ("
    " SELECT id FROM error_logs WHERE id <= (SELECT max(id) FROM error_logs) - ?"
    " ORDER BY id LIMIT ?)"
)


# Written as the partial index is (0005_order_audit_unsettled.sql), so the database uses it.
UNSETTLED_ROWS = (
    "SELECT * FROM order_audit WHERE status IN ('pending', 'unknown') AND created_at < ?"
    " ORDER BY created_at, id LIMIT ?"
)


def select_error_logs(query: ErrorLogQuery) -> tuple[str, list[Any]]:
    """The statement and parameters for `recent_error_logs`. Each filter is written the way its
    index is (0004_error_logs_lookups.sql): SQLite uses an expression index only for the
    identical expression."""
    conditions: list[str] = []
    params: list[Any] = []
    if query.codes:
        conditions.append(f"code IN ({', '.join('?' for _ in query.codes)})")
        params.extend(query.codes)
    if query.upstream is not None:
        conditions.append("json_extract(context, '$.upstream') = ?")
        params.append(query.upstream)
    if query.since is not None:
        conditions.append("created_at >= ?")
        params.append(_text(query.since))
    params.append(query.limit)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only the fixed fragments above are formatted in; every value is a parameter.
    statement = (
        "SELECT id, code, message, request_id, context, created_at FROM error_logs"  # noqa: S608
        f"{where} ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return statement, params


def _error_row(row: sqlite3.Row) -> ErrorLogRow:
    created_at = _time(row["created_at"])
    if created_at is None:
        raise ValueError(f"error log row {row['id']} has no created_at")
    return ErrorLogRow(
        id=row["id"],
        code=row["code"],
        message=row["message"],
        request_id=row["request_id"],
        context=load_json(row["context"]),
        created_at=created_at,
    )


def _audit_row(row: sqlite3.Row) -> OrderAuditRow:
    created_at = _time(row["created_at"])
    updated_at = _time(row["updated_at"])
    if created_at is None or updated_at is None:
        raise ValueError(f"order audit row {row['id']} has no timestamps")
    return OrderAuditRow(
        id=row["id"],
        client_order_id=row["client_order_id"],
        request_id=row["request_id"],
        api_key_id=row["api_key_id"],
        request_body=load_json(row["request_body"]),
        body_hash=row["body_hash"],
        status=check_status(row["status"]),
        alpaca_order=None if row["alpaca_order"] is None else load_json(row["alpaca_order"]),
        error_code=row["error_code"],
        error_detail=row["error_detail"],
        created_at=created_at,
        updated_at=updated_at,
    )


def _key_row(row: sqlite3.Row) -> ApiKeyRow:
    created_at = _time(row["created_at"])
    if created_at is None:
        raise ValueError(f"API key {row['id']!r} has no created_at")
    return ApiKeyRow(
        id=row["id"],
        name=row["name"],
        key_prefix=row["key_prefix"],
        key_hash=row["key_hash"],
        scopes=tuple(s for s in row["scopes"].split(",") if s),
        created_at=created_at,
        revoked_at=_time(row["revoked_at"]),
        last_used_at=_time(row["last_used_at"]),
    )
