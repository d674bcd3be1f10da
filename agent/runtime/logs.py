"""Structured logging: one JSON object per line on stderr (journald keeps it).

Personal data never goes into a log record. Callers log identifiers that are not
personal (lock ids, grant ids, sequence numbers, reasons); the formatter only
serialises the message and the whitelisted ``extra`` fields it is given.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON line: ts, level, logger, msg and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = (
                    value if isinstance(value, str | int | float | bool | None) else str(value)
                )
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and message only: tracebacks can carry local
            # values, and exception texts in this project never hold personal data.
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Route the root logger to JSON lines on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
