"""Events the runtime reports; the metrics module subscribes to them."""

from __future__ import annotations


class Observer:
    """Receives runtime events. The base class ignores them; subclasses record metrics."""

    def model_loaded(self, seconds: float) -> None:
        """The handler finished loading in this worker."""

    def batch_done(self, size: int, seconds: float) -> None:
        """One handler call finished for a batch of ``size`` requests."""

    def queue_depth(self, depth: int) -> None:
        """Requests waiting in this worker's queue after an enqueue."""

    def rejected(self) -> None:
        """A request was turned away because the queue was full."""

    def request_done(self, route: str, status: int, seconds: float, error: str | None) -> None:
        """One HTTP request finished."""
