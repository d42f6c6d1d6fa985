"""`PostgresStore`: the `Store` on an asyncpg pool.

Every call is bounded: connecting (`connect_timeout_s`), waiting for a pooled connection
(`acquire_timeout_s`) and each statement (`command_timeout_s`), so a dead or hung server fails a
call in about a second instead of stalling it. asyncpg's connection, shutdown and resource errors,
OSError and timeouts become `StoreUnavailable` here and nowhere else; any other PostgreSQL error
is a bug in this module and propagates unchanged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from app.background import cancel_and_wait
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

# What "the database is unavailable" looks like from asyncpg: connection-level errors (08xxx,
# including a connection the server dropped), operator intervention (57xxx: shutdown, cannot
# connect now, statement cancelled), insufficient resources (53xxx: disk full, too many
# connections), a read-only server (a standby after failover), a broken client connection
# (InterfaceError), socket errors and timeouts.
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.InterfaceError,
    # What a connection the server closed mid-protocol (`pg_ctl -m fast stop`) raises.
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
# One advisory lock id for "migrating this database", so gateways starting together take turns.
_MIGRATION_LOCK_ID = 0x67770001

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # Generic only in asyncpg-stubs; the runtime class cannot be subscripted.
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]


def _unavailable(exc: BaseException) -> StoreUnavailable:
    # The message names the failure, never the DSN (it may carry a password).
    return StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")


REVOCATIONS_CHANNEL = "gateway_api_key_revoked"


def _set_on_close(event: asyncio.Event, _connection: object) -> None:
    event.set()


class PostgresStore:
    dependency = "postgres"

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        *,
        url: str | None = None,
        acquire_timeout_s: float = 1.0,
        migration_timeout_s: float = 60.0,
    ) -> None:
        self._pool = pool
        self._url = url
        self._watcher: asyncio.Task[None] | None = None
        self._acquire_timeout_s = acquire_timeout_s
        self._migration_timeout_s = migration_timeout_s

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 1.0,
        acquire_timeout_s: float = 1.0,
        command_timeout_s: float = 1.0,
        migration_timeout_s: float = 60.0,
    ) -> PostgresStore:
        """Create the pool (`min_size` connections opened now). StoreUnavailable if it cannot."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
            )
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc
        return cls(
            pool,
            url=url,
            acquire_timeout_s=acquire_timeout_s,
            migration_timeout_s=migration_timeout_s,
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout_s) as connection:
                yield connection
        except _UNAVAILABLE as exc:
            raise _unavailable(exc) from exc

    async def close(self) -> None:
        await cancel_and_wait([self._watcher])
        await self._pool.close()

    async def ping(self) -> bool:
        try:
            async with self._connection() as connection:
                await connection.fetchval("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    async def migrate(self) -> list[int]:
        applied: list[int] = []
        timeout = self._migration_timeout_s
        async with self._connection() as connection:
            async with connection.transaction():
                await connection.execute(
                    "SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID, timeout=timeout
                )
                await connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    timeout=timeout,
                )
            for migration in load_migrations("postgres"):
                async with connection.transaction():
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_ID, timeout=timeout
                    )
                    done = await connection.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1", migration.version
                    )
                    if done:
                        continue
                    await connection.execute(migration.sql, timeout=timeout)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                    applied.append(migration.version)
        return applied

    # --- order audit --------------------------------------------------------------------------
    async def insert_order_audit(self, request: OrderAuditRequest) -> int:
        # Autocommit: the row is committed (synchronous_commit, on by default) when this returns.
        now = utc_now()
        async with self._connection() as connection:
            audit_id = await connection.fetchval(
                "INSERT INTO order_audit (client_order_id, request_id, api_key_id, request_body,"
                " body_hash, status, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4::json, $5, 'pending', $6, $6) RETURNING id",
                request.client_order_id,
                request.request_id,
                request.api_key_id,
                dump_json(request.request_body),
                request.body_hash,
                now,
            )
        return int(audit_id)

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
        async with self._connection() as connection:
            result = await connection.execute(
                "UPDATE order_audit SET status = $2, alpaca_order = $3::json, error_code = $4,"
                " error_detail = $5, updated_at = $6 WHERE id = $1",
                audit_id,
                status,
                None if alpaca_order is None else dump_json(alpaca_order),
                error_code,
                error_detail,
                utc_now(),
            )
        if result == "UPDATE 0":
            raise LookupError(f"no order audit row {audit_id}")

    async def order_audits(self, client_order_id: str) -> list[OrderAuditRow]:
        async with self._connection() as connection:
            records = await connection.fetch(
                "SELECT * FROM order_audit WHERE client_order_id = $1 ORDER BY id",
                client_order_id,
            )
        return [_audit_row(record) for record in records]

    async def unsettled_order_audits(
        self, *, created_before: datetime, limit: int
    ) -> list[OrderAuditRow]:
        async with self._connection() as connection:
            records = await connection.fetch(UNSETTLED_ROWS, created_before, limit)
        return [_audit_row(record) for record in records]

    async def count_unsettled_order_audits(self, *, created_before: datetime) -> int:
        async with self._connection() as connection:
            count = await connection.fetchval(
                "SELECT count(*) FROM order_audit WHERE status IN ('pending', 'unknown')"
                " AND created_at < $1",
                created_before,
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
        async with self._connection() as connection:
            # One conditional statement: of two gateways settling the row, one updates it.
            result = await connection.execute(
                "UPDATE order_audit SET status = $2, alpaca_order = $3::json, error_code = $4,"
                " error_detail = $5, updated_at = $6"
                " WHERE id = $1 AND status IN ('pending', 'unknown')",
                audit_id,
                status,
                None if alpaca_order is None else dump_json(alpaca_order),
                error_code,
                error_detail,
                utc_now(),
            )
        return result != "UPDATE 0"

    # --- error log ----------------------------------------------------------------------------
    async def insert_error_logs(self, entries: Sequence[ErrorLogEntry]) -> None:
        if not entries:
            return
        async with self._connection() as connection:
            await connection.executemany(
                "INSERT INTO error_logs (request_id, code, message, context, created_at)"
                " VALUES ($1, $2, $3, $4::json, $5)",
                [
                    (e.request_id, e.code, e.message, dump_json(e.context), e.created_at)
                    for e in entries
                ],
            )

    async def recent_error_logs(self, query: ErrorLogQuery) -> list[ErrorLogRow]:
        statement, params = select_error_logs(query)
        async with self._connection() as connection:
            records = await connection.fetch(statement, *params)
        return [_error_row(record) for record in records]

    async def prune_error_logs(self, *, keep_rows: int, older_than: datetime, limit: int) -> int:
        async with self._connection() as connection:
            # Each DELETE is bounded by `limit`, so it fits well inside the statement timeout.
            result = await connection.execute(_PRUNE_OLD_ERROR_LOGS, older_than, limit)
            deleted = _deleted(result)
            if deleted < limit:
                result = await connection.execute(
                    _PRUNE_EXCESS_ERROR_LOGS, keep_rows, limit - deleted
                )
                deleted += _deleted(result)
        return deleted

    # --- API keys -----------------------------------------------------------------------------
    async def insert_api_key(self, key: ApiKeyRow) -> None:
        async with self._connection() as connection:
            try:
                await connection.execute(
                    "INSERT INTO api_keys (id, name, key_prefix, key_hash, scopes, created_at,"
                    " revoked_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    key.id,
                    key.name,
                    key.key_prefix,
                    key.key_hash,
                    list(key.scopes),
                    key.created_at,
                    key.revoked_at,
                    key.last_used_at,
                )
            except asyncpg.UniqueViolationError as exc:
                raise ApiKeyExists(f"API key id {key.id!r} already exists") from exc

    async def get_api_key(self, key_id: str) -> ApiKeyRow | None:
        async with self._connection() as connection:
            record = await connection.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
        return None if record is None else _key_row(record)

    async def list_api_keys(self) -> list[ApiKeyRow]:
        async with self._connection() as connection:
            records = await connection.fetch("SELECT * FROM api_keys ORDER BY created_at, id")
        return [_key_row(record) for record in records]

    async def revoke_api_key(self, key_id: str, when: datetime | None = None) -> bool:
        async with self._connection() as connection, connection.transaction():
            result = await connection.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                key_id,
                when or utc_now(),
            )
            if result != "UPDATE 0":
                # Delivered at commit to every gateway listening: revocation takes effect at
                # once there, not when a cached key expires.
                await connection.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, key_id)
        return result != "UPDATE 0"

    def watch_revocations(self, on_revoked: Callable[[str | None], None]) -> None:
        """Call `on_revoked(key_id)` for each revocation any process commits, and
        `on_revoked(None)` after a reconnect (revocations may have been missed meanwhile)."""
        if self._watcher is None and self._url is not None:
            self._watcher = asyncio.create_task(
                self._watch_revocations(on_revoked), name="api-key-revocations"
            )

    async def _watch_revocations(self, on_revoked: Callable[[str | None], None]) -> None:
        reconnected = False
        while True:
            try:
                connection = await asyncpg.connect(self._url, timeout=self._acquire_timeout_s)
            except _UNAVAILABLE:
                await asyncio.sleep(1.0)
                continue
            lost = asyncio.Event()
            connection.add_termination_listener(functools.partial(_set_on_close, lost))
            try:
                await connection.add_listener(
                    REVOCATIONS_CHANNEL, lambda _c, _pid, _channel, key_id: on_revoked(key_id)
                )
                if reconnected:
                    on_revoked(None)
                reconnected = True
                await lost.wait()
            except _UNAVAILABLE:
                pass
            finally:
                if not connection.is_closed():
                    await connection.close()
            await asyncio.sleep(1.0)

    async def touch_api_key(self, key_id: str, when: datetime) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "UPDATE api_keys SET last_used_at = $2"
                " WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
                key_id,
                when,
            )


