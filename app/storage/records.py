"""The rows the store reads and writes: frozen dataclasses, no I/O, no database types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

AuditStatus = Literal["pending", "submitted", "rejected", "failed", "reconciled", "unknown"]
AUDIT_STATUSES: tuple[AuditStatus, ...] = get_args(AuditStatus)
# Rows whose outcome the gateway has not learned: recorded and maybe sent (`pending`), or sent
# and not confirmed by the submit's own lookups (`unknown`). The order sweep settles them.
UNSETTLED_STATUSES: tuple[AuditStatus, ...] = ("pending", "unknown")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OrderAuditRequest:
    """An order about to be sent to Alpaca. Recorded (status `pending`) before it is sent.

    `request_body` is the order as the client sent it (JSON-ready); `body_hash` is what the
    idempotency check compares. Neither may contain credentials.
    """

    client_order_id: str
    request_body: Mapping[str, Any]
    body_hash: str
    request_id: str | None = None
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class OrderAuditRow:
    id: int
    client_order_id: str
    request_id: str | None
    api_key_id: str | None
    request_body: dict[str, Any]
    body_hash: str
    status: AuditStatus
    alpaca_order: dict[str, Any] | None
    error_code: str | None
    error_detail: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ErrorLogEntry:
    """One failure worth keeping beyond the log stream (`code` is an ErrorCode name)."""

    code: str
    message: str
    request_id: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True, slots=True)
class ErrorLogRow:
    """A stored error-log entry, exactly as written: `context` is the stored JSON object."""

    id: int
    code: str
    message: str
    request_id: str | None
    context: dict[str, Any]
    created_at: datetime

    @property
    def upstream(self) -> str | None:
        return _text_or_none(self.context.get("upstream"))

    @property
    def symbol(self) -> str | None:
        return _text_or_none(self.context.get("symbol"))


def _text_or_none(value: object) -> str | None:
    # Context values are whatever was logged; only text is shown as text.
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class ErrorLogQuery:
    """Which error-log rows to read, newest first: every filter given must match."""

    codes: tuple[str, ...] = ()
    upstream: str | None = None
    since: datetime | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since must be timezone-aware")


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    """A stored API key: `id` is the public key_id; only the secret's hash is ever stored."""

    id: str
    name: str
    key_prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
