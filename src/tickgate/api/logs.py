"""Structured logs (structlog): JSON lines when stderr is not a terminal, readable lines when it is.

Secrets never reach a log line: request logs carry path and status only (never query strings, which may
hold ``?key=``), and a last processor masks any registered secret that slipped into an event anyway."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
_CONFIGURED = False


def register_secret(*values: str | None) -> None:
    """Strings to mask wherever they appear in a log record or event (tokens, admin key) — whichever
    handler ends up writing it (ours, a test's, a library's)."""
    with _LOCK:
        _SECRETS.update(v for v in values if v and len(v) >= 6)
        _install_record_factory()


_FACTORY_INSTALLED = False


def _install_record_factory() -> None:
    global _FACTORY_INSTALLED  # noqa: PLW0603 - once per process
    if _FACTORY_INSTALLED:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to the handler to report
            return record
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(factory)
    _FACTORY_INSTALLED = True


_QUERY_SECRET = re.compile(r"([?&](?:key|api_key|token|access_token)=)[^&\s\"']+", re.IGNORECASE)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with registered secrets and any ``key=``/``token=`` query value masked."""
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1***", text)
    for secret in (*_SECRETS, *extra):
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def _mask(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k, v in list(event.items()):
        if isinstance(v, str):
            event[k] = redact(v)
    return event


class _RedactingFilter(logging.Filter):
    """Masks secrets in stdlib records too (uvicorn, websockets, the feed client)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def configure_logging(level: int = logging.INFO, *, json: bool | None = None) -> None:
    """Configure structlog and route stdlib logging through the same renderer (idempotent)."""
    global _CONFIGURED  # noqa: PLW0603 - one root handler per process
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        # filter first: a disabled level (the access log under --log-level warning) costs one check, not a
        # timestamp and the masking of every field of every request
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _mask, renderer],
    )
    root = logging.getLogger()
    if not _CONFIGURED:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        handler.addFilter(_RedactingFilter())
        root.addHandler(handler)
        _CONFIGURED = True
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # websockets logs at DEBUG the client's request line (Dhan's token travels in the URL) and every frame
    # either side sends or receives (the feed's thousands a second): ours logs requests, without queries
    logging.getLogger("websockets").setLevel(max(level, logging.INFO))
    # aiosqlite logs every database operation at DEBUG from its worker thread: noise in a debug session
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))
