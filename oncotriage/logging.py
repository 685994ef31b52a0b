"""Logging setup shared by every command: rich console logs, or JSON lines for services."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers. Never put patient identifiers in messages."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str | None = None, json_logs: bool | None = None) -> None:
    """Configure the root logger once.

    Args:
        level: log level name; defaults to ``ONCOTRIAGE_LOG_LEVEL`` or ``INFO``.
        json_logs: JSON lines instead of rich console output; defaults to ``ONCOTRIAGE_LOG_JSON``.
    """
    level = (level or os.environ.get("ONCOTRIAGE_LOG_LEVEL", "INFO")).upper()
    if json_logs is None:
        json_logs = os.environ.get("ONCOTRIAGE_LOG_JSON", "").lower() in {"1", "true", "yes"}
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if json_logs:
        stream_handler = logging.StreamHandler(sys.stderr)
        stream_handler.setFormatter(JsonFormatter())
        root.addHandler(stream_handler)
    else:
        from rich.logging import RichHandler

        rich_handler = RichHandler(show_path=False, rich_tracebacks=False)
        rich_handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(rich_handler)
    root.setLevel(level)
