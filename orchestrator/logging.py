"""Structured JSON logs: one JSON object per line, with the workflow a line is about.

``sagas server start-dev --log-format json`` installs :class:`JsonFormatter` on the root handler.
The history service and the matching processor set :data:`LOG_CONTEXT` (namespace, workflow id,
run id, shard) while they work on a run, so every line logged meanwhile, by any ``sagas.*``
logger, carries them; ``extra={"workflow_id": ...}`` on a call works too.

    {"time": "2026-11-23T16:50:01.123Z", "level": "WARNING", "logger": "sagas.matching",
     "message": "...", "namespace": "default", "workflow_id": "trip-1", "run_id": "...", "shard": 3}
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

CONTEXT_FIELDS = ("namespace", "workflow_id", "run_id", "shard")

LOG_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("sagas_log_context", default=None)
"""The run the current task works on (set by ``HistoryService.update`` and the matching processor)."""


def set_log_context(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Set the context of the current task; returns the token to :func:`reset_log_context` with."""
    return LOG_CONTEXT.set(fields)


def reset_log_context(token: contextvars.Token[dict[str, Any] | None]) -> None:
    LOG_CONTEXT.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, context fields,
    ``exc_info`` when there is an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = LOG_CONTEXT.get()
        if ctx:
            for key in CONTEXT_FIELDS:
                if ctx.get(key) is not None:
                    out[key] = ctx[key]
        for key in CONTEXT_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: int | str = logging.WARNING, fmt: str = "text") -> None:
    """Configure the root logger: ``fmt`` = ``text`` (the default format) or ``json``."""
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def json_logging_enabled() -> bool:
    """True when the root logger writes JSON (then uvicorn is told to leave logging alone)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
