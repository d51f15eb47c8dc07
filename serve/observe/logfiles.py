"""TorchServe's log files, written by ``serve --start`` (TorchServe's frontend ``log4j2.xml``):

- ``ts_log.log`` (``mms_log.log`` for MMS): every line, as on the console,
  ``%d{ISO8601} [%-5p] %t %c - %m%n``;
- ``model_log.log``: what the models say: every line logged while a thread works for a model
  (serve/observe/logs.py tags them: the handler's own, its load failure with the traceback), and
  whatever is written to stdout and stderr (``print`` in a handler), as TorchServe's frontend
  logs a worker's output: ``%d{ISO8601} [%-5p] W-<pid>-<model>-stdout MODEL_LOG - <line>``;
- ``access_log.log``: one line per request, ``%d{ISO8601} - %m%n``
  (serve/observe/access.py);
- ``ts_metrics.log`` (``mms_metrics.log``) and ``model_metrics.log``: metric lines,
  ``%d{ISO8601} - %m%n``, in ``METRICS_LOCATION`` (serve/observe/metriclines.py).

As in log4j2, the lines of the access, model and metric loggers go to the server log and the
console too. Every line of a message (a traceback) starts with the prefix, as TorchServe's
frontend writes each line a worker prints, so a tool reads the files line by line. The files are
opened in the master before the workers fork and appended to by every process; they are reopened
when moved (logrotate), not rotated here.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from dataclasses import dataclass
from logging.handlers import WatchedFileHandler
from pathlib import Path
from typing import TextIO

from serve.observe.logs import ModelFilter

ACCESS_LOG = "ACCESS_LOG"
MODEL_LOG = "MODEL_LOG"
TS_METRICS = "TS_METRICS"
MODEL_METRICS = "MODEL_METRICS"
LINE_LOGGERS = (ACCESS_LOG, TS_METRICS, MODEL_METRICS)  # their own files; never a model's line
LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}  # log4j's names


class TorchServeFormatter(logging.Formatter):
    """log4j2's ``%d{ISO8601} [%-5p] %t %c - %m%n``, each line of a message prefixed."""

    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s,%03d"

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        prefix = self.prefix(record)
        return "\n".join(f"{prefix}{line}" for line in text.splitlines() or [""])

    def prefix(self, record: logging.LogRecord) -> str:
        """What starts each line: time, level, thread and logger."""
        level = LEVELS.get(record.levelname, record.levelname)
        thread = "_".join(str(record.threadName).split())  # one word, as Java's names are
        return f"{self.formatTime(record)} [{level:<5}] {thread} {record.name} - "


class ModelLogFormatter(TorchServeFormatter):
    """TorchServe's model log: the thread is the model's worker and its stream, the logger
    ``MODEL_LOG`` (``W-9000-mnist_1.0-stdout MODEL_LOG`` there; the pid for the port here)."""

    def prefix(self, record: logging.LogRecord) -> str:
        level = LEVELS.get(record.levelname, record.levelname)
        model = getattr(record, "model", "")
        stream = "stderr" if record.levelno >= logging.WARNING else "stdout"
        worker = f"W-{record.process}-{model}-{stream}" if model else f"W-{record.process}-{stream}"
        return f"{self.formatTime(record)} [{level:<5}] {worker} {MODEL_LOG} - "


class LineFormatter(TorchServeFormatter):
    """The access and metric logs: ``%d{ISO8601} - %m%n``."""

    def prefix(self, record: logging.LogRecord) -> str:
        return f"{self.formatTime(record)} - "


class ModelLines(ModelFilter):
    """The model log's lines: those of a thread working for a model, and the output captured
    from stdout and stderr; not the access and metric lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if record.name in LINE_LOGGERS:
            return False
        return bool(getattr(record, "model", "")) or record.name == MODEL_LOG


class OutputLines(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` sent to the model log a line at a time (TorchServe logs a
    worker's stdout as INFO, its stderr as WARN); ``fileno`` is the stream's own, so code that
    writes to the descriptor still reaches it."""

    def __init__(self, logger: logging.Logger, level: int, original: TextIO) -> None:
        super().__init__()
        self._logger = logger
        self._level = level
        self._original = original
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        local = self._local
        if getattr(local, "busy", False):  # logging itself reports a failure to stderr
            return self._original.write(text)
        pending = getattr(local, "pending", "") + text
        *lines, local.pending = pending.split("\n")
        local.busy = True
        try:
            for line in lines:
                self._logger.log(self._level, "%s", line.rstrip("\r"))
        finally:
            local.busy = False
        return len(text)

    def flush(self) -> None:
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            self.write(pending + "\n")

    def fileno(self) -> int:
        return self._original.fileno()

    def isatty(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class LogFiles:
    """Where TorchServe's files go and what the server and metrics logs are called.

    Attributes:
        logs: ``LOG_LOCATION`` (default ``./logs``): the server, model and access logs.
        metrics: ``METRICS_LOCATION`` (default ``./logs``): the metric logs.
        server_log: ``ts_log.log``, or MMS's ``mms_log.log``.
        metrics_log: ``ts_metrics.log``, or MMS's ``mms_metrics.log``.
    """

    logs: Path
    metrics: Path
    server_log: str = "ts_log.log"
    metrics_log: str = "ts_metrics.log"

    @classmethod
    def mms(cls, logs: Path, metrics: Path) -> LogFiles:
        """MMS 1.x's names."""
        return cls(logs, metrics, "mms_log.log", "mms_metrics.log")

    @property
    def server_path(self) -> Path:
        """The server log: the console's copy."""
        return self.logs / self.server_log


def _file(path: Path, formatter: logging.Formatter, *filters: logging.Filter) -> logging.Handler:
    handler = WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter)
    for item in filters:
        handler.addFilter(item)
    return handler


def configure_log_files(files: LogFiles, level: int) -> None:
    """Write TorchServe's log files (creating them and their directories now, as TorchServe
    does at start), the console in the same shape, and stdout/stderr into the model log.

    The console is left out when stdout is the server log already (``serve --start`` in the
    background sends its output there), so that no line is written twice.

    Raises:
        OSError: a directory or file cannot be created.
    """
    for directory in (files.logs, files.metrics):
        directory.mkdir(parents=True, exist_ok=True)
    console = sys.__stdout__ or sys.stdout
    server = _file(files.server_path, TorchServeFormatter(), ModelFilter())
    handlers: list[logging.Handler] = [server]
    if not _same_file(console, files.server_path):
        stream = logging.StreamHandler(console)
        stream.setFormatter(TorchServeFormatter())
        stream.addFilter(ModelFilter())
        handlers.append(stream)
    handlers.append(_file(files.logs / "model_log.log", ModelLogFormatter(), ModelLines()))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    lines = LineFormatter()
    for name, path in (
        (ACCESS_LOG, files.logs / "access_log.log"),
        (TS_METRICS, files.metrics / files.metrics_log),
        (MODEL_METRICS, files.metrics / "model_metrics.log"),
    ):
        logger = logging.getLogger(name)
        logger.handlers[:] = [_file(path, lines)]
        logger.setLevel(logging.INFO)  # written whatever the server's level, as TorchServe's
    output = logging.getLogger(MODEL_LOG)
    sys.stdout = OutputLines(output, logging.INFO, console)
    sys.stderr = OutputLines(output, logging.WARNING, sys.__stderr__ or sys.stderr)


def log_files_on() -> bool:
    """Whether TorchServe's log files are written (:func:`configure_log_files` ran)."""
    return bool(logging.getLogger(ACCESS_LOG).handlers)


def _same_file(stream: TextIO, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
