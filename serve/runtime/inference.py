"""One model in one worker: an inference thread that loads the model, then serves the batches
its queue gathers (serve/runtime/batching.py).

Request threads (gunicorn's gthread pool) call :meth:`ModelRuntime.submit`, which queues the
request and waits for its answer. The inference thread calls the handler once per batch, and
between batches takes the next piece of each open stream a handler returned
(serve/runtime/streams.py), so that several streams make progress together. User code (its
import, its load, every batch, every piece) therefore runs on this one thread, as in TorchServe,
so handlers need not be thread-safe; the thread is bound to the model's namespace
(serve/model/namespace.py), so bare-name imports made on it find the model's own files.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from serve.codecs import CodecRegistry
from serve.config import ServingConfig
from serve.contract import Handler, InferenceRequest, InferenceResponse, LoadContext, Result
from serve.errors import (
    InferenceTimeoutError,
    InsufficientStorageError,
    ModelError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    ServingError,
    ShuttingDownError,
)
from serve.model.directory import ModelDirectory
from serve.model.namespace import ModelNamespace
from serve.model.settings import Registration
from serve.observe.logs import log_model
from serve.observe.observer import Observer
from serve.runtime.batching import (
    MEMORY,
    WAIT,
    BatchQueue,
    Pending,
    QueueClosedError,
    QueueFullError,
)
from serve.runtime.devices import configure_torch, gpu_for_worker
from serve.runtime.memory import release_memory, rss_bytes
from serve.runtime.streams import Channel, PulledStream

logger = logging.getLogger(__name__)

# One load at a time in a worker: two models' bare-name imports never meet (see
# serve/model/namespace.py), and the memory a load adds is that model's own.
LOAD_LOCK = threading.Lock()
_OUT_OF_MEMORY = ("out of memory", "cuda error: out of memory", "cublas_status_alloc_failed")
# How long the inference thread waits for a request (or a stream's client to take a piece: it
# wakes it) while every open stream waits for its client.
THROTTLED_POLL = 0.05


@dataclass(frozen=True, slots=True)
class OpenedModel:
    """A model ready to load: its directory, its handler (imported), the namespace of its files."""

    directory: ModelDirectory
    handler: Handler
    namespace: ModelNamespace


Opener = Callable[[], OpenedModel]


def out_of_memory(exc: BaseException) -> bool:
    """A MemoryError, or an error whose text says the device ran out of memory (CUDA)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _OUT_OF_MEMORY) or isinstance(
        exc.__cause__, MemoryError
    )


