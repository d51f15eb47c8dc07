"""Logging configured once, in the entrypoint: plain text or one JSON object per line.

Every line logged while a thread works for a model names that model (``[name]`` in text, a
``model`` field in JSON), whoever logs it: the server, a built-in handler, or the user's code. A
model's inference thread works for it for life; a request thread from the moment its request
found its model (:func:`log_model`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any

_context = threading.local()
TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s%(model_tag)s: %(message)s"


def log_model(name: str) -> None:
    """The model the current thread now works for ("" for none)."""
    _context.model = name


class ModelFilter(logging.Filter):
    """Adds ``model`` (and ``model_tag``, `` [name]`` or empty) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        model = getattr(_context, "model", "")
        record.model = model
        record.model_tag = f" [{model}]" if model else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, model, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        model = getattr(record, "model", "")
        if model:
            entry["model"] = model
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: int, fmt: str = "text") -> None:
    """Send every log line to stderr at ``level``, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ModelFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
