"""`python -m app.cli keys create|list|revoke` and `python -m app.cli errors`.

`keys` manages gateway API keys: a key is printed once, as the last line of `keys create`; only
its hash is stored. `errors` shows the typed failures the gateway recorded in `error_logs`, newest
first, as a table or (`--json`) one JSON object per line.

The store is the gateway's own, chosen from the same settings (environment, then config/.env):
PostgreSQL when DATABASE_URL is set, otherwise the embedded SQLite file at EMBEDDED_DB_PATH
(default data/gateway.sqlite3). Migrations are applied first, so the CLI works on a fresh database.

Exit status: 0 done, 1 unknown key id, 2 usage error, 3 database unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, get_args

from app.errors import ErrorCode, Upstream
from app.keys import Scope, generate_key, key_prefix, parse_scopes
from app.settings import load_settings
from app.storage import (
    ApiKeyRow,
    EmbeddedStore,
    ErrorLogQuery,
    ErrorLogRow,
    PostgresStore,
    Store,
    StoreUnavailable,
)
from app.storage.records import utc_now

EXIT_UNKNOWN_KEY = 1
EXIT_UNAVAILABLE = 3

ERRORS_DEFAULT_LIMIT = 50
ERRORS_MAX_LIMIT = 10_000
_DURATION = re.compile(r"(\d{1,5})([smhd])")  # 99999d is still after year 1
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SINCE_FORMS = "expected an RFC 3339 time (2026-11-23T14:00:00Z) or a duration (90s, 15m, 2h, 1d)"
# Longest text shown per table cell (request ids are at most 64 characters); --json always
# carries the full stored text.
_CODE_WIDTH = 32
_UPSTREAM_WIDTH = 10
_SYMBOL_WIDTH = 21
_REQUEST_ID_WIDTH = 64
_MESSAGE_WIDTH = 100


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
    _add_errors_command(groups)
    return parser


def _add_errors_command(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    errors = groups.add_parser(
        "errors",
        help="recent typed failures from the error log, newest first",
        description="Recent typed failures the gateway recorded (error_logs), newest first.",
    )
    errors.add_argument(
        "--code",
        action="append",
        type=_codes,
        default=[],
        metavar="CODE",
        help="only these error codes (repeatable, or comma-separated), e.g. UPSTREAM_TIMEOUT",
    )
    errors.add_argument(
        "--upstream", choices=get_args(Upstream), help="only failures of this Alpaca upstream"
    )
    errors.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="only failures at or after WHEN: an RFC 3339 time (2026-11-23T14:00:00Z) "
        "or a duration ago (90s, 15m, 2h, 1d)",
    )
    errors.add_argument(
        "--limit",
        type=_limit,
        default=ERRORS_DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N failures, 1 to {ERRORS_MAX_LIMIT} (default {ERRORS_DEFAULT_LIMIT})",
    )
    errors.add_argument(
        "--json", action="store_true", help="one JSON object per line (for scripts)"
    )


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


def _codes(text: str) -> tuple[str, ...]:
    names = [name.strip().upper() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("an error code is required")
    for name in names:
        if name not in ErrorCode.__members__:
            known = ", ".join(ErrorCode.__members__)
            raise argparse.ArgumentTypeError(f"unknown error code {name!r} (known: {known})")
    return tuple(names)


def _since(text: str) -> datetime:
    text = text.strip()
    if match := _DURATION.fullmatch(text):
        amount, unit = match.groups()
        return utc_now() - timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    try:
        # RFC 3339 allows a lower-case t and z; fromisoformat wants them upper-case.
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(_SINCE_FORMS) from None
    if moment.tzinfo is None:
        # Without an offset the time is ambiguous (this host's zone? the gateway's?).
        raise argparse.ArgumentTypeError(f"the time needs its offset (Z, +02:00): {_SINCE_FORMS}")
    return moment


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= ERRORS_MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"a whole number from 1 to {ERRORS_MAX_LIMIT}")
    return limit


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
    _write_table(out, [header, *(_columns(row) for row in rows)])


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


def error_query(args: argparse.Namespace) -> ErrorLogQuery:
    # --code may be given several times, each a comma list: one ordered, duplicate-free tuple.
    codes = tuple(dict.fromkeys(code for group in args.code for code in group))
    return ErrorLogQuery(codes=codes, upstream=args.upstream, since=args.since, limit=args.limit)


async def show_errors(
    store: Store, query: ErrorLogQuery, as_json: bool, out: TextIO, err: TextIO
) -> None:
    rows = await store.recent_error_logs(query)
    if as_json:
        for row in rows:
            out.write(_error_json(row) + "\n")
        return
    if not rows:
        out.write("No recorded failures match.\n")
        return
    header = ("TIME", "CODE", "UPSTREAM", "SYMBOL", "REQUEST ID", "MESSAGE")
    _write_table(out, [header, *(_error_columns(row) for row in rows)])
    if len(rows) == query.limit:
        err.write(f"(the newest {query.limit}; more may match: raise --limit or narrow --since)\n")


def _error_json(row: ErrorLogRow) -> str:
    """The stored row and nothing else; ASCII-only, so no raw control character reaches a
    terminal (a JSON reader gets the exact text back)."""
    document: dict[str, Any] = {
        "id": row.id,
        "created_at": row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "code": row.code,
        "message": row.message,
        "request_id": row.request_id,
        "context": row.context,
    }
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"))


def _error_columns(row: ErrorLogRow) -> tuple[str, ...]:
    return (
        row.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        _cell(row.code, _CODE_WIDTH),
        _cell(row.upstream, _UPSTREAM_WIDTH),
        _cell(row.symbol, _SYMBOL_WIDTH),
        _cell(row.request_id, _REQUEST_ID_WIDTH),
        _cell(row.message, _MESSAGE_WIDTH),
    )


def _cell(text: str | None, width: int) -> str:
    """Printable and at most `width` characters. The text may come from a client (a symbol, a
    path in a message): control and format characters are escaped so they cannot move the
    cursor or reorder the terminal line."""
    if text is None:
        return "-"
    visible = "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in text
    )
    return visible if len(visible) <= width else visible[: width - 3] + "..."


def _write_table(out: TextIO, table: Sequence[Sequence[str]]) -> None:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        out.write("\n")


async def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        store = await open_store()
    except StoreUnavailable as exc:
        err.write(f"Cannot open the store: {exc}\n")
        return EXIT_UNAVAILABLE
    try:
        return await _run_command(store, args, out, err)
    except StoreUnavailable as exc:
        err.write(f"The store failed: {exc}\n")
        return EXIT_UNAVAILABLE
    finally:
        await store.close()


async def _run_command(store: Store, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.group == "errors":
        await show_errors(store, error_query(args), args.json, out, err)
    elif args.action == "create":
        await create_key(store, args.name, args.scopes, out)
    elif args.action == "list":
        await list_keys(store, out)
    else:
        return await revoke_key(store, args.key_id, out, err)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args, sys.stdout, sys.stderr))
    except BrokenPipeError:
        # The reader stopped early (`errors --json | head -1`): not a failure. Point stdout at
        # /dev/null so the interpreter's final flush does not raise the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
