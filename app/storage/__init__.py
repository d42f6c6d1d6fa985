"""Durable storage: order audit, error log and API keys, on PostgreSQL or an embedded SQLite file.

Nothing here imports fastapi. Stores are opened by the lifespan (or the CLI) and closed by it;
nothing connects at import time.
"""

from app.storage.embedded import EmbeddedStore
from app.storage.error_log import ErrorLogRetention, ErrorLogWriter
from app.storage.postgres import PostgresStore
from app.storage.records import (
    AUDIT_STATUSES,
    ApiKeyRow,
    AuditStatus,
    ErrorLogEntry,
    ErrorLogQuery,
    ErrorLogRow,
    OrderAuditRequest,
    OrderAuditRow,
)
from app.storage.store import ApiKeyExists, Store, StoreUnavailable

__all__ = [
    "AUDIT_STATUSES",
    "ApiKeyExists",
    "ApiKeyRow",
    "AuditStatus",
    "EmbeddedStore",
    "ErrorLogEntry",
    "ErrorLogQuery",
    "ErrorLogRetention",
    "ErrorLogRow",
    "ErrorLogWriter",
    "OrderAuditRequest",
    "OrderAuditRow",
    "PostgresStore",
    "Store",
    "StoreUnavailable",
]