_PRUNE_OLD_ERROR_LOGS = (
    "DELETE FROM error_logs WHERE id IN ("
    " SELECT id FROM error_logs WHERE created_at < $1 ORDER BY created_at LIMIT $2)"
)
# Rows more than keep_rows ids behind the newest: max(id) is one index probe, where counting
# rows (OFFSET keep_rows) would walk the whole kept part on every check. Ids only grow, so at
# most keep_rows rows remain (fewer if some ids were never committed).
_PRUNE_EXCESS_ERROR_LOGS = (
    "DELETE FROM error_logs WHERE id IN ("
    " SELECT id FROM error_logs WHERE id <= (SELECT max(id) FROM error_logs) - $1"
    " ORDER BY id LIMIT $2)"
)


# Written as the partial index is (0005_order_audit_unsettled.sql), so the database uses it.
UNSETTLED_ROWS = (
    "SELECT * FROM order_audit WHERE status IN ('pending', 'unknown') AND created_at < $1"
    " ORDER BY created_at, id LIMIT $2"
)


def select_error_logs(query: ErrorLogQuery) -> tuple[str, list[Any]]:
    """The statement and parameters for `recent_error_logs`. Each filter is written the way its
    index is (0004_error_logs_lookups.sql), so the planner can use it."""
    conditions: list[str] = []
    params: list[Any] = []
    if query.codes:
        params.append(list(query.codes))
        conditions.append(f"code = ANY(${len(params)}::text[])")
    if query.upstream is not None:
        params.append(query.upstream)
        conditions.append(f"(context ->> 'upstream') = ${len(params)}")
    if query.since is not None:
        params.append(query.since)
        conditions.append(f"created_at >= ${len(params)}")
    params.append(query.limit)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only the fixed fragments above are formatted in; every value is a parameter.
    statement = (
        "SELECT id, code, message, request_id, context, created_at FROM error_logs"  # noqa: S608
        f"{where} ORDER BY created_at DESC, id DESC LIMIT ${len(params)}"
    )
    return statement, params


