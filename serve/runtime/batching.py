"""The requests waiting for one model, and how its inference thread gathers them into batches.

Request threads :meth:`BatchQueue.put` a request and wait on its lock; the inference thread
:meth:`BatchQueue.gather`\\ s the first waiting request, then more until the batch is full or
``max_delay`` has passed since that first request arrived. The hand-offs use the C-level
``SimpleQueue`` and a lock per request, not ``queue.Queue`` and futures: on a model that answers
in under a millisecond, their Python-level locking is a visible share of each request.

:meth:`BatchQueue.put` admits a request while the wait it can expect fits its timeout
(serve/runtime/admission.py), under a hard bound in requests and bytes that keeps a burst from
exhausting the worker's memory and request threads.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from serve.contract import InferenceRequest, InferenceResponse
from serve.runtime.admission import Admission
from serve.runtime.streams import Channel

_STOP = object()
_WAKE = object()  # a stream's client took a piece: its stream may go on

# States of a pending request; changed only under the queue's state lock.
_WAITING, _RUNNING, _CANCELLED = 0, 1, 2


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


# finish() and abandon() decide together whether an answer is taken: a lock shared by every
# pending request (held for a few instructions)
_ANSWERED = threading.Lock()


def _no_channel() -> Channel:
    raise RuntimeError("this request cannot stream")


@dataclass(slots=True)
class Pending:
    """One queued request; ``done`` is released once ``response`` or ``error`` is set.

    It is also the request's :class:`~serve.contract.Sink`: a handler that pushes pieces opens
    ``channel`` (with ``open_channel``) on the first, and the answer goes out then.
    """

    request: InferenceRequest
    arrived: float
    state: int = _WAITING
    response: InferenceResponse | None = None
    error: BaseException | None = None
    done: threading.Lock = field(default_factory=_held_lock)
    channel: Channel | None = None
    open_channel: Callable[[], Channel] = _no_channel
    abandoned: bool = False

    def finish(self, response: InferenceResponse | None, error: BaseException | None) -> bool:
        """Hand the answer to the waiting request thread (the first answer only); False when
        none is waiting any more (:meth:`abandon`)."""
        with _ANSWERED:
            if self.abandoned or self.response is not None or self.error is not None:
                return False
            self.response, self.error = response, error
        self.done.release()
        return True

    def abandon(self) -> bool:
        """The request thread stops waiting (its timeout passed); False when the answer came
        first (it is there to take)."""
        with _ANSWERED:
            if self.response is not None or self.error is not None:
                return False
            self.abandoned = True
            return True

    @property
    def started(self) -> bool:
        return self.channel is not None

    def send(self, piece: InferenceResponse) -> None:
        """A pushed piece: the first is the answer (its status and headers), with the channel
        as the rest; later ones go down the channel."""
        self.stream(piece, piece.body_bytes())

    def stream(self, answer: InferenceResponse, piece: bytes) -> bool:
        """Send ``piece``: as the start of ``answer`` when the stream has not started. False
        when nobody takes it (the request gave up before the first piece, or its client left):
        the producer stops."""
        if self.channel is not None:
            self.channel.put(piece)
            return not self.channel.left
        if self.abandoned:
            return False
        channel = self.open_channel()
        if not self.finish(dataclasses.replace(answer, body=piece, pieces=channel), None):
            channel.leave()  # given up on meanwhile
            return False
        self.channel = channel
        return True


WAIT = "wait"  # refused: the wait ahead does not fit the request's timeout
MEMORY = "memory"  # refused: the hard bound in requests or bytes is reached


class QueueFullError(Exception):
    """The queue refuses a request.

    Attributes:
        cause: :data:`WAIT` or :data:`MEMORY`.
        retry_after: seconds after which the request would be admitted, the load being as now.
    """

    def __init__(self, cause: str, retry_after: float) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class QueueClosedError(Exception):
    """The model is being unloaded: the queue takes nothing more."""


class BatchQueue:
    """The queue of pending requests for one model in one worker, admitting by expected wait.

    Args:
        max_requests: the most requests that may wait or stream at once (beyond it,
            :meth:`put` refuses, whatever the wait).
        max_bytes: the most request body bytes that may wait at once (0: no bound).
    """

    def __init__(self, max_requests: int, max_bytes: int = 0) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.admission = Admission()  # measured by the inference thread
        self._queue: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        self._state = threading.Lock()  # guards the bounds, closing, and each request's state
        self._closed = False
        self._wake_queued = False  # at most one wake marker waits in the queue
        self._bytes = 0  # the bodies of the requests queued

    def qsize(self) -> int:
        return self._queue.qsize()

    def put(
        self,
        request: InferenceRequest,
        open_channel: Callable[[], Channel] = _no_channel,
        streaming: int = 0,
        timeout: float = math.inf,
    ) -> tuple[Pending, int]:
        """Queue a request (as its own sink, streams opened with ``open_channel``) if it can be
        answered within ``timeout`` seconds (by default it always can); returns it with the depth
        it found.

        Raises:
            QueueFullError: the wait it can expect does not fit ``timeout`` (:data:`WAIT`), or
                ``max_requests`` requests are waiting or streaming (``streaming``: the streams
                open) already, or its body would take the bytes waiting past ``max_bytes``
                (:data:`MEMORY`).
            QueueClosedError: :meth:`close` was called.
        """
        now = time.monotonic()
        size = len(request.body)
        pending = Pending(request, now, open_channel=open_channel)
        request.sink = pending
        admission = self.admission
        with self._state:
            if self._closed:
                raise QueueClosedError
            depth = self._queue.qsize() - self._wake_queued  # the marker is no request
            over = depth + streaming + 1 - self.max_requests
            if over > 0 or (self.max_bytes and self._bytes + size > self.max_bytes):
                raise QueueFullError(MEMORY, admission.drain(max(1, over)))
            excess = admission.excess(depth, now, timeout)
            if excess > 0.0:
                raise QueueFullError(WAIT, excess)
            self._bytes += size
            self._queue.put(pending)
        return pending, depth

    def expected_wait(self) -> float:
        """Seconds a request arriving now can expect to wait before its batch starts."""
        return self.admission.wait(self.qsize(), time.monotonic())

    def cancel(self, pending: Pending) -> None:
        """Its caller gave up: if it has not started, the inference thread skips it."""
        with self._state:
            if pending.state == _WAITING:
                pending.state = _CANCELLED

    def shed(self, error: Callable[[], BaseException]) -> int:
        """Answer every request still waiting with ``error()`` now, rather than let them wait
        out their timeout behind a handler call that overran its own (serve/runtime/health.py);
        returns how many. Safe while the inference thread gathers: each request is taken by
        one of the two."""
        shed = 0
        markers: list[object] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, Pending):
                markers.append(item)  # a wake or the stop: kept for the inference thread
            elif self._claim(item) and item.finish(None, error()):
                shed += 1
        for marker in markers:
            self._queue.put(marker)
        return shed

    def close(self) -> None:
        """Take nothing more; :meth:`gather` returns None once the queue is drained."""
        with self._state:
            self._closed = True
        self._queue.put(_STOP)  # wakes an idle inference thread

    def wake(self) -> None:
        """End a :meth:`gather` that is waiting with a ``wait``, as a request would."""
        with self._state:
            if self._wake_queued:
                return
            self._wake_queued = True
        self._queue.put(_WAKE)

    def gather(
        self, max_size: int, max_delay: float, wait: float | None = None
    ) -> list[Pending] | None:
        """Wait for a first request (at most ``wait`` seconds; empty when none came), then
        gather more until ``max_size`` or ``max_delay`` seconds after the first one arrived (with
        a ``wait``, only those already queued); None once closed and drained."""
        batch: list[Pending] = []
        while not batch:
            if self._closed and self._queue.empty():
                return None
            try:
                item = self._queue.get(timeout=wait) if wait else self._queue.get(wait is None)
            except queue.Empty:
                return batch
            if item is _WAKE:
                self._wake_queued = False
                if wait is not None:
                    return batch
            if isinstance(item, Pending) and self._claim(item):
                batch.append(item)
        self.admission.forming = True  # not idle while it waits for more
        if wait is not None:
            max_delay = 0.0  # streams are waiting for their next pieces
        deadline = batch[0].arrived + max_delay
        while len(batch) < max_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _WAKE:
                self._wake_queued = False
            if not isinstance(item, Pending):  # closing, or a stream's client took a piece
                break
            if self._claim(item):
                batch.append(item)
        return batch

    def _claim(self, pending: Pending) -> bool:
        """Mark a queued request as running, unless its caller has given up on it."""
        with self._state:
            self._bytes -= len(pending.request.body)  # out of the queue either way
            if pending.state != _WAITING:
                return False
            pending.state = _RUNNING
            return True
