"""Structured JSON logs; the request id rides in a context variable bound per RPC, and the
current span's trace id is added to every line when traces are on.

Configured once by each service's ``__main__`` via ``configure()``, never at import.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from llmgw.kit import tracing
from llmgw.kit.redact import mask_secrets

__all__ = ["configure", "get_logger", "mask_secrets", "mask_stdlib_logging"]


def _mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask_secrets(value)
    return event


class _MaskingFormatter(logging.Formatter):
    """For the records of other libraries (grpc, aiokafka, asyncio …) that reach stdlib logging:
    the whole formatted line, traceback included, goes through the same masking as ours."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def mask_stdlib_logging(level: str = "info") -> None:
    """Other libraries' stdlib log records to stderr, through the same masking as ours."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_MaskingFormatter("%(levelname)s %(name)s %(message)s"))


def _trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's trace and span ids on every line logged inside it (traces on)."""
    if tracing.enabled():
        trace_id, span_id = tracing.current_ids()
        if trace_id:
            event.setdefault("trace_id", trace_id)
            event.setdefault("span_id", span_id)
    return event


def configure(level: str = "info", *, service: str) -> None:
    mask_stdlib_logging(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask,  # after the traceback is text: a secret in an exception message is masked too
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