def _deleted(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 42".
    return int(status.rsplit(" ", 1)[-1])


def _error_row(record: asyncpg.Record) -> ErrorLogRow:
    return ErrorLogRow(
        id=record["id"],
        code=record["code"],
        message=record["message"],
        request_id=record["request_id"],
        context=load_json(record["context"]),
        created_at=record["created_at"],
    )


def _audit_row(record: asyncpg.Record) -> OrderAuditRow:
    alpaca_order = record["alpaca_order"]
    return OrderAuditRow(
        id=record["id"],
        client_order_id=record["client_order_id"],
        request_id=record["request_id"],
        api_key_id=record["api_key_id"],
        request_body=load_json(record["request_body"]),
        body_hash=record["body_hash"],
        status=check_status(record["status"]),
        alpaca_order=None if alpaca_order is None else load_json(alpaca_order),
        error_code=record["error_code"],
        error_detail=record["error_detail"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
    )


def _key_row(record: asyncpg.Record) -> ApiKeyRow:
    return ApiKeyRow(
        id=record["id"],
        name=record["name"],
        key_prefix=record["key_prefix"],
        key_hash=record["key_hash"],
        scopes=tuple(record["scopes"]),
        created_at=record["created_at"],
        revoked_at=record["revoked_at"],
        last_used_at=record["last_used_at"],
    )
