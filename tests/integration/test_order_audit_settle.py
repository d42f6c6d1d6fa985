"""The store's part of the order sweep, on both backends: reading the unsettled rows, and settling
one only while it is still unsettled (so gateways sweeping one table never overwrite each other,
nor the submit that owns the row)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.storage import OrderAuditRequest, Store, embedded, postgres
from app.storage.records import utc_now
from tests.integration.test_storage import (
    Backend,
    open_backend,
    postgres_server_url,
    unique_database,
)

pytestmark = pytest.mark.integration

LATER = timedelta(hours=1)
ORDER = {"id": "61e69015-8549-4bfd-b9c3-01e75843f47d", "client_order_id": "k", "qty": "2"}


@pytest.fixture(params=["postgres", "embedded"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, url or path) of an empty database of this test's own."""
    if request.param == "postgres":
        with unique_database(postgres_server_url()) as url:
            yield "postgres", url
    else:
        yield "embedded", str(tmp_path / "gateway.sqlite3")


@pytest.fixture
async def backend(location: tuple[str, str]) -> AsyncIterator[Backend]:
    opened = await open_backend(*location)
    await opened.store.migrate()
    yield opened
    await opened.store.close()


async def record(store: Store, key: str) -> int:
    return await store.insert_order_audit(
        OrderAuditRequest(client_order_id=key, request_body={"qty": "2"}, body_hash="m1:x")
    )


async def settle(store: Store, audit_id: int, **changes: Any) -> bool:
    values: dict[str, Any] = {
        "status": "reconciled",
        "alpaca_order": ORDER,
        "error_code": None,
        "error_detail": None,
    }
    values.update(changes)
    return await store.settle_order_audit(audit_id, **values)


async def test_unsettled_rows_are_the_pending_and_unknown_ones_recorded_before_the_cutoff(
    backend: Backend,
) -> None:
    store = backend.store
    pending = await record(store, "pending")
    unknown = await record(store, "unknown")
    await store.complete_order_audit(
        unknown, status="unknown", alpaca_order=None, error_code="ORDER_STATE_UNKNOWN",
        error_detail=None,
    )  # fmt: skip
    submitted = await record(store, "submitted")
    await store.complete_order_audit(
        submitted, status="submitted", alpaca_order=ORDER, error_code=None, error_detail=None
    )
    await asyncio.sleep(0.01)
    cutoff = utc_now()
    await asyncio.sleep(0.01)
    await record(store, "too-young")

    rows = await store.unsettled_order_audits(created_before=cutoff, limit=10)

    assert [(r.id, r.client_order_id, r.status) for r in rows] == [
        (pending, "pending", "pending"),
        (unknown, "unknown", "unknown"),
    ]
    assert await store.count_unsettled_order_audits(created_before=cutoff) == 2
    assert await store.count_unsettled_order_audits(created_before=utc_now() + LATER) == 3
    limited = await store.unsettled_order_audits(created_before=utc_now() + LATER, limit=2)
    assert [r.client_order_id for r in limited] == ["pending", "unknown"]  # oldest first


async def test_a_row_is_settled_once_and_a_settled_row_is_never_overwritten(
    backend: Backend,
) -> None:
    store = backend.store
    audit_id = await record(store, "k")

    assert await settle(store, audit_id) is True
    assert await settle(store, audit_id, status="failed", alpaca_order=None) is False

    (row,) = await store.order_audits("k")
    assert (row.status, row.alpaca_order) == ("reconciled", ORDER)
    assert row.updated_at >= row.created_at
    assert await store.count_unsettled_order_audits(created_before=utc_now() + LATER) == 0


async def test_a_row_the_submit_completed_meanwhile_is_left_as_the_submit_wrote_it(
    backend: Backend,
) -> None:
    store = backend.store
    audit_id = await record(store, "k")
    await store.complete_order_audit(
        audit_id, status="submitted", alpaca_order=ORDER, error_code=None, error_detail=None
    )

    assert await settle(store, audit_id, status="failed", alpaca_order=None) is False
    (row,) = await store.order_audits("k")
    assert row.status == "submitted"


async def test_an_unknown_row_can_be_settled_and_a_missing_one_is_not(backend: Backend) -> None:
    store = backend.store
    audit_id = await record(store, "k")
    await store.complete_order_audit(
        audit_id, status="unknown", alpaca_order=None, error_code=None, error_detail=None
    )

    assert await settle(store, audit_id, error_code="IDEMPOTENCY_CONFLICT") is True
    assert await settle(store, 999) is False
    (row,) = await store.order_audits("k")
    assert (row.status, row.error_code) == ("reconciled", "IDEMPOTENCY_CONFLICT")


@pytest.mark.parametrize("status", ["pending", "unknown", "lost"])
async def test_settling_to_an_unsettled_or_unknown_status_is_an_error(
    backend: Backend, status: str
) -> None:
    audit_id = await record(backend.store, "k")
    with pytest.raises(ValueError, match="order audit"):
        await settle(backend.store, audit_id, status=status)
    (row,) = await backend.store.order_audits("k")
    assert row.status == "pending"


async def test_two_stores_settling_one_row_at_once_settle_it_once(backend: Backend) -> None:
    other = await backend.reopen()
    try:
        ids = [await record(backend.store, f"k{i}") for i in range(20)]
        outcomes = await asyncio.gather(
            *(settle(backend.store, i) for i in ids),
            *(settle(other, i, status="failed", alpaca_order=None) for i in ids),
        )
    finally:
        await other.close()
    firsts, seconds = outcomes[: len(ids)], outcomes[len(ids) :]
    assert all(a != b for a, b in zip(firsts, seconds, strict=True))
    for i, won in enumerate(firsts):
        (row,) = await backend.store.order_audits(f"k{i}")
        assert row.status == ("reconciled" if won else "failed")


async def test_the_unsettled_rows_are_read_through_their_partial_index(
    backend: Backend, location: tuple[str, str]
) -> None:
    kind, where = location
    if kind == "postgres":
        connection = await asyncpg.connect(where, timeout=5)
        try:
            # A near-empty table is cheapest to scan whole: ask whether the index is usable.
            await connection.execute("SET enable_seqscan = off")
            rows = await connection.fetch("EXPLAIN " + postgres.UNSETTLED_ROWS, utc_now(), 100)
        finally:
            await connection.close()
        plan = "\n".join(r[0] for r in rows)
    else:
        sqlite = sqlite3.connect(where)
        try:
            params = (utc_now().isoformat(), 100)
            steps = sqlite.execute(
                "EXPLAIN QUERY PLAN " + embedded.UNSETTLED_ROWS, params
            ).fetchall()
        finally:
            sqlite.close()
        plan = "\n".join(r[-1] for r in steps)
    assert "order_audit_unsettled_created_at_idx" in plan, plan
