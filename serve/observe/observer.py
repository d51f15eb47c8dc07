"""Events the runtime and the app report; the metrics module subscribes to them."""

from __future__ import annotations

from collections.abc import Callable


class Observer:
    """Receives runtime events. The base class ignores them; subclasses record metrics.

    ``model`` is the model's name; requests that reach no model (``/ping``, a 404) report "".
    """

    def model_loaded(self, model: str, seconds: float, memory: int) -> None:
        """A model finished loading in this worker, adding ``memory`` bytes to its RSS."""

    def model_load_failed(self, model: str) -> None:
        """A model failed to load in this worker."""

    def model_unloaded(self, model: str, seconds: float, memory: int) -> None:
        """A model was unloaded from this worker, which handed ``memory`` bytes back."""

    def worker_ready(self) -> None:
        """This worker has loaded the models it started with and takes requests."""

    def batch_done(self, model: str, size: int, seconds: float) -> None:
        """One handler call finished for a batch of ``size`` requests."""

    def queue_depth(self, model: str, depth: int) -> None:
        """Requests waiting in this worker's queue for the model, after an enqueue or dequeue."""

    def rejected(self, model: str, cause: str) -> None:
        """A request was turned away with 503: ``cause`` ``wait`` (the wait ahead did not fit its
        timeout) or ``memory`` (the queue's hard bound was reached)."""

    def expected_wait(self, model: str, seconds: float) -> None:
        """The wait a request arriving now can expect in this worker's queue for the model
        (reported by the inference thread as each batch starts)."""

    def request_done(
        self, route: str, status: int, seconds: float, error: str | None, model: str = ""
    ) -> None:
        """One HTTP request finished."""

    def stream_opened(self, model: str) -> None:
        """A streamed answer started (its first piece is about to be written)."""

    def stream_done(
        self,
        model: str,
        outcome: str,
        first_piece: float | None,
        pieces: int,
        size: int,
        seconds: float,
    ) -> None:
        """A streamed answer ended (``outcome``: completed, failed or client_gone), after
        ``pieces`` pieces of ``size`` bytes in all, ``seconds`` after its request arrived;
        ``first_piece``: when its first piece was written, in seconds after the request
        arrived."""

    def track_connections(self, held: Callable[[], list[tuple[int, int]]]) -> None:
        """From now on ``held()`` says how many client connections each ready worker holds,
        as ``(slot, connections)`` pairs (called in the master, before the workers start)."""

    def worker_exited(self, pid: int) -> None:
        """A worker process ended (called in the master); its live gauges no longer count."""

    def close(self) -> None:
        """The server is shutting down (called in the master)."""

    def exposition(self) -> tuple[bytes, str] | None:
        """The current metrics as ``(body, content type)``, or None when none are kept."""
        return None
