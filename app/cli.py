"""`python -m app.cli keys create|list|revoke`: manage gateway API keys.

The store is the gateway's own, chosen from the same settings (environment, then config/.env):
PostgreSQL when DATABASE_URL is set, otherwise the embedded SQLite file at EMBEDDED_DB_PATH
(default data/gateway.sqlite3). Migrations are applied first, so the CLI works on a fresh database.
A key is printed once, as the last line of `keys create`; only its hash is stored.

Exit status: 0 done, 1 unknown key id, 2 usage error, 3 database unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from app.keys import Scope, generate_key, key_prefix, parse_scopes
from app.settings import load_settings
from app.storage import ApiKeyRow, EmbeddedStore, PostgresStore, Store, StoreUnavailable
from app.storage.records import utc_now

EXIT_UNKNOWN_KEY = 1
EXIT_UNAVAILABLE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.cli", description="Administer the Alpaca gateway."
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    keys = groups.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a key (printed once, on the last line)")
    create.add_argument("--name", required=True, type=_name, help="who or what the key is for")
    create.add_argument(
        "--scopes",
        required=True,
        type=_scopes,
        help=f"comma-separated, from: {', '.join(s.value for s in Scope)}",
    )
    actions.add_parser("list", help="list keys (never their secrets or hashes)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="ID", help="the key id shown by `keys list`")
    return parser


def _name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 100:
        raise argparse.ArgumentTypeError("a name of 1 to 100 characters is required")
    return name


def _scopes(text: str) -> tuple[Scope, ...]:
    try:
        return parse_scopes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def open_store() -> Store:
    """The store the gateway uses, migrated. StoreUnavailable when it cannot be reached."""
    settings = load_settings()
    store: Store
    if settings.database_url is not None:
        # A CLI run may wait a little longer than a request would.
        store = await PostgresStore.open(
            settings.database_url.get_secret_value(),
            min_size=1,
            max_size=1,
            connect_timeout_s=5.0,
            command_timeout_s=10.0,
            acquire_timeout_s=5.0,
        )
    else:
        store = await EmbeddedStore.open(settings.embedded_db_path, busy_timeout_s=5.0)
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store


async def create_key(store: Store, name: str, scopes: Sequence[Scope], out: TextIO) -> None:
    key, key_id, key_hash = generate_key()
    row = ApiKeyRow(
        id=key_id,
        name=name,
        key_prefix=key_prefix(key_id),
        key_hash=key_hash,
        scopes=tuple(s.value for s in scopes),
        created_at=utc_now(),
    )
    await store.insert_api_key(row)
    out.write(
        f"Created API key {key_id} ({name!r}) with scopes {', '.join(row.scopes)}.\n"
        "This is the only time the key is shown: only its hash is stored, it cannot be\n"
        "recovered. Send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.\n"
        f"{key}\n"
    )


async def list_keys(store: Store, out: TextIO) -> None:
    rows = await store.list_api_keys()
    if not rows:
        out.write("No API keys.\n")
        return
    header = ("ID", "NAME", "PREFIX", "SCOPES", "CREATED", "REVOKED", "LAST USED")
    table = [header, *(_columns(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")


def _columns(row: ApiKeyRow) -> tuple[str, ...]:
    return (
        row.id,
        row.name,
        row.key_prefix,
        ",".join(row.scopes),
        _when(row.created_at),
        _when(row.revoked_at),
        _when(row.last_used_at),
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def revoke_key(store: Store, key_id: str, out: TextIO, err: TextIO) -> int:
    if not await store.revoke_api_key(key_id):
        err.write(f"No API key with id {key_id!r}.\n")
        return EXIT_UNKNOWN_KEY
    out.write(f"Revoked API key {key_id}. Running gateways refuse it within about 1 s.\n")
    return 0


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        store = await open_store()
    except StoreUnavailable as exc:
        err.write(f"Cannot open the key store: {exc}\n")
        return EXIT_UNAVAILABLE
    try:
        if args.action == "create":
            await create_key(store, args.name, args.scopes, out)
        elif args.action == "list":
            await list_keys(store, out)
        else:
            return await revoke_key(store, args.key_id, out, err)
    except StoreUnavailable as exc:
        err.write(f"The key store failed: {exc}\n")
        return EXIT_UNAVAILABLE
    finally:
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(run(args, sys.stdout, sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
