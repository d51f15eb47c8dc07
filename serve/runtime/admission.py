"""Whether a request that arrives now can be answered within its timeout: admission by the wait
it can expect, for one model in one worker.

The inference thread measures every batch it runs (:meth:`Admission.batch_done`): its wall time
and how many requests it carried, each as an exponentially weighted mean, and, while streams are
open, how long one round of their pieces takes between batches (:meth:`Admission.round_done`).
From them comes the time of a request in a batch (mean time / mean size), and so of a full batch
(the batch size times that, plus a round of pieces).

A request that finds ``depth`` requests queued ahead of it waits for the rest of the batch
running now, then for the ``depth // batch size`` full batches ahead of it; then its own batch
runs, counted as full too: requests admitted after it may join it and make it longer, so every
member's estimate is that of the full batch. It is queued while that wait plus its own batch
(and the batch delay) fits its timeout, less a tenth kept as slack for the estimate's error (the
last request admitted is answered a tenth before its timeout, not at it), and refused beyond it,
told to come back once the excess has drained. Before the first batch is measured there is
nothing to go by: every request is queued. A model with nothing queued, forming or running takes
the request too, whatever its means say: it is served at once, as soon as anyone could serve it,
and its batch is measured (means taken under a heavier load, or on a busier machine, would
otherwise refuse every request and never be measured again).

The arithmetic is a handful of float operations on plain attributes: it runs under the queue's
lock on every request, and the inference thread writes the measures without a lock (a reader
that sees one measure a batch old is as right as an estimate can be).
"""

from __future__ import annotations

from dataclasses import dataclass

WEIGHT = 0.2  # of the newest measure in the running means: a few batches follow a change of load
SLACK = 0.1  # of the timeout, kept for the estimate's error
_FIT = 1.0 + SLACK


@dataclass(slots=True)
class Admission:
    """The measured service of one model in one worker, and the admission rule drawn from it.

    Attributes:
        max_batch: the most requests a batch carries (the model's batch size).
        delay: the batch delay (seconds) a request may wait for its batch to fill.
        batch_seconds: the mean wall time of a batch; 0 until one is measured.
        batch_size: the mean requests per batch.
        round_seconds: the mean time of one round of the open streams' pieces; 0 without streams.
        running_since: when the batch now running began (monotonic), or None.
        running_size: how many requests the batch now running carries.
        forming: a batch has its first request and waits (the batch delay) for more.
    """

    max_batch: int = 1
    delay: float = 0.0
    batch_seconds: float = 0.0
    batch_size: float = 1.0
    round_seconds: float = 0.0
    running_since: float | None = None
    running_size: int = 0
    forming: bool = False

    def batch_started(self, now: float, size: int) -> None:
        self.running_since, self.running_size, self.forming = now, size, False

    def batch_done(self, size: int, seconds: float) -> None:
        """A batch of ``size`` requests took ``seconds``; the first measure sets the means."""
        self.running_since = None
        if self.batch_seconds == 0.0:
            self.batch_seconds, self.batch_size = max(seconds, 1e-9), float(max(1, size))
            return
        self.batch_seconds += WEIGHT * (seconds - self.batch_seconds)
        self.batch_size += WEIGHT * (max(1, size) - self.batch_size)

    def round_done(self, seconds: float, streams: int) -> None:
        """One round of pieces took ``seconds``; with no stream left open it costs nothing."""
        if streams == 0:
            self.round_seconds = 0.0
        else:
            self.round_seconds += WEIGHT * (seconds - self.round_seconds)

    @property
    def measured(self) -> bool:
        return self.batch_seconds > 0.0

    def full_batch(self) -> float:
        """Seconds of a full batch (and a round of pieces)."""
        return self.max_batch * self.batch_seconds / self.batch_size + self.round_seconds

    def wait(self, depth: int, now: float) -> float:
        """Seconds a request arriving at ``now`` behind ``depth`` queued requests can expect to
        wait before its own batch starts (0 before the first measure)."""
        return self._left(now) + depth // self.max_batch * self.full_batch()

    def _left(self, now: float) -> float:
        running = self.running_since
        if running is None:
            return 0.0
        per_request = self.batch_seconds / self.batch_size
        return max(0.0, running + self.running_size * per_request - now)

    def excess(self, depth: int, now: float, timeout: float) -> float:
        """How far the expected wait plus the request's own batch overruns ``timeout`` less its
        slack (seconds; 0 or less: it fits). Unmeasured, or with the model idle: 0, it fits."""
        # written out (no calls): this runs under the queue's lock on every request
        seconds, running = self.batch_seconds, self.running_since
        if seconds == 0.0 or (depth == 0 and running is None and not self.forming):
            return 0.0
        per_request = seconds / self.batch_size
        size = self.max_batch
        left = 0.0 if running is None else max(0.0, running + self.running_size * per_request - now)
        full = size * per_request + self.round_seconds
        return left + (depth // size + 1) * full + self.delay - timeout / _FIT

    def drain(self, requests: int) -> float:
        """Seconds until ``requests`` queued requests have left the queue (at least one batch;
        one second when nothing is measured yet)."""
        if self.batch_seconds == 0.0:
            return 1.0
        full = self.full_batch()
        return max(full, requests / self.max_batch * full)
