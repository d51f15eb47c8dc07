"""The requests waiting for one model, and how its inference thread gathers them into batches.

Request threads :meth:`BatchQueue.put` a request and wait on its lock; the inference thread
:meth:`BatchQueue.gather`\\ s the first waiting request, then more until the batch is full or
``max_delay`` has passed since that first request arrived. The hand-offs use the C-level
``SimpleQueue`` and a lock per request, not ``queue.Queue`` and futures: on a model that answers
in under a millisecond, their Python-level locking is a visible share of each request.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from serve.contract import InferenceRequest, InferenceResponse

_STOP = object()

# States of a pending request; changed only under the queue's state lock.
_WAITING, _RUNNING, _CANCELLED = 0, 1, 2


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(slots=True)
class Pending:
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


class QueueFullError(Exception):
    """The queue holds its capacity already."""


class QueueClosedError(Exception):
    """The model is being unloaded: the queue takes nothing more."""


class BatchQueue:
    """A bounded queue of pending requests for one model in one worker.

    Args:
        capacity: the most requests that may wait (beyond it, :meth:`put` refuses).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._queue: queue.SimpleQueue[Pending | object] = queue.SimpleQueue()
        self._state = threading.Lock()  # guards the bound, closing, and each request's state
        self._closed = False

    def qsize(self) -> int:
        return self._queue.qsize()

    def put(self, request: InferenceRequest) -> tuple[Pending, int]:
        """Queue a request; returns it with the depth it found.

        Raises:
            QueueFullError: ``capacity`` requests are waiting already.
            QueueClosedError: :meth:`close` was called.
        """
        pending = Pending(request, time.monotonic())
        with self._state:
            if self._closed:
                raise QueueClosedError
            depth = self._queue.qsize()
            if depth >= self.capacity:
                raise QueueFullError
            self._queue.put(pending)
        return pending, depth

    def cancel(self, pending: Pending) -> None:
        """Its caller gave up: if it has not started, the inference thread skips it."""
        with self._state:
            if pending.state == _WAITING:
                pending.state = _CANCELLED

    def close(self) -> None:
        """Take nothing more; :meth:`gather` returns None once the queue is drained."""
        with self._state:
            self._closed = True
        self._queue.put(_STOP)  # wakes an idle inference thread

    def gather(self, max_size: int, max_delay: float) -> list[Pending] | None:
        """Wait for a first request, then gather more until ``max_size`` or ``max_delay`` seconds
        after the first one arrived; None once closed and drained."""
        batch: list[Pending] = []
        while not batch:
            if self._closed and self._queue.empty():
                return None
            item = self._queue.get()
            if isinstance(item, Pending) and self._claim(item):
                batch.append(item)
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
            if not isinstance(item, Pending):  # closing
                break
            if self._claim(item):
                batch.append(item)
        return batch

    def _claim(self, pending: Pending) -> bool:
        """Mark a queued request as running, unless its caller has given up on it."""
        with self._state:
            if pending.state != _WAITING:
                return False
            pending.state = _RUNNING
            return True
