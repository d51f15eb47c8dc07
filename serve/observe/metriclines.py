"""TorchServe's metric lines (``LogMetric``, its ``log`` metrics mode), in ``ts_metrics.log`` and
``model_metrics.log`` (serve/observe/logfiles.py):

    Requests2XX.Count:1.0|#Level:Host|#hostname:myhost,timestamp:1700000000
    HandlerTime.ms:12.34|#ModelName:mnist,Level:Model|#hostname:myhost,timestamp:1700000000

The ones written here are those byoserve measures anyway: the request counters (per request,
serve/observe/access.py), ``WorkerLoadTime`` (per model load in a worker), and ``HandlerTime``
and ``PredictionTime`` (per handler call: one measurement here, two in TorchServe).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence

from serve.observe.logfiles import MODEL_METRICS, TS_METRICS, log_files_on
from serve.observe.observer import Observer

STATUS_COUNTERS = {2: "Requests2XX", 4: "Requests4XX"}  # and the rest: Requests5XX, as there


def metric_line(
    name: str, unit: str, value: float, dimensions: Sequence[tuple[str, str]], host: str
) -> str:
    """One metric as TorchServe's ``LogMetric`` writes it (its value a Java double: 1.0)."""
    labels = ",".join(f"{key}:{label}" for key, label in dimensions)
    return f"{name}.{unit}:{float(value)!r}|#{labels}|#hostname:{host},timestamp:{int(time.time())}"


class MetricLines:
    """Writes metric lines to TorchServe's two metric logs."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()
        self.server = logging.getLogger(TS_METRICS)
        self.models = logging.getLogger(MODEL_METRICS)

    def request(self, status: int) -> None:
        """A request was answered with ``status`` (TorchServe counts every answer)."""
        name = STATUS_COUNTERS.get(status // 100, "Requests5XX")
        self.server.info("%s", metric_line(name, "Count", 1, [("Level", "Host")], self.host))

    def model_loaded(self, model: str, seconds: float) -> None:
        """A worker loaded a model (TorchServe's worker name: here the model in this pid)."""
        worker = f"W-{os.getpid()}-{model}"
        dimensions = [("WorkerName", worker), ("Level", "Host")]
        line = metric_line("WorkerLoadTime", "Milliseconds", round(seconds * 1000), dimensions,
                           self.host)  # fmt: skip
        self.server.info("%s", line)

    def handler_call(self, model: str, seconds: float) -> None:
        """One handler call (a batch) took ``seconds``."""
        millis = round(seconds * 1000, 2)
        dimensions = [("ModelName", model), ("Level", "Model")]
        for name in ("HandlerTime", "PredictionTime"):
            self.models.info("%s", metric_line(name, "ms", millis, dimensions, self.host))


class MetricLinesObserver(Observer):
    """Runtime events as TorchServe's metric lines, beside another observer (the Prometheus
    metrics), which gets every event too."""

    def __init__(self, inner: Observer, lines: MetricLines | None = None) -> None:
        self.inner = inner
        self.lines = lines or MetricLines()

    def __getattribute__(self, name: str) -> object:
        # every event the wrapped observer knows, except those written as lines below
        if name in _OWN or name.startswith("__"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    def model_loaded(self, model: str, seconds: float, memory: int) -> None:
        self.inner.model_loaded(model, seconds, memory)
        self.lines.model_loaded(model, seconds)

    def batch_done(self, model: str, size: int, seconds: float) -> None:
        self.inner.batch_done(model, size, seconds)
        self.lines.handler_call(model, seconds)


_OWN = frozenset({"inner", "lines", "model_loaded", "batch_done"})


def with_metric_lines(observer: Observer | None) -> Observer | None:
    """``observer`` (None: the registry's default), writing TorchServe's metric lines too when
    its log files are written."""
    if not log_files_on():
        return observer
    return MetricLinesObserver(observer or Observer())
