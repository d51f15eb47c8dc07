"""The body of a streamed answer, as the HTTP engine writes it: chunked, a piece at a time.

The request pipeline (serve/http/invocation.py) returns a :class:`StreamBody` when the model's
answer streams. The engine iterates it: the first piece (it came with the status and headers),
then each next one as the model makes it, each within the model's timeout
(serve/runtime/streams.py). How it ends:

- *completed*: the body's terminating chunk is written;
- *failed* (the handler raised, or a piece did not come in time): the failure is logged once, and
  the body ends without its terminating chunk (:class:`StreamAbortedError`), so the client can
  tell; a :class:`Framing` may instead write a last piece that says so (SageMaker's
  ``ModelStreamError`` event) and end the body normally;
- *client gone*: the engine stops iterating (a write failed) and closes the body, or the engine's
  ``client_left`` check finds the connection closed before a piece is written; the stream's
  producer is told to stop (a generator is closed).

Each stream's outcome is one log line and the stream metrics (serve/observe/).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from serve.errors import InferenceTimeoutError, ShuttingDownError
from serve.observe.observer import Observer

if TYPE_CHECKING:
    from serve.http.invocation import BodyRules

logger = logging.getLogger("serve.http.app")

Outcome = Literal["completed", "failed", "client_gone"]
ClientLeft = Callable[[dict[str, Any]], bool]


class StreamAbortedError(ConnectionResetError):
    """Raised to the HTTP engine to end a failed stream's body without its terminating chunk.

    A connection reset to the engine: gunicorn closes the connection quietly, granian's log
    line for it is filtered out (serve/process/granian_engine.py); the failure itself was logged
    once already.
    """

    def __init__(self, request_id: str) -> None:
        super().__init__(errno.ECONNRESET, f"stream of request {request_id} failed")


class Framing(Protocol):
    """How pieces are written on the wire (plain, or SageMaker's event stream)."""

    def piece(self, data: bytes) -> bytes:
        """One piece as written."""

    def failure(self, error: BaseException) -> bytes | None:
        """What to write when the stream fails after its first piece; None: end the body
        without its terminating chunk."""


class PlainFraming:
    """Pieces as the handler made them; a failure cuts the body short."""

    def piece(self, data: bytes) -> bytes:
        return data

    def failure(self, error: BaseException) -> bytes | None:
        return None


PLAIN = PlainFraming()


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Who the stream is for: the model, the request id, when the request arrived."""

    model: str
    request_id: str
    started: float


class StreamBody:
    """The WSGI iterable of a streamed answer (see the module's docstring).

    Args:
        first: the first piece.
        rest: the pieces after it (a channel: each waits at most the model's timeout).
        engine: the engine's rules (its check that the client closed its connection, and how
            long a failed stream waits before it ends).
        environ: the request's WSGI environ (for that check).

    :meth:`start` gives it the rest before the engine iterates it.
    """

    def __init__(
        self,
        first: bytes,
        rest: Iterator[bytes],
        engine: BodyRules | None = None,
        environ: dict[str, Any] | None = None,
    ) -> None:
        self._first: bytes | None = first
        self._rest = rest
        self._client_left = engine.client_left if engine is not None else None
        self._abort_grace = engine.abort_grace if engine is not None else 0.0
        self._environ = environ or {}
        self._info = StreamInfo("", "", time.monotonic())
        self._observer = Observer()
        self._framing: Framing = PLAIN
        self._pieces = 0
        self._bytes = 0
        self._first_at: float | None = None
        self._outcome: Outcome | None = None
        self._failing = False

    def start(self, info: StreamInfo, observer: Observer, framing: Framing = PLAIN) -> None:
        """Whose stream it is (for the log and the metrics: ``observer``), and how its pieces
        are written; counts it open."""
        self._info, self._observer, self._framing = info, observer, framing
        observer.stream_opened(info.model)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._outcome is not None:
            raise StopIteration
        if self._failing:  # the framing's failure message went out: now end
            self._finish("failed")
            raise StopIteration
        if self._first is not None:
            data, self._first = self._first, None
        else:
            try:
                data = next(self._rest)
            except StopIteration:
                self._finish("completed")
                raise
            except Exception as exc:
                return self._fail(exc)
        if self._client_left is not None and self._client_left(self._environ):
            self._finish("client_gone")
            raise StreamAbortedError(self._info.request_id)
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._pieces += 1
        self._bytes += len(data)
        return self._framing.piece(data)

    def _fail(self, exc: Exception) -> bytes:
        """The stream failed after its first piece: the framing's last word, or an abort."""
        self._log_failure(exc)
        last = self._framing.failure(exc)
        if last is None:
            self._finish("failed")
            if self._abort_grace:
                time.sleep(self._abort_grace)  # the last piece is written before the abort
            raise StreamAbortedError(self._info.request_id) from exc
        self._failing = True
        return last

    def _log_failure(self, exc: Exception) -> None:
        """A late piece is logged here; a handler's failure was logged by the runtime, with its
        traceback, where it happened."""
        if isinstance(exc, InferenceTimeoutError | ShuttingDownError):
            logger.warning("request %s: stream failed after %d pieces: %s",
                           self._info.request_id, self._pieces, exc)  # fmt: skip

    def close(self) -> None:
        """The engine is done with the body: a stream not finished lost its client."""
        if self._outcome is None:
            self._finish("client_gone")

    def _finish(self, outcome: Outcome) -> None:
        if self._outcome is not None:
            return
        self._outcome = outcome
        leave = getattr(self._rest, "leave", None)
        if outcome == "client_gone" and leave is not None:
            leave()
        now = time.monotonic()
        info = self._info
        seconds = now - info.started
        first = None if self._first_at is None else self._first_at - info.started
        self._observer.stream_done(info.model, outcome, first, self._pieces, self._bytes, seconds)
        logger.info(
            "request %s: stream %s: %d pieces, %d bytes in %.3f s%s",
            info.request_id,
            outcome.replace("_", " "),
            self._pieces,
            self._bytes,
            seconds,
            "" if first is None else f" (first piece after {first * 1000:.1f} ms)",
        )
