"""How the pieces of a streamed answer travel from the inference thread to the request thread.

A :class:`Channel` joins the two: the inference thread puts pieces (a handler pushing them from
``handle``, or the runtime pulling them from the iterator a handler returned, see
:class:`PulledStream`), the request thread takes them as the HTTP engine writes them, each within
the model's timeout. The request thread marks the channel left when its client is gone or a piece
did not come in time; the inference thread then stops making pieces for it (a pulled generator is
closed, so user code sees ``GeneratorExit``).

A channel holds at most :data:`AHEAD` pieces the client has not taken yet: a pulled stream is not
advanced beyond that, so a slow client holds back its own stream, not the worker's memory; taking
a piece from a full channel wakes the inference thread (``on_room``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from serve.errors import InferenceTimeoutError

if TYPE_CHECKING:
    from serve.contract import InferenceResponse
    from serve.runtime.batching import Pending

AHEAD = 4
_END = object()


class Channel:
    """One streamed answer, between the inference thread (:meth:`put`, :meth:`end`,
    :meth:`fail`) and the request thread (iteration).

    Args:
        timeout: the longest wait for each piece (SAGEMAKER_MODEL_SERVER_TIMEOUT).
        on_closed: called once when the request thread is done with it (ended, failed, left).
        on_room: called when the request thread takes a piece from a full channel.
        on_put: called when the inference thread puts a piece.
    """

    def __init__(
        self,
        timeout: float,
        on_closed: Callable[[], None] | None = None,
        on_room: Callable[[], None] | None = None,
        on_put: Callable[[], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self.left = False
        self._on_room = on_room
        self._on_put = on_put
        self._queue: queue.SimpleQueue[bytes | BaseException | object] = queue.SimpleQueue()
        self._on_closed = on_closed
        self._closed = False
        self._lock = threading.Lock()

    # the inference thread's side
    def put(self, piece: bytes) -> None:
        if self._on_put is not None:
            self._on_put()
        if not self.left:
            self._queue.put(piece)

    def end(self) -> None:
        self._queue.put(_END)

    def fail(self, error: BaseException) -> None:
        self._queue.put(error)

    def full(self) -> bool:
        """Whether the client is :data:`AHEAD` pieces behind."""
        return self._queue.qsize() >= AHEAD

    # the request thread's side
    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        """The next piece, within the timeout.

        Raises:
            StopIteration: the stream ended.
            InferenceTimeoutError: no piece came within the timeout (the channel is left).
            BaseException: what the stream failed with.
        """
        try:
            item = self._queue.get(timeout=self.timeout)
        except queue.Empty:
            self.leave()
            raise InferenceTimeoutError(
                f"no piece within {self.timeout:g} s "
                "(raise SAGEMAKER_MODEL_SERVER_TIMEOUT for slower models)"
            ) from None
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        assert isinstance(item, bytes)
        # asked after the take: the channel may have filled while this thread waited in get()
        if self._on_room is not None and self._queue.qsize() >= AHEAD - 1:
            self._on_room()
        return item

    def leave_with(self, error: BaseException) -> None:
        """End the stream with ``error`` from outside its producer (the server is stopping):
        the request thread takes it next; the producer stops."""
        self.left = True
        self._queue.put(error)

    def leave(self) -> None:
        """The request thread gives up on the stream (its client left, or a piece was late)."""
        self.left = True
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the request thread is done with it."""
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._on_closed is not None:
            self._on_closed()


@dataclass(slots=True)
class PulledStream:
    """A stream the inference thread advances a piece at a time from the iterator a handler
    returned, in turn with the other open streams.

    Attributes:
        pending: the request.
        answer: the handler's response (its status and headers go out with the first piece).
        pieces: the handler's iterator.
        channel: where its pieces go; None until the first piece (the answer's status and
            headers wait for it, and a failure before it is an ordinary error answer).
    """

    pending: Pending
    answer: InferenceResponse
    pieces: Iterator[bytes]
    channel: Channel | None = None

    def close(self) -> None:
        """Stop the handler's iterator (a generator sees GeneratorExit)."""
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()
