"""Prometheus metrics, correct across gunicorn's worker processes.

Each worker writes its values to memory-mapped files in one directory (prometheus_client's
multiprocess mode); ``GET /metrics`` in any worker reads every worker's files, so the numbers are
the server's, not one worker's. The directory is chosen, and ``PROMETHEUS_MULTIPROC_DIR`` set, in
the master before the first metric exists; the master forgets a worker's live gauges when it exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from serve.observe.observer import Observer

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name; it reads it itself
PREFIX = "byoserve"
SELF_ROUTE = "metrics"  # scrapes are not counted, so scraping does not change what it reports
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STREAM_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
PIECE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
BYTE_BUCKETS = tuple(float(4**n) for n in range(3, 14))  # 64 B .. 64 MiB


def prepare_multiprocess_dir(configured: Path | None) -> tuple[Path, bool]:
    """Empty (or create) the directory worker processes share, and point prometheus_client at it.

    Must run in the master before any metric is created. Returns the directory and whether it
    is a temporary one this server owns (and removes at exit).
    """
    if configured is None:
        path, owned = Path(tempfile.mkdtemp(prefix="byoserve-metrics-")), True
    else:
        path, owned = configured, False
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # values of an earlier run would be added to ours
            stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    if "prometheus_client.values" in sys.modules:
        # Imported before the variable was set: switch the value class now, before any metric.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path, owned


class PrometheusObserver(Observer):
    """Records runtime and HTTP events as Prometheus metrics.

    Args:
        multiprocess_dir: the directory shared by the worker processes (see
            :func:`prepare_multiprocess_dir`); None keeps the metrics in this process only
            (tests, single-process use).
        owned: remove ``multiprocess_dir`` on :meth:`close`.
    """

    def __init__(self, multiprocess_dir: Path | None = None, owned: bool = False) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        self._owned = owned
        # In multiprocess mode the values live in files; a registry is built per scrape.
        self._registry = None if multiprocess_dir is not None else CollectorRegistry()
        registry: Any = self._registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests answered, by route, status and model.",
            ["route", "status", "model"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from request start to response, by route and model.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            f"{PREFIX}_errors",
            "Requests answered with an error, by error code and model.",
            ["code", "model"],
            registry=registry,
        )
        self.rejections = Counter(
            f"{PREFIX}_rejected",
            "Requests turned away with 503 by the model's queue, by model and cause (wait: the "
            "wait ahead did not fit the timeout; memory: the queue's hard bound was reached).",
            ["model", "cause"],
            registry=registry,
        )
        self.wait = Gauge(
            f"{PREFIX}_expected_wait_seconds",
            "The wait a request arriving now can expect in the model's queue (the longest over "
            "live workers), as each batch starts.",
            ["model"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Requests per handler call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_latency = Histogram(
            f"{PREFIX}_batch_duration_seconds",
            "Time of one handler call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue = Gauge(
            f"{PREFIX}_queue_depth",
            "Requests waiting for the model, summed over live workers.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.load_time = Gauge(
            f"{PREFIX}_model_load_seconds",
            "Time a worker took to load the model (the slowest worker).",
            ["model"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.model_workers = Gauge(
            f"{PREFIX}_model_workers",
            "Worker processes that hold the model loaded.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.model_memory = Gauge(
            f"{PREFIX}_model_memory_bytes",
            "Resident memory the model's load added, summed over the workers that hold it.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.model_events = Counter(
            f"{PREFIX}_model_events",
            "Model loads, failed loads and unloads, by model.",
            ["model", "event"],
            registry=registry,
        )
        self.ready_workers = Gauge(
            f"{PREFIX}_ready_workers",
            "Worker processes that have loaded their start-up models and take requests.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.stream_first_piece = Histogram(
            f"{PREFIX}_stream_first_piece_seconds",
            "Time from a streamed answer's request to its first piece, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stream_duration = Histogram(
            f"{PREFIX}_stream_duration_seconds",
            "Time from a streamed answer's request to its end, by model.",
            ["model"],
            buckets=STREAM_BUCKETS,
            registry=registry,
        )
        self.stream_pieces = Histogram(
            f"{PREFIX}_stream_pieces",
            "Pieces per streamed answer, by model.",
            ["model"],
            buckets=PIECE_BUCKETS,
            registry=registry,
        )
        self.stream_bytes = Histogram(
            f"{PREFIX}_stream_bytes",
            "Bytes per streamed answer, by model.",
            ["model"],
            buckets=BYTE_BUCKETS,
            registry=registry,
        )
        self.streams_open = Gauge(
            f"{PREFIX}_streams_open",
            "Streamed answers being written, summed over live workers.",
            ["model"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.streams_ended = Counter(
            f"{PREFIX}_streams",
            "Streamed answers ended, by model and outcome (completed, failed, client_gone).",
            ["model", "outcome"],
            registry=registry,
        )
        self._children: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._per_model: dict[str, tuple[Any, Any, Any, Any]] = {}
        self._connections: Collector | None = None

    @classmethod
    def create(cls, configured_dir: Path | None) -> PrometheusObserver:
        """The server's observer: multiprocess mode in a fresh (or emptied) directory."""
        path, owned = prepare_multiprocess_dir(configured_dir)
        logger.debug("metrics directory: %s", path)
        return cls(path, owned)

    def model_loaded(self, model: str, seconds: float, memory: int) -> None:
        self.load_time.labels(model).set(seconds)
        self.model_workers.labels(model).set(1)
        self.model_memory.labels(model).set(memory)
        self.model_events.labels(model, "loaded").inc()

    def model_load_failed(self, model: str) -> None:
        self.model_events.labels(model, "failed").inc()

    def model_unloaded(self, model: str, seconds: float, memory: int) -> None:
        self.model_workers.labels(model).set(0)
        self.model_memory.labels(model).set(0)
        self.queue.labels(model).set(0)
        self.wait.labels(model).set(0)
        self.model_events.labels(model, "unloaded").inc()
        self._per_model.pop(model, None)
        for key in [key for key in self._children if key[2] == model]:
            del self._children[key]

    def worker_ready(self) -> None:
        self.ready_workers.set(1)

    def batch_done(self, model: str, size: int, seconds: float) -> None:
        _, sizes, latency, _ = self._model_children(model)
        sizes.observe(size)
        latency.observe(seconds)

    def queue_depth(self, model: str, depth: int) -> None:
        self._model_children(model)[0].set(depth)

    def _model_children(self, model: str) -> tuple[Any, Any, Any, Any]:
        children = self._per_model.get(model)
        if children is None:
            children = (
                self.queue.labels(model),
                self.batch_size.labels(model),
                self.batch_latency.labels(model),
                self.wait.labels(model),
            )
            self._per_model[model] = children
        return children

    def rejected(self, model: str, cause: str) -> None:
        self.rejections.labels(model, cause).inc()

    def expected_wait(self, model: str, seconds: float) -> None:
        self._model_children(model)[3].set(seconds)

    def request_done(
        self, route: str, status: int, seconds: float, error: str | None, model: str = ""
    ) -> None:
        if route == SELF_ROUTE:
            return
        counter, histogram = self._children_for(route, status, model)
        counter.inc()
        histogram.observe(seconds)
        if error is not None:
            self.errors.labels(error, model).inc()

    def stream_opened(self, model: str) -> None:
        self.streams_open.labels(model).inc()

    def stream_done(
        self,
        model: str,
        outcome: str,
        first_piece: float | None,
        pieces: int,
        size: int,
        seconds: float,
    ) -> None:
        self.streams_open.labels(model).dec()
        self.streams_ended.labels(model, outcome).inc()
        if first_piece is not None:
            self.stream_first_piece.labels(model).observe(first_piece)
        self.stream_pieces.labels(model).observe(pieces)
        self.stream_bytes.labels(model).observe(size)
        self.stream_duration.labels(model).observe(seconds)

    def _children_for(self, route: str, status: int, model: str) -> tuple[Any, Any]:
        # labels() costs a lock and a tuple build per call; routes and models are few.
        key = (route, status, model)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, str(status), model),
                self.latency.labels(route, model),
            )
            self._children[key] = children
        return children

    def track_connections(self, held: Callable[[], list[tuple[int, int]]]) -> None:
        # a Collector but for its base class: this module imports prometheus_client only where
        # it uses it
        self._connections = cast("Collector", HeldConnections(held))
        if self._registry is not None:
            self._registry.register(self._connections)

    def worker_exited(self, pid: int) -> None:
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self.multiprocess_dir))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._owned and self.multiprocess_dir is not None:
            shutil.rmtree(self.multiprocess_dir, ignore_errors=True)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self._registry
        if registry is None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                registry, path=str(self.multiprocess_dir)
            )
            if self._connections is not None:
                registry.register(self._connections)
        return generate_latest(registry), CONTENT_TYPE_LATEST


class HeldConnections:
    """``byoserve_worker_connections``: the client connections each ready worker holds on the
    serving port, by its slot, read at scrape time from the memory the workers share
    (serve/process/worker.py ``ConnectionShares``), so it costs the serving path nothing."""

    def __init__(self, held: Callable[[], list[tuple[int, int]]]) -> None:
        self.held = held

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            f"{PREFIX}_worker_connections",
            "Client connections a ready worker holds on the serving port, by worker slot.",
            labels=["slot"],
        )
        for slot, count in self.held():
            family.add_metric([str(slot)], count)
        yield family
