"""loguru setup: one JSON object per line (or readable text), stdlib logging routed in,
secrets redacted in one place before any sink sees a record."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(apca-api-secret-key|apca-api-key-id|x-api-key|authorization|api[_-]?key|secret|"
    r"password|token)([\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?([^\s\"',}]+)"
)
_STDLIB_LOGGERS = (
    *("uvicorn", "uvicorn.error", "uvicorn.access", "_granian", "granian.access"),
    *("aiohttp", "asyncpg", "redis"),
)


# The request being answered, for every log line written while answering it: set by the request
# middleware, read here by the patcher (cheaper per request than binding a context each time).
REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")


def current_request_id() -> str:
    return REQUEST_ID.get()


class Redactor:
    """Removes known secret values and anything shaped like `secret=...` from a record."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first so a secret that contains another is removed whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + "***", text)

    def __call__(self, record: Record) -> None:
        extra = record["extra"]
        if extra.get("request_id", "-") == "-":
            extra["request_id"] = REQUEST_ID.get()
        record["message"] = self.redact(record["message"])
        for key, value in list(record["extra"].items()):
            if isinstance(value, str):
                record["extra"][key] = self.redact(value)


def _json_line(redactor: Redactor, record: Record) -> str:
    doc: dict[str, Any] = {
        "ts": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["extra"].get("logger_name", record["name"]),
        "msg": record["message"],
    }
    doc.update((k, v) for k, v in record["extra"].items() if k not in ("logger_name", "_line"))
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        doc["exc_type"] = exception.type.__name__
        # The traceback stays inside the one JSON line; frames only, never local values.
        trace = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        )
        doc["exc"] = redactor.redact(trace)
    record["extra"]["_line"] = json.dumps(doc, default=str)
    # Returning a constant format stops loguru from re-formatting braces inside the message.
    return "{extra[_line]}\n"


_TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {extra[request_id]} | {message}"


def _text_line(redactor: Redactor, record: Record) -> str:
    """Readable line; a traceback is formatted here so the redactor sees it too (loguru's own
    `{exception}` would bypass the patcher)."""
    exception = record["exception"]
    if exception is None or exception.type is None:
        return _TEXT_FORMAT + "\n"
    trace = "".join(
        traceback.format_exception(exception.type, exception.value, exception.traceback)
    )
    record["extra"]["_trace"] = redactor.redact(trace)
    return _TEXT_FORMAT + "\n{extra[_trace]}"


class JsonLineFormatter(logging.Formatter):
    """The gateway's JSON line for a process that never configures loguru: granian's supervisor,
    which starts and stops the workers (named in the log config `app.serve` hands it)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": "-",
        }
        return json.dumps(doc, default=str)


class InterceptHandler(logging.Handler):
    """stdlib -> loguru, keeping the stdlib logger's name and the caller's frame."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame is not None:
            filename = frame.f_code.co_filename
            if depth > 0 and filename != logging.__file__:
                break
            frame, depth = frame.f_back, depth + 1
        logger.bind(logger_name=record.name).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


def logger_level_no(name: str) -> int:
    return logger.level(name.upper()).no


def setup_logging(
    *, level: str, json_lines: bool, secrets: Iterable[str], sink: TextIO | None = None
) -> None:
    redactor = Redactor(secrets)
    logger.remove()
    logger.configure(patcher=redactor, extra={"request_id": "-"})
    logger.add(
        sink or sys.stdout,
        level=level.upper(),
        format=functools.partial(_json_line if json_lines else _text_line, redactor),
        # diagnose=True would print local variables (credentials among them) in tracebacks.
        diagnose=False,
        backtrace=False,
        enqueue=False,
        colorize=False,
    )
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.INFO, force=True)
    for name in _STDLIB_LOGGERS:
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers = [InterceptHandler()]
        stdlib_logger.propagate = False
    # Our middleware writes the access line (route template, no query string, no client IP).
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
