"""What the soak samples every few seconds: the worker's memory and descriptors, the metrics'
size and series count, each in-process structure's entries (gateway_inprocess_entries) and the
embedded store (its file, error_logs rows, order_audit rows).

The worker is read from /proc (granian serves from one child of the process app.serve becomes);
the store is read with SQLite's own read-only mode, next to the gateway's WAL writer.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.performance.servers import rss_mib

STRUCTURES = ("value_cache", "near_cache", "flights", "key_cache")


@dataclass(frozen=True)
class Sample:
    at_s: float
    requests: int
    values: dict[str, float]
    series: dict[str, int]  # series per metric family, to name the ones that grow


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def store_size(path: Path) -> tuple[float, float, float]:
    """(bytes on disk, error_logs rows, order_audit rows) of the embedded store at `path`."""
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        errors = connection.execute("SELECT count(*) FROM error_logs").fetchone()[0]
        audits = connection.execute("SELECT count(*) FROM order_audit").fetchone()[0]
    finally:
        connection.close()
    return float(size), float(errors), float(audits)


async def take(
    client: httpx.AsyncClient,
    base_url: str,
    worker_pid: int,
    database: Path,
    at_s: float,
    requests: int,
    invented: Callable[[str], bool],
) -> Sample:
    """`invented`: whether a label value is something only a request could have put there
    (counted as labels_from_requests, which must stay 0)."""
    response = await client.get(base_url + "/metrics")
    response.raise_for_status()
    text = response.text
    values = {
        "rss_mib": round(rss_mib(worker_pid), 1),
        "open_fds": float(open_fds(worker_pid)),
        "metrics_bytes": float(len(response.content)),
        "metrics_series": float(
            sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        ),
    }
    series: dict[str, int] = {}
    leaked: set[str] = set()
    for family in text_string_to_metric_families(text):
        series[family.name] = len(family.samples)
        leaked.update(v for each in family.samples for v in each.labels.values() if invented(v))
        if family.name not in ("gateway_inprocess_entries", "gateway_inprocess_bytes"):
            continue
        unit = "entries" if family.name.endswith("entries") else "bytes"
        for each in family.samples:
            values[f"{each.labels['structure']}_{unit}"] = each.value
    values["labels_from_requests"] = float(len(leaked))
    size, errors, audits = await asyncio.to_thread(store_size, database)
    values.update({"store_bytes": size, "error_log_rows": errors, "order_audit_rows": audits})
    return Sample(at_s, requests, values, series)