class ModelRuntime:
    """Owns one model's handler and queue in one worker process.

    Args:
        name: the model's name (routing, metrics, logs).
        opener: gives the model's directory, handler and namespace; called on the inference
            thread, so a handler imported there runs its module code on that thread.
        config: the serving configuration.
        codecs: the app's codec registry, handed to the handler at load.
        observer: receives load, batch and queue events (metrics, logs).
        registered: what it was given when it was added (see serve/model/settings.py).
        generation: which registration of ``name`` this is (see serve/runtime/shared.py).
        on_loaded: called on the inference thread once the model serves.
        on_failed: called when the model fails to load (or does not load in time); it logs the
            failure (:meth:`log_failure`), else the runtime does.
    """

    def __init__(
        self,
        name: str,
        opener: Opener,
        config: ServingConfig,
        codecs: CodecRegistry,
        observer: Observer | None = None,
        *,
        registered: Registration | None = None,
        generation: int = 0,
        on_loaded: Callable[[ModelRuntime], None] | None = None,
        on_failed: Callable[[ModelRuntime, BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.generation = generation
        self.config = config
        self.codecs = codecs
        self.observer = observer or Observer()
        self.registered = registered or Registration()
        self.settings = self.registered.settings(config, {})  # until loaded
        self.handler: Handler | None = None
        self.source = name  # the handler's file once it is known, for messages
        self.namespace: ModelNamespace | None = None
        self.memory = 0  # RSS this model's load added to the worker
        self.last_used = time.monotonic()
        self.busy_since: float | None = None  # when the handler call now running began
        self.load_error: BaseException | None = None
        self._opener = opener
        self._on_loaded = on_loaded
        self._on_failed = on_failed
        self._queue = BatchQueue(self.settings.queue_size, config.queue_max_bytes)
        self._streams: list[PulledStream] = []  # the inference thread's own
        self._open_streams = 0  # every stream whose client has not finished with it
        self._channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._streams_lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def load_status(self) -> int:
        """The HTTP status a failed load is reported with: 507 when memory ran out, else 500."""
        return InsufficientStorageError.status_code if self._out_of_memory() else 500

    def _out_of_memory(self) -> bool:
        return self.load_error is not None and out_of_memory(self.load_error)

    def start(self, worker_index: int = 0) -> None:
        """Start the inference thread; it loads the model, then serves. Call after fork."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run,
            args=(worker_index,),
            name=f"byoserve-inference-{self.name}"[:60],
            daemon=True,
        )
        self._thread.start()
        self._watchdog = threading.Timer(self.config.startup_timeout, self._check_started)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _check_started(self) -> None:
        """SAGEMAKER_STARTUP_TIMEOUT: a model still loading by then counts as failed to load."""
        if self.ready or self.load_error is not None:
            return
        self._fail(
            TimeoutError(
                "the model did not load within "
                f"SAGEMAKER_STARTUP_TIMEOUT={self.config.startup_timeout:g} s"
            )
        )

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def overdue_for(self, now: float) -> float:
        """How long the handler call now running has overrun the model's timeout; 0 when none
        has (or none runs). While it is over 0 the model is stuck: nothing queued behind the
        call can be answered in time (serve/runtime/health.py)."""
        started = self.busy_since
        if started is None:
            return 0.0
        return max(0.0, now - started - self.settings.timeout)

    def hung_for(self, now: float) -> float:
        """How long the handler call now running has overrun the model's timeout plus
        BYOSERVE_HUNG_GRACE; 0 when none has (or none runs)."""
        return max(0.0, self.overdue_for(now) - self.config.hung_grace)

    def stuck_error(self, now: float) -> NotReadyError:
        """The 503 a request for this model gets while a handler call has overrun its timeout:
        at once, rather than after waiting out its own timeout behind that call."""
        started = self.busy_since
        ran = now - started if started is not None else self.settings.timeout
        return NotReadyError(
            f"model {self.name!r} is stuck: a handler call has run {ran:.1f} s, past its "
            f"{self.settings.timeout:g} s timeout; retry shortly",
            headers={"Retry-After": "1"},
        )

    def shed(self, now: float) -> int:
        """Answer every request queued for this model with :meth:`stuck_error` now; returns
        how many."""
        return self._queue.shed(lambda: self.stuck_error(now))

    def stop(self, timeout: float = 5.0) -> bool:
        """Take no more requests, let the queued ones finish, end the inference thread; True when
        it ended within ``timeout``."""
        self._queue.close()
        self._stop_watchdog()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _stop_watchdog(self) -> None:
        """The load ended (or never will): the start-up timer's thread need not wait any more."""
        if self._watchdog is not None:
            self._watchdog.cancel()

    def release(self) -> int:
        """After :meth:`stop`: drop the handler and the model's modules, hand the memory back.
        Returns how much the worker's RSS went down."""
        before = rss_bytes()
        self.handler = None
        if self.namespace is not None:
            self.namespace.close()
            self.namespace = None
        self._opener = _released
        release_memory()
        return max(0, before - rss_bytes())

    def submit(self, request: InferenceRequest) -> InferenceResponse:
        """Queue one request and wait for its answer, at most the model's timeout. Check
        :meth:`ensure_ready` first (the request pipeline does, before it reads the body).

        Raises:
            ModelNotFoundError: the model is being unloaded.
            OverloadedError: the wait ahead does not fit the timeout, or the queue's hard
                bound is reached (serve/runtime/batching.py; answered 503 with Retry-After).
            InferenceTimeoutError: no answer within the timeout.
            ServingError: whatever the handler failed this request with.
        """
        self.last_used = time.monotonic()
        timeout = self.settings.timeout
        try:
            pending, depth = self._queue.put(
                request, self._open_channel, self._open_streams, timeout
            )
        except QueueFullError as full:
            self.observer.rejected(self.name, full.cause)
            raise OverloadedError(_REFUSALS[full.cause], full.retry_after) from None
        except QueueClosedError:
            raise ModelNotFoundError(f"model {self.name!r} is being unloaded") from None
        self.observer.queue_depth(self.name, depth + 1)
        if not pending.done.acquire(timeout=timeout) and pending.abandon():
            self._queue.cancel(pending)  # not started: skipped; started: its stream is dropped
            raise InferenceTimeoutError(
                f"no answer within {timeout:g} s "
                "(raise SAGEMAKER_MODEL_SERVER_TIMEOUT for slower models)"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.response is not None
        return pending.response

    @property
    def open_streams(self) -> int:
        """Streams in this worker whose clients are still taking pieces."""
        return self._open_streams

    def _open_channel(self) -> Channel:
        channel = Channel(
            self.settings.timeout, self._stream_closed, self._queue.wake, self._piece_made
        )
        with self._streams_lock:
            self._open_streams += 1
            self._channels.add(channel)
        return channel

    def end_streams(self) -> int:
        """End every open stream as a failure (the server is stopping and its graceful time is
        nearly up); returns how many were ended."""
        with self._streams_lock:
            channels = [channel for channel in self._channels if not channel.closed]
        for channel in channels:
            channel.leave_with(ShuttingDownError("the server stopped before the stream ended"))
        return len(channels)

    def _piece_made(self) -> None:
        """A handler that pushes pieces is not hung while they come: each restarts the clock of
        the hung-worker check (:meth:`hung_for`)."""
        if self.busy_since is not None:
            self.busy_since = time.monotonic()

    def _stream_closed(self) -> None:
        with self._streams_lock:
            self._open_streams -= 1

    def ensure_ready(self) -> None:
        """Raise NotReadyError (503) unless the model is loaded in this worker and no handler
        call has overrun its timeout on its inference thread (:meth:`stuck_error`)."""
        if self._ready.is_set():
            started = self.busy_since
            if started is None:
                return
            now = time.monotonic()
            if now - started <= self.settings.timeout:
                return
            raise self.stuck_error(now)
        if self.load_error is not None:
            raise NotReadyError(f"model {self.name!r} failed to load; see the server log")
        raise NotReadyError(f"model {self.name!r} is still loading")

    def _run(self, worker_index: int) -> None:
        log_model(self.name)  # this thread's log lines name the model
        if not self._load(worker_index):
            return
        handler, namespace = self.handler, self.namespace
        assert handler is not None and namespace is not None
        settings = self.settings
        admission = self._queue.admission
        admission.delay, admission.max_batch = settings.max_batch_delay, settings.max_batch_size
        self._queue.max_requests = settings.queue_size  # the handler's own settings are known
        closed = False
        while not closed or self._streams:
            wait = None if not self._streams else 0.0 if self._advanceable() else THROTTLED_POLL
            batch = (
                self._queue.gather(settings.max_batch_size, settings.max_batch_delay, wait)
                if not closed
                else []
            )
            if batch is None:  # closed: the streams open finish first
                closed = True
                continue
            if batch:
                self.observer.queue_depth(self.name, self._queue.qsize())
                self.observer.expected_wait(self.name, self._queue.expected_wait())
                self._run_batch(handler, batch)
                del batch  # not kept while the next is awaited: a large body would stay held
            if self._streams:
                started = time.monotonic()
                self._advance()
                admission.round_done(time.monotonic() - started, len(self._streams))
                if closed and not self._advanceable():
                    time.sleep(THROTTLED_POLL)
            namespace.settle()

    def _run_batch(self, handler: Handler, batch: list[Pending]) -> None:
        try:
            self._execute(handler, batch)
        except BaseException as exc:  # the thread must outlive anything a batch does
            logger.error("batch of %d failed: %s", len(batch), exc, exc_info=exc)
            for pending in batch:
                if pending.channel is not None:
                    pending.channel.fail(ModelError("the batch failed"))
                else:
                    pending.finish(None, ModelError("the batch failed"))

    def _advanceable(self) -> bool:
        """Whether an open stream can take a piece now (its client is not too far behind)."""
        return any(
            stream.channel is None or stream.channel.left or not stream.channel.full()
            for stream in self._streams
        )

    def _advance(self) -> None:
        """One piece from each open stream whose client keeps up; streams whose client left
        are closed (GeneratorExit in a generator)."""
        for stream in list(self._streams):
            channel = stream.channel
            if (channel is not None and channel.left) or stream.pending.abandoned:
                self._streams.remove(stream)
                self._close_stream(stream)
            elif (channel is None or not channel.full()) and not self._next_piece(stream):
                self._streams.remove(stream)

    def _next_piece(self, stream: PulledStream) -> bool:
        """Take one piece from ``stream``; False when it ended (or failed)."""
        self.busy_since = time.monotonic()
        try:
            piece = next(stream.pieces)
        except StopIteration:
            if stream.channel is None:  # no piece at all: an empty answer
                stream.pending.finish(replace(stream.answer, body=b"", pieces=None), None)
            else:
                stream.channel.end()
            return False
        except BaseException as exc:  # the thread must outlive anything a piece does
            error = exc if isinstance(exc, Exception) else ModelError(f"{type(exc).__name__}")
            if error is not exc:
                error.__cause__ = exc
            self._log_failure(stream.pending.request, error)
            if stream.channel is None:
                stream.pending.finish(None, error)  # before the first piece: an error answer
            else:
                stream.channel.fail(error)
            return False
        finally:
            self.busy_since = None
        first = stream.channel is None
        if not stream.pending.stream(stream.answer, piece):  # nobody is waiting for it
            self._close_stream(stream)
            return False
        stream.channel = stream.pending.channel
        if first:
            time.sleep(0)  # let the request thread take the GIL and write the first piece now
        return True

    def _close_stream(self, stream: PulledStream) -> None:
        self.busy_since = time.monotonic()
        try:
            stream.close()
        except BaseException as exc:  # the thread must outlive what user code does on close
            logger.warning("request %s: closing its stream failed: %s",
                           stream.pending.request.request_id, exc, exc_info=exc)  # fmt: skip
        finally:
            self.busy_since = None

    def _load(self, worker_index: int) -> bool:
        if not LOAD_LOCK.acquire(timeout=self.config.startup_timeout):
            self._fail(TimeoutError("another model's load in this worker did not finish in time"))
            return False
        try:
            return self._load_locked(worker_index)
        finally:
            LOAD_LOCK.release()

    def _load_locked(self, worker_index: int) -> bool:
        started = time.monotonic()
        gpu_id = gpu_for_worker(worker_index)
        configure_torch(self.config.torch_threads, self.config.allow_pickled_models)
        before = rss_bytes()  # torch is imported by now: its own memory is nobody's model
        try:
            opened = self._opener()
            self.source, self.namespace = opened.handler.source, opened.namespace
            opened.namespace.bind_thread()
            handler = opened.handler
            self.settings = self.registered.settings(
                self.config, handler.options, handler.max_batch_size
            )
            handler.load(
                LoadContext(
                    model_dir=opened.directory.root,
                    manifest=opened.directory.manifest.raw,
                    gpu_id=gpu_id,
                    batch_size=self.settings.max_batch_size,
                    codecs=self.codecs,
                    allow_pickled_models=self.config.allow_pickled_models,
                    options=handler.options,
                )
            )
            opened.namespace.settle()
        except BaseException as exc:  # a load failure of any kind must be reported, not lost
            self._fail(exc)
            return False
        if self.load_error is not None:  # the watchdog gave up on it meanwhile
            return False
        self.handler = handler
        self.memory = max(0, rss_bytes() - before)
        self._report_loaded(handler, time.monotonic() - started, gpu_id)
        return True

    def _report_loaded(self, handler: Handler, elapsed: float, gpu_id: int | None) -> None:
        self.observer.model_loaded(self.name, elapsed, self.memory)
        logger.info(
            "model %s loaded from %s in %.2f s, +%.1f MiB "
            "(device %s, batch size %d, delay %.1f ms)",
            self.name,
            handler.source,
            elapsed,
            self.memory / 2**20,
            "cpu" if gpu_id is None else f"cuda:{gpu_id}",
            self.settings.max_batch_size,
            self.settings.max_batch_delay * 1000,
        )
        self.last_used = time.monotonic()
        self._stop_watchdog()
        self._ready.set()
        if self._on_loaded is not None:
            self._on_loaded(self)

    def _fail(self, exc: BaseException) -> None:
        if self.load_error is not None:
            return
        self._stop_watchdog()
        self.load_error = exc
        self.observer.model_load_failed(self.name)
        if self._on_failed is not None:
            self._on_failed(self, exc)  # it logs the failure, as often as it sees fit
        else:
            self.log_failure(logging.ERROR)

    def log_failure(self, level: int) -> None:
        """Log why the model failed to load, with the traceback."""
        exc = self.load_error
        logger.log(level, "model %s (%s) failed to load: %s", self.name, self.source, exc,
                   exc_info=exc)  # fmt: skip

    def _execute(self, handler: Handler, batch: list[Pending]) -> None:
        admission = self._queue.admission
        started = time.monotonic()
        admission.batch_started(started, len(batch))
        results = self._call_handler(handler, batch)
        elapsed = time.monotonic() - started
        admission.batch_done(len(batch), elapsed)
        self.observer.batch_done(self.name, len(batch), elapsed)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._log_failure(pending.request, result)
                if pending.channel is not None:  # its pushed stream fails
                    pending.channel.fail(result)
                else:
                    pending.finish(None, result)
            elif pending.channel is not None:  # the last piece of a pushed stream
                if result.body:
                    pending.channel.put(result.body_bytes())
                pending.channel.end()
            elif result.pieces is not None:
                if result.body:  # the stream's first piece
                    pending.stream(result, result.body_bytes())
                self._streams.append(PulledStream(pending, result, result.pieces, pending.channel))
            else:
                pending.finish(result, None)

    def _call_handler(self, handler: Handler, batch: Sequence[Pending]) -> list[Result]:
        requests = [pending.request for pending in batch]
        try:
            self.busy_since = time.monotonic()
            try:
                results = list(handler.handle(requests))
            finally:
                self.busy_since = None
            if len(results) != len(requests):
                raise ModelError(
                    f"the handler returned {len(results)} results for {len(requests)} requests"
                )
            return results
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            # One bad input must fail only its own request: retry each alone (not those whose
            # stream has started: their clients have pieces already).
            logger.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            return [
                exc if pending.channel is not None else self._call_handler(handler, [pending])[0]
                for pending in batch
            ]

    def _log_failure(self, request: InferenceRequest, exc: BaseException) -> None:
        cause = exc.__cause__ or exc
        if isinstance(exc, ServingError) and exc.status_code < 500:
            logger.info("request %s rejected: %s", request.request_id, exc)
        else:
            logger.error("request %s failed: %s", request.request_id, exc, exc_info=cause)


_REFUSALS = {
    WAIT: "the model's queue holds more than it can answer within the timeout; retry later",
    MEMORY: "the model's queue is at its bound (BYOSERVE_QUEUE_SIZE, BYOSERVE_QUEUE_MAX_BYTES); "
    "retry later",
}


def _released() -> OpenedModel:
    raise RuntimeError("this model was unloaded")
