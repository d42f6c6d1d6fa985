"""The `Store` interface both backends implement, and its one failure type.

`PostgresStore` (asyncpg) and `EmbeddedStore` (sqlite3) have the same methods and the same
semantics; callers depend on this protocol only. Every connectivity, timeout or resource failure
of either database is raised as `StoreUnavailable`, chained to the driver's exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from app.storage.records import (
    AUDIT_STATUSES,
    UNSETTLED_STATUSES,
    ApiKeyRow,
    AuditStatus,
    ErrorLogEntry,
    ErrorLogQuery,
    ErrorLogRow,
    OrderAuditRequest,
    OrderAuditRow,
)


class StoreUnavailable(Exception):
    """The database could not be reached or could not complete the operation in time."""


class ApiKeyExists(Exception):
    """`insert_api_key` was given a key_id that is already stored."""


class Store(Protocol):
    @property
    def dependency(self) -> str:
        """The dependency name used in logs and metrics: `postgres` or `sqlite`."""
        ...

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded in `schema_migrations`; return their versions."""
        ...

    async def ping(self) -> bool: ...

    def watch_revocations(self, on_revoked: Callable[[str | None], None]) -> None:
        """Report key revocations made by any process (`None`: some may have been missed)."""
        ...

    async def close(self) -> None: ...

    # --- order audit --------------------------------------------------------------------------
    async def insert_order_audit(self, request: OrderAuditRequest) -> int:
        """Record an order as `pending` and return its audit id, committed before returning."""
        ...

    async def complete_order_audit(
        self,
        audit_id: int,
        *,
        status: AuditStatus,
        alpaca_order: dict[str, Any] | None,
        error_code: str | None,
        error_detail: str | None,
    ) -> None:
        """Set the outcome of an audited order. LookupError if `audit_id` does not exist."""
        ...

    async def order_audits(self, client_order_id: str) -> list[OrderAuditRow]:
        """Every audit row for one client_order_id, oldest first."""
        ...

    async def unsettled_order_audits(
        self, *, created_before: datetime, limit: int
    ) -> list[OrderAuditRow]:
        """Rows still `pending` or `unknown` that were recorded before `created_before`, oldest
        first, at most `limit`."""
        ...

    async def count_unsettled_order_audits(self, *, created_before: datetime) -> int:
        """How many rows `unsettled_order_audits` would return without a limit."""
        ...

    async def settle_order_audit(
        self,
        audit_id: int,
        *,
        status: AuditStatus,
        alpaca_order: dict[str, Any] | None,
        error_code: str | None,
        error_detail: str | None,
    ) -> bool:
        """Set the outcome of an audited order only while it is still `pending` or `unknown`,
        in one statement: True if this call settled it, False if it was settled already (by
        the submit itself, or by another gateway's sweep) or does not exist."""
        ...

    # --- error log ----------------------------------------------------------------------------
    async def insert_error_logs(self, entries: Sequence[ErrorLogEntry]) -> None: ...

    async def recent_error_logs(self, query: ErrorLogQuery) -> list[ErrorLogRow]:
        """The newest rows matching `query` (created_at, then id, descending), at most
        `query.limit`. `upstream` matches the `upstream` recorded in the row's context."""
        ...

    async def prune_error_logs(self, *, keep_rows: int, older_than: datetime, limit: int) -> int:
        """Delete at most `limit` rows: first those created before `older_than`, then those
        more than `keep_rows` ids behind the newest row, so at most `keep_rows` remain. Return
        how many were deleted; `limit` deleted means more may be due."""
        ...

    # --- API keys -----------------------------------------------------------------------------
    async def insert_api_key(self, key: ApiKeyRow) -> None:
        """Store a new key. ApiKeyExists if its id is taken."""
        ...

    async def get_api_key(self, key_id: str) -> ApiKeyRow | None: ...

    async def list_api_keys(self) -> list[ApiKeyRow]:
        """All keys, revoked ones included, oldest first."""
        ...

    async def revoke_api_key(self, key_id: str, when: datetime | None = None) -> bool:
        """Mark a key revoked (the first revocation time is kept). False if it does not exist."""
        ...

    async def touch_api_key(self, key_id: str, when: datetime) -> None:
        """Move last_used_at forward to `when` (never backwards)."""
        ...


def check_settled(status: AuditStatus) -> AuditStatus:
    """A status that settles a row: known, and neither `pending` nor `unknown`."""
    if check_status(status) in UNSETTLED_STATUSES:
        raise ValueError(f"{status!r} does not settle an order audit row")
    return status


def check_status(status: str) -> AuditStatus:
    for known in AUDIT_STATUSES:
        if status == known:
            return known
    raise ValueError(f"unknown order audit status {status!r}")


def dump_json(document: Mapping[str, Any]) -> str:
    """Compact JSON text for a JSON-ready mapping. NaN/Infinity are not JSON: ValueError."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_json(text: str) -> dict[str, Any]:
    document = json.loads(text)
    if not isinstance(document, dict):
        raise TypeError(f"stored JSON is a {type(document).__name__}, not an object")
    return document
