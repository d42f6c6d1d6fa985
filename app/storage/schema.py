"""Versioned SQL migrations: `migrations/<dialect>/NNNN_name.sql`, applied in version order.

Each store records what it applied in `schema_migrations (version, name, applied_at)` and
applies only the missing versions, each in its own transaction, so a second run is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Dialect = Literal["postgres", "sqlite"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: Dialect, directory: Path | None = None) -> list[Migration]:
    """Every migration of one dialect, in version order. A malformed file name is an error,
    not something to skip: a silently ignored migration would leave the schema behind."""
    folder = (directory or MIGRATIONS_DIR) / dialect
    migrations: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_name.sql")
        migrations.append(
            Migration(int(match.group(1)), match.group(2), path.read_text(encoding="utf-8"))
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}")
    if not migrations:
        raise ValueError(f"no migrations found in {folder}")
    return migrations
