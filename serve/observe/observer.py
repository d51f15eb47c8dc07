"""Events the runtime and the app report; the metrics module subscribes to them."""

from __future__ import annotations


class Observer:
    """Receives runtime events. The base class ignores them; subclasses record metrics."""

    def model_loaded(self, seconds: float) -> None:
        """The handler finished loading in this worker."""

    def batch_done(self, size: int, seconds: float) -> None:
        """One handler call finished for a batch of ``size`` requests."""

    def queue_depth(self, depth: int) -> None:
        """Requests waiting in this worker's queue, after an enqueue or a dequeue."""

    def rejected(self) -> None:
        """A request was turned away because the queue was full."""

    def request_done(self, route: str, status: int, seconds: float, error: str | None) -> None:
        """One HTTP request finished."""

    def worker_exited(self, pid: int) -> None:
        """A worker process ended (called in the master); its live gauges no longer count."""

    def close(self) -> None:
        """The server is shutting down (called in the master)."""

    def exposition(self) -> tuple[bytes, str] | None:
        """The current metrics as ``(body, content type)``, or None when none are kept."""
        return None
