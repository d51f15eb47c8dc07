"""The model runtime inside one worker: a single inference thread that loads the handler, then
serves batches gathered from a bounded queue.

Request threads (gunicorn's gthread pool) call :meth:`ModelRuntime.submit`, which enqueues the
request and waits for its answer. The inference thread takes the first waiting request, gathers more
until the batch is full or ``max_batch_delay`` has passed since that first request arrived, and
calls the handler once for the whole batch. User code therefore always runs on one thread, as in
TorchServe, and the request threads only wait. The hand-offs use the C-level ``SimpleQueue`` and
a lock per request, not ``queue.Queue`` and futures: on a model that answers in under a
millisecond, their Python-level locking is a visible share of each request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from handlers.contract import Handler, InferenceRequest, InferenceResponse, LoadContext, Result
from serve.codecs import CodecRegistry
from serve.config import ServingConfig
from serve.errors import (
    InferenceTimeoutError,
    ModelError,
    NotReadyError,
    OverloadedError,
    ServingError,
)
from serve.model.directory import ModelDirectory
from serve.observe.observer import Observer
from serve.runtime.batching import BatchPolicy
from serve.runtime.devices import configure_torch, gpu_for_worker

logger = logging.getLogger(__name__)

_STOP = object()

# States of a pending request; changed only under the runtime's state lock.
_WAITING, _RUNNING, _CANCELLED = 0, 1, 2


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class _Pending:
    """One queued request; ``done`` is released once ``response`` or ``error`` is set."""

    request: InferenceRequest
    arrived: float
    state: int = _WAITING
    response: InferenceResponse | None = None
    error: BaseException | None = None
    done: threading.Lock = field(default_factory=_held_lock)

    def finish(self, response: InferenceResponse | None, error: BaseException | None) -> None:
        """Hand the answer to the waiting request thread (the first answer only)."""
        if self.response is None and self.error is None:
            self.response, self.error = response, error
            self.done.release()


class ModelRuntime:
    """Owns one handler in one worker process.

    Args:
        handler: the adapted handler (constructed in the master, loaded here).
        model: the prepared model directory.
        config: the serving configuration.
        codecs: the app's codec registry, handed to the handler at load.
        observer: receives load, batch and queue events (metrics, logs).
        on_load_failure: called when the handler fails to load; the server exits the worker so
            that gunicorn stops with a start-up error. Tests leave the default (stay not ready).
    """

    def __init__(
        self,
        handler: Handler,
        model: ModelDirectory,
        config: ServingConfig,
        codecs: CodecRegistry,
        observer: Observer | None = None,
        on_load_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.handler = handler
        self.model = model
        self.config = config
        self.codecs = codecs
        self.policy = BatchPolicy.choose(config, handler)
        self.observer = observer or Observer()
        self._on_load_failure = on_load_failure
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._capacity = config.queue_size
        self._state = threading.Lock()  # guards the queue bound and each request's state
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.load_error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self, worker_index: int = 0) -> None:
        """Start the inference thread; it loads the handler, then serves. Call after fork."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, args=(worker_index,), name="byoserve-inference", daemon=True
        )
        self._thread.start()
        watchdog = threading.Timer(self.config.startup_timeout, self._check_started)
        watchdog.daemon = True
        watchdog.start()

    def _check_started(self) -> None:
        """SAGEMAKER_STARTUP_TIMEOUT: a model still loading by then counts as failed to load."""
        if self.ready or self.load_error is not None:
            return
        self.load_error = TimeoutError(
            "the model did not load within "
            f"SAGEMAKER_STARTUP_TIMEOUT={self.config.startup_timeout:g} s"
        )
        logger.error("handler %s: %s", self.handler.source, self.load_error)
        if self._on_load_failure is not None:
            self._on_load_failure(self.load_error)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Let queued requests finish, then end the inference thread."""
        if self._thread is None:
            return
        self._stopping.set()
        self._queue.put(_STOP)  # wakes an idle inference thread
        self._thread.join(timeout)

    def submit(self, request: InferenceRequest) -> InferenceResponse:
        """Queue one request and wait for its answer, at most the configured timeout.

        Raises:
            NotReadyError: the model is not loaded in this worker yet.
            OverloadedError: the queue is full (answered 503 with Retry-After).
            InferenceTimeoutError: no answer within the timeout.
            ServingError: whatever the handler failed this request with.
        """
        self.ensure_ready()
        pending = _Pending(request, time.monotonic())
        with self._state:
            depth = self._queue.qsize()
            if depth < self._capacity:
                self._queue.put(pending)
        if depth >= self._capacity:
            self.observer.rejected()
            raise OverloadedError(
                "the server is at capacity; retry shortly", headers={"Retry-After": "1"}
            )
        self.observer.queue_depth(depth + 1)
        if not pending.done.acquire(timeout=self.config.timeout):
            with self._state:
                if pending.state == _WAITING:  # never started: the inference thread skips it
                    pending.state = _CANCELLED
            raise InferenceTimeoutError(
                f"no answer within {self.config.timeout:g} s "
                "(raise SAGEMAKER_MODEL_SERVER_TIMEOUT for slower models)"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        return pending.response

    def ensure_ready(self) -> None:
        """Raise NotReadyError (503) unless the model is loaded in this worker."""
        if self.ready:
            return
        if self.load_error is not None:
            raise NotReadyError("the model failed to load; see the server log")
        raise NotReadyError("the model is still loading")

    def _run(self, worker_index: int) -> None:
        if not self._load(worker_index):
            return
        while True:
            batch = self._gather()
            if batch is None:
                return
            self.observer.queue_depth(self._queue.qsize())
            try:
                self._execute(batch)
            except BaseException as exc:  # the thread must outlive anything a batch does
                logger.error("batch of %d failed: %s", len(batch), exc, exc_info=exc)
                for pending in batch:
                    pending.finish(None, ModelError("the batch failed"))

    def _load(self, worker_index: int) -> bool:
        started = time.monotonic()
        gpu_id = gpu_for_worker(worker_index)
        configure_torch(self.config.torch_threads)
        context = LoadContext(
            model_dir=self.model.root,
            manifest=self.model.manifest,
            gpu_id=gpu_id,
            batch_size=self.policy.max_batch_size,
            codecs=self.codecs,
            allow_pickled_models=self.config.allow_pickled_models,
            options=self.handler.options,
        )
        try:
            self.handler.load(context)
        except BaseException as exc:  # a load failure of any kind must be reported, not lost
            self.load_error = exc
            logger.error("handler %s failed to load: %s", self.handler.source, exc, exc_info=exc)
            if self._on_load_failure is not None:
                self._on_load_failure(exc)
            return False
        if self.load_error is not None:
            return False
        elapsed = time.monotonic() - started
        self.observer.model_loaded(elapsed)
        logger.info(
            "model loaded from %s in %.2f s (device %s, batch size %d, delay %.1f ms)",
            self.handler.source,
            elapsed,
            "cpu" if gpu_id is None else f"cuda:{gpu_id}",
            self.policy.max_batch_size,
            self.policy.max_delay * 1000,
        )
        self._ready.set()
        return True

    def _gather(self) -> list[_Pending] | None:
        """Wait for a first request, then gather more until full or the delay has passed."""
        batch: list[_Pending] = []
        while not batch:
            if self._stopping.is_set() and self._queue.empty():
                return None
            item = self._queue.get()
            if item is _STOP:
                continue
            assert isinstance(item, _Pending)
            if self._claim(item):
                batch.append(item)
        deadline = batch[0].arrived + self.policy.max_delay
        while len(batch) < self.policy.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                break
            assert isinstance(item, _Pending)
            if self._claim(item):
                batch.append(item)
        return batch

    def _claim(self, pending: _Pending) -> bool:
        """Mark a queued request as running, unless its caller has given up on it."""
        with self._state:
            if pending.state != _WAITING:
                return False
            pending.state = _RUNNING
            return True

    def _execute(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        results = self._call_handler(batch)
        self.observer.batch_done(len(batch), time.monotonic() - started)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._log_failure(pending.request, result)
                pending.finish(None, result)
            else:
                pending.finish(result, None)

    def _call_handler(self, batch: Sequence[_Pending]) -> list[Result]:
        requests = [pending.request for pending in batch]
        try:
            results = list(self.handler.handle(requests))
            if len(results) != len(requests):
                raise ModelError(
                    f"the handler returned {len(results)} results for {len(requests)} requests"
                )
            return results
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            # One bad input must fail only its own request: retry each alone.
            logger.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            return [self._call_handler([pending])[0] for pending in batch]

    @staticmethod
    def _log_failure(request: InferenceRequest, exc: BaseException) -> None:
        cause = exc.__cause__ or exc
        if isinstance(exc, ServingError) and exc.status_code < 500:
            logger.info("request %s rejected: %s", request.request_id, exc)
        else:
            logger.error("request %s failed: %s", request.request_id, exc, exc_info=cause)
